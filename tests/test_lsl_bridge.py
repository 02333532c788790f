"""The LSL bridge with real liblsl (pylsl's wheel) on this machine: LSL outlets -> bridge -> daemon -> LSL
inlets, decodes equal to those of the ZeroMQ path for the same data."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import numpy as np
import pytest

pylsl = pytest.importorskip("pylsl")
pytest.importorskip("onnxruntime")

from rtdecode.bridge.lsl import BehaviorChannel, LslBridge, LslBridgeConfig  # noqa: E402
from rtdecode.wire.replay import send_paced, session_messages  # noqa: E402
from tests.test_daemon import collect, connected, running_daemon  # noqa: E402

T1 = 2.0  # seconds of the tiny session streamed


def _outlet(name: str, channels: int) -> Any:
    return pylsl.StreamOutlet(pylsl.StreamInfo(name, "rtdecode-test", channels, pylsl.IRREGULAR_RATE, "double64", name))


@pytest.fixture(scope="module")
def lsl_discovery() -> None:
    """LSL finds streams by multicast on the local machine; a host that blocks it cannot run these tests."""
    name = f"probe-{secrets.token_hex(4)}"
    outlet = _outlet(name, 1)
    found = pylsl.resolve_byprop("name", name, timeout=5.0)
    del outlet
    if not found:
        pytest.skip("LSL stream discovery does not work on this host (multicast blocked)")


def test_behavior_channels_parse():
    assert BehaviorChannel.parse("theta=eye:1") == BehaviorChannel("theta", "eye", 1)
    assert BehaviorChannel.parse("speed=wheel") == BehaviorChannel("speed", "wheel", 0)
    with pytest.raises(ValueError, match="NAME=STREAM"):
        BehaviorChannel.parse("speed")


def test_decodes_through_lsl_equal_the_zeromq_path(lsl_discovery, tiny_bundle, tiny_session):
    n = int(round(T1 / 0.05))
    messages = [m for m in session_messages(tiny_session, batch=0.005, behavior=("theta",), t1=T1) if m[1] != "frame"]
    # every window decoded (no skipping ahead): data arrive faster than real time on both paths
    with running_daemon(tiny_bundle, skip_backlog=False) as daemon, connected(daemon) as (prod, sub):
        send_paced(prod, iter(messages), speed=0)
        direct = collect(sub, "decode", lambda out: out[-1]["window"] >= n - 1, timeout=20)
    expected = {d["window"]: d["values"] for d in direct}

    tag = secrets.token_hex(4)
    spikes_out, theta_out = _outlet(f"spikes-{tag}", 2), _outlet(f"eye-{tag}", 1)
    with running_daemon(tiny_bundle, skip_backlog=False) as daemon:
        config = LslBridgeConfig(
            daemon_input=daemon.input_endpoint,
            daemon_output=daemon.output_endpoint,
            bundle=str(tiny_bundle),
            spikes=f"spikes-{tag}",
            behavior=(BehaviorChannel("theta", f"eye-{tag}"),),
            prefix=f"rtd-{tag}",
            resolve_timeout=5.0,
            # session time 0 a minute from now on the LSL clock, so the real-time watermark stays out of the way:
            # the streams' own times close the windows, as they do when data arrive at real time
            origin=pylsl.local_clock() + 60.0,
        )
        bridge = LslBridge(config)
        stop = threading.Event()
        thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert bridge.ready.wait(15), "the bridge did not start"
            (info,) = pylsl.resolve_byprop("name", f"rtd-{tag}-decode", timeout=5.0)
            decodes_in = pylsl.StreamInlet(info)
            decodes_in.open_stream(timeout=5.0)
            time.sleep(0.3)  # let the bridge's inlets connect before data flows
            ids = np.asarray(daemon.bundle.vocab.neuron_ids, np.float64)
            for _, kind, args in messages:  # as fast as possible: the spike watermark closes the windows
                if kind == "behavior":
                    theta_out.push_chunk(args[2].reshape(-1, 1).tolist(), (args[1] + bridge.origin).tolist())
                elif kind == "spikes":
                    times, neurons = args
                    rows = np.column_stack([ids[neurons], times + bridge.origin])
                    spikes_out.push_chunk(rows.tolist(), (times + bridge.origin).tolist())
            # one more sample on each stream, at T1: every stream has now passed the last window's end
            theta_out.push_sample([0.0], T1 + bridge.origin)
            spikes_out.push_sample([ids[0], T1 + bridge.origin], T1 + bridge.origin)
            got: dict[int, list[float]] = {}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(got) < n:
                samples, _ = decodes_in.pull_chunk(timeout=0.2)
                got.update({int(s[0]): s[1:] for s in samples})
        finally:
            stop.set()
            thread.join(5)
    targets = [t.name for t in daemon.bundle.targets]
    assert sorted(got) == sorted(expected) == list(range(n))
    for w, values in got.items():
        np.testing.assert_allclose(values, [expected[w][t] for t in targets], atol=1e-5, err_msg=f"window {w}")
    assert bridge.counters["spikes_in"] == sum(a[0].size for _, k, a in messages if k == "spikes") + 1
    assert bridge.counters["decodes_out"] == n and bridge.input_delays_ms and bridge.output_delays_ms
