"""What the LSL bridge adds to a live decode: a session pushed into LSL outlets at real time, through the bridge
into a daemon, and its decodes read back from the bridge's LSL outlet, all on this machine.

Prints p50 / p99 / p99.9 (ms) of
* input leg: a spike pushed into LSL -> the bridge sends it to the daemon;
* output leg: the daemon publishes a decode -> the bridge pushes it into its LSL outlet;
* end to end: a window's end (pushed in real time) -> its decode read from the LSL outlet by a client;
beside the daemon's own post-close latency of the same windows. The daemon runs in its own process
(`rtdecode serve`); the pusher, the bridge and the reader share this one (the bridge on its own thread), and all
of them share this machine's cores, as in `rtdecode bench serve`.

    python tools/bench_lsl.py --bundle BUNDLE --data SESSION [--seconds 30] [--out bench_lsl.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.bench.model import percentiles
from rtdecode.bridge.lsl import BehaviorChannel, LslBridge, LslBridgeConfig, import_pylsl
from rtdecode.io import load_session
from rtdecode.runtime import Bundle
from rtdecode.wire.client import Subscriber
from rtdecode.wire.replay import session_messages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="session whose spikes and behavior inputs are pushed")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--block", type=float, default=0.001, help="seconds of data per LSL push (acquisition block)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    lsl = import_pylsl()
    session = load_session(a.data)
    bundle = Bundle.load(a.bundle)
    inputs = [b.name for b in bundle.behavior_inputs]
    ports = [_free_port(), _free_port()]
    endpoints = [f"tcp://127.0.0.1:{port}" for port in ports]
    tag = secrets.token_hex(4)

    def outlet(name: str, channels: int) -> Any:
        info = lsl.StreamInfo(name, "rtdecode-bench", channels, lsl.IRREGULAR_RATE, "double64", name)
        return lsl.StreamOutlet(info)

    spikes_out = outlet(f"spikes-{tag}", 2)
    behavior_out = {n: outlet(f"{n}-{tag}", 1) for n in inputs}
    t0 = session.start + 5.0
    messages = [m for m in session_messages(session, a.block, tuple(inputs), t0, t0 + a.seconds) if m[1] != "frame"]
    ids = np.asarray(bundle.vocab.neuron_ids, np.float64)
    cli = [
        sys.executable,
        "-c",
        "from rtdecode.cli import main; main()",
        "serve",
        str(a.bundle),
        "--input",
        endpoints[0],
    ]
    daemon = subprocess.Popen([*cli, "--output", endpoints[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Subscriber(endpoints[1], topics=("status",)) as probe:
            probe.wait_for("status", timeout=60)  # the daemon is up
        config = LslBridgeConfig(
            daemon_input=endpoints[0],
            daemon_output=endpoints[1],
            bundle=str(a.bundle),
            spikes=f"spikes-{tag}",
            behavior=tuple(BehaviorChannel(n, f"{n}-{tag}") for n in inputs),
            prefix=f"bench-{tag}",
            origin=lsl.local_clock() + 2.0 - t0,  # session time t0 is 2 s from now
        )
        bridge = LslBridge(config)
        stop = threading.Event()
        thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
        thread.start()
        if not bridge.ready.wait(20):
            raise SystemExit("the bridge did not start")
        (info,) = lsl.resolve_byprop("name", f"bench-{tag}-decode", timeout=10.0)
        reader = lsl.StreamInlet(info)
        reader.open_stream(timeout=10.0)
        arrivals: dict[int, float] = {}
        post_close: dict[int, float] = {}

        def read() -> None:
            with Subscriber(endpoints[1], topics=("decode",)) as sub:
                while not stop.is_set():
                    msg = sub.receive(timeout=0.2)
                    if msg is not None:
                        post_close[int(msg["window"])] = float(msg["latency_ms"])

        def read_lsl() -> None:  # a blocking pull (liblsl waits without the interpreter lock): arrival times
            while not stop.is_set():
                sample, _ = reader.pull_sample(timeout=0.2)
                if sample is not None:
                    arrivals[int(sample[0])] = lsl.local_clock()

        watchers = [threading.Thread(target=f, daemon=True) for f in (read, read_lsl)]
        for w in watchers:
            w.start()
        print(f"pushing {a.seconds:.0f} s of {session.n_neurons} units into LSL at real time ...")
        for t, kind, args in messages:
            due = t + config.origin  # type: ignore[operator]
            if (wait := due - lsl.local_clock()) > 0:
                time.sleep(wait)
            if kind == "spikes":
                times, neurons = args
                spikes_out.push_chunk(np.column_stack([ids[neurons], times + config.origin]).tolist())
            elif kind == "behavior":
                name, times, values = args
                behavior_out[name].push_chunk(values.reshape(-1, 1).tolist(), (times + config.origin).tolist())
        time.sleep(1.0)
        stop.set()
        thread.join(5)
    finally:
        daemon.terminate()
        daemon.wait(10)
    window, grid = bundle.window.window, bundle.window.origin
    ends = {w: (w + 1) * window + grid for w in arrivals}
    steady = [w for w in arrivals if ends[w] >= t0 + 1.0]  # windows of the pushed data, after its first second
    origin = float(config.origin)  # type: ignore[arg-type]
    e2e = [(arrivals[w] - (ends[w] + origin)) * 1e3 for w in steady]
    result = {
        "seconds": a.seconds,
        "block_s": a.block,
        "windows": len(steady),
        "input_leg_ms": percentiles(np.asarray(bridge.input_delays_ms)),
        "output_leg_ms": percentiles(np.asarray(bridge.output_delays_ms)),
        "end_to_end_ms": percentiles(np.asarray(e2e)),
        "daemon_post_close_ms": percentiles(np.asarray([post_close[w] for w in steady if w in post_close])),
        "bridge": bridge.counters,
    }
    for key in ("input_leg_ms", "output_leg_ms", "end_to_end_ms", "daemon_post_close_ms"):
        q = result[key]
        print(f"{key:22s} p50 {q['p50']:.2f}  p99 {q['p99']:.2f}  p99.9 {q['p99.9']:.2f}")
    print(f"windows read back {result['windows']}; bridge {bridge.counters}")
    if a.out is not None:
        a.out.write_text(json.dumps(result, indent=2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
