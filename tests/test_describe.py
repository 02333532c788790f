"""Protocol 1.1 (docs/protocol.md): the daemon describes itself, answers requests by echoing them, counts a
message rejected for its body as received, and logs every reason it counts.

The `describe` tests run the real daemon on real ipc sockets and use nothing but the description to build valid
input (unit IDs, behavior names, frame size, window grid), as a client written from the doc alone would. The
accounting tests drive the engine directly on the committed v1 fixture bundle.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from test_daemon import collect, connected, running_daemon

from rtdecode.runtime import Bundle
from rtdecode.serve.config import ServeConfig
from rtdecode.serve.engine import DecodeEngine
from rtdecode.wire.protocol import (
    PROTOCOL,
    decode_output,
    encode_behavior,
    encode_clock,
    encode_control,
    encode_frame,
    encode_spikes,
)

V1 = Path(__file__).parent / "fixtures" / "v1"


def test_a_client_written_from_the_description_alone_decodes_without_rejections(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    with running_daemon(tiny_bundle, start=0.0) as daemon, connected(daemon) as (prod, sub):
        d = sub.describe(prod, timeout=10)
        assert d["protocol"] == PROTOCOL and d["ready"] is True
        assert d["in_src"] == prod.src and d["in_seq"] == prod.seq - 1  # the answer names the request it answers
        assert d["neurons"]["unit_ids"] == [int(u) for u in bundle.vocab.neuron_ids]
        assert [t["name"] for t in d["targets"]] == [t.name for t in bundle.targets]
        assert {t["unit"] for t in d["targets"]} <= {"cm/s", "deg"}  # the session's units reach the wire
        assert d["model"]["sha256"] == bundle.source["sha256"] and d["deadline_ms"] > 0

        # everything below comes from `d`
        length, origin = d["window"]["length_s"], d["window"]["origin_s"]
        units = np.array(d["neurons"]["unit_ids"], dtype=np.int64)
        frames, rng = d["frames"], np.random.default_rng(0)
        for k in range(12):
            t0 = origin + k * length
            times = np.sort(rng.uniform(t0, t0 + length, 20))
            prod.spikes(times, rng.choice(units, 20), unit_ids=True)
            if frames is not None:
                prod.frame(t0, rng.integers(0, 255, (frames["height"], frames["width"]), dtype=np.uint8))
            for spec in d["behavior_inputs"]:
                prod.behavior(spec["name"], np.array([t0 + 0.01]), np.array([1.0]))
            prod.clock(t0 + length)
        decodes = collect(sub, "decode", lambda got: got[-1]["window"] >= 11)
        windows = [m["window"] for m in decodes]
        assert windows[-1] == 11
        for m in decodes:  # window index -> time as the description says
            assert m["t_start"] == pytest.approx(origin + m["window"] * length, abs=1e-9)
            assert set(m["values"]) == {t["name"] for t in d["targets"]}
        prod.control("status")
        status = sub.wait_for("status")
        while status.get("in_seq") != prod.seq - 1:  # periodic statuses carry no echo
            assert "in_seq" not in status
            status = sub.wait_for("status")
        assert status["in_src"] == prod.src and status["in_t_send"] <= time.monotonic()
        rejected = {k: v for k, v in status["counters"].items() if not k.startswith(("msg_", "recording_"))}
        for reason in ("malformed", "bad_frame", "unknown_behavior", "bad_neuron", "late", "bad_time", "seq_gap"):
            assert rejected.get(reason, 0) == 0, rejected


def test_the_daemon_describes_itself_first_on_start(tiny_bundle: Path, tmp_path: Path) -> None:
    """The description is the first message the daemon publishes (its readiness signal); the recording shows it."""
    from rtdecode.serve.recording import RecordingReader

    with running_daemon(tiny_bundle, record=tmp_path / "rec") as daemon, connected(daemon) as (prod, sub):
        sub.describe(prod, timeout=10)
    (path,) = (tmp_path / "rec").iterdir()
    outputs = [r.frames for r in RecordingReader(path) if r.direction == 1]
    assert outputs[0][0] == b"describe"
    first = msgpack.unpackb(outputs[0][1])
    assert first["ready"] is True and "in_seq" not in first


# ------------------------------------------------------------------------------------------------ the engine
@pytest.fixture()
def engine() -> tuple[DecodeEngine, list[list[bytes]]]:
    out: list[list[bytes]] = []
    return DecodeEngine(Bundle.load(V1 / "bundle"), ServeConfig(start=0.0), out.append), out


def test_a_message_rejected_for_its_body_is_not_counted_as_missing(engine) -> None:
    eng, _ = engine
    h, w = eng.frames.shape if eng.frames is not None else (4, 4)
    eng.handle(encode_clock(0, 0.0, 0.01, src="cam"), 0.0)
    eng.handle(encode_frame(1, 0.0, 0.02, np.zeros((h + 1, w), np.uint8), src="cam"), 0.0)  # wrong size: rejected
    eng.handle(encode_behavior(2, 0.0, "no-such-input", np.array([0.1]), np.array([1.0]), src="cam"), 0.0)
    eng.handle(encode_clock(3, 0.0, 0.03, src="cam"), 0.0)
    c = eng.status()["counters"]
    assert c["bad_frame"] == 1 and c["unknown_behavior"] == 1
    assert c.get("seq_gap", 0) == 0 and c.get("seq_missing", 0) == 0
    eng.handle(encode_clock(6, 0.0, 0.04, src="cam"), 0.0)  # two really lost
    c = eng.status()["counters"]
    assert c["seq_gap"] == 1 and c["seq_missing"] == 2
    eng.handle(encode_clock(6, 0.0, 0.05, src="cam"), 0.0)  # a rejected copy never makes a later message a repeat
    assert eng.status()["counters"]["seq_duplicate"] == 1
    eng.handle(encode_frame(7, 0.0, 0.06, np.zeros((h + 1, w), np.uint8), src="cam"), 0.0)  # rejected
    eng.handle(encode_clock(6, 0.0, 0.07, src="cam"), 0.0)  # a repeat in between forgets nothing
    eng.handle(encode_clock(8, 0.0, 0.08, src="cam"), 0.0)
    c = eng.status()["counters"]
    assert (c["seq_duplicate"], c["seq_gap"], c["seq_missing"]) == (2, 1, 2)


def test_a_reset_moves_the_described_start_and_circular_targets_are_radians(engine) -> None:
    from rtdecode.serve.description import _target

    eng, out = engine
    eng.handle(encode_control(0, 0.0, "reset", start=12.5, src="c"), 0.0)
    eng.handle(encode_control(1, 0.0, "describe", src="c"), 0.0)
    described = msgpack.unpackb([f for f in out if f[0] == b"describe"][-1][1])
    assert described["window"]["start_s"] == 12.5 and described["in_seq"] == 1
    assert _target("heading", "circular", [], "deg")["unit"] == "rad"  # published in (-pi, pi] whatever stored


def test_published_windows_hold_the_spikes_each_decode_read(tiny_bundle: Path) -> None:
    from rtdecode.io import load_session
    from rtdecode.wire.replay import session_messages

    out: list[list[bytes]] = []
    bundle = Bundle.load(tiny_bundle)
    eng = DecodeEngine(bundle, ServeConfig(start=0.0, publish_windows=True, skip_backlog=False), out.append)
    session = load_session(V1 / "session.npz")
    encoders = {"spikes": encode_spikes, "frame": encode_frame, "behavior": encode_behavior, "clock": encode_clock}
    for seq, (_, kind, args) in enumerate(session_messages(session, batch=0.005, t1=1.0)):
        if kind in ("spikes", "clock"):
            eng.handle(encoders[kind](seq, 0.0, *args, src="t"), time.perf_counter())
    topics = [f[0] for f in out if f[0] in (b"decode", b"window")]
    assert topics and topics == [b"decode", b"window"] * (len(topics) // 2)  # each window right after its decode
    decodes = [decode_output(f) for f in out if f[0] == b"decode"]
    windows = [decode_output(f) for f in out if f[0] == b"window"]
    for d, w in zip(decodes, windows):
        assert (w["window"], w["n"], w["t_start"]) == (d["window"], d["n_spikes"], d["t_start"])
        assert np.all((w["times"] >= w["t_start"] - 1e-9) & (w["times"] < w["t_end"]))
    assert sum(w["n"] for w in windows) > 0


def test_non_finite_behavior_is_dropped_and_counted(engine) -> None:
    eng, _ = engine
    name = eng.bundle.behavior_inputs[0].name
    times = np.array([0.01, np.nan, 0.03, 0.04, 0.02])
    values = np.array([1.0, 2.0, np.inf, 4.0, 5.0])
    eng.handle(encode_behavior(0, 0.0, name, times, values, src="beh"), 0.0)
    c = eng.status()["counters"]
    assert (c["bad_time"], c["bad_value"], c["out_of_order"]) == (1, 1, 1)  # 0.02 after 0.04: out of order
    kept_t, kept_v = eng.behavior[name].recent()
    assert kept_t.tolist() == [0.01, 0.04] and kept_v.tolist() == [1.0, 4.0]


def test_a_watermark_exactly_at_a_window_end_closes_it(engine) -> None:
    eng, out = engine
    length, dt = eng.bundle.window.window, eng.bundle.window.dt
    eng.handle(encode_spikes(0, 0.0, np.array([0.001]), np.array([0]), src="s"), time.perf_counter())
    eng.handle(encode_clock(1, 0.0, length - 1e-3 * dt, src="s"), time.perf_counter())
    assert not [f for f in out if f[0] == b"decode"]
    # windows are [start, end): `end` is past the window; within 1e-6 quanta of it counts as on it (float error)
    eng.handle(encode_clock(2, 0.0, length - 1e-7 * dt, src="s"), time.perf_counter())
    decodes = [msgpack.unpackb(f[1]) for f in out if f[0] == b"decode"]
    assert [d["window"] for d in decodes] == [0] and decodes[0]["n_spikes"] == 1


def test_every_counted_rejection_is_logged(engine, caplog: pytest.LogCaptureFixture) -> None:
    eng, _ = engine
    name = eng.bundle.behavior_inputs[0].name
    n = eng.bundle.vocab.n_neurons
    caplog.set_level(logging.WARNING, logger="rtdecode.serve")
    eng.handle(encode_spikes(0, 0.0, np.array([0.12]), np.array([n]), src="s"), 0.0)  # bad_neuron
    eng.handle(encode_spikes(1, 0.0, np.array([np.nan]), np.array([0]), src="s"), 0.0)  # bad_time
    eng.handle(encode_clock(2, 0.0, 1.0, src="s"), 0.0)
    eng.handle(encode_spikes(3, 0.0, np.array([0.12]), np.array([0]), src="s"), 0.0)  # late
    eng.handle(encode_clock(4, 0.0, 0.5, src="s"), 0.0)  # late_clock
    eng.handle(encode_clock(9, 0.0, 1.1, src="s"), 0.0)  # seq_gap
    eng.handle(encode_behavior(10, 0.0, name, np.array([0.2, 0.1]), np.array([1.0, 1.0]), src="s"), 0.0)
    logged = {r.getMessage().split(":", 1)[0] for r in caplog.records}
    assert {"bad_neuron", "bad_time", "late", "late_clock", "seq_gap", "out_of_order"} <= logged
    counted = eng.status()["counters"]
    for reason in ("bad_neuron", "bad_time", "late", "late_clock", "seq_gap", "out_of_order"):
        assert counted[reason] == 1, reason


# ------------------------------------------------------------------------------------------------ the doc
DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()


def _table_after(heading: str, column: int) -> list[str]:
    """The backquoted names in `column` of the first table after `heading` in docs/protocol.md."""
    lines = DOC[DOC.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    cells = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells.append(line.split("|")[column + 1])
    return [name for cell in cells for name in cell.replace("(+ ", "").split("`")[1::2]]


def test_the_doc_lists_every_key_of_the_description(engine) -> None:
    eng, _ = engine
    assert set(_table_after("### `describe`", 0)) == set(eng.description)


def test_the_doc_lists_exactly_the_reasons_the_daemon_counts() -> None:
    from rtdecode.wire.hostile import REJECT_REASONS

    assert set(_table_after("**Whole messages.**", 2)) - {"seq_duplicate"} == set(REJECT_REASONS)
    parts = set(_table_after("**Parts of messages.**", 1))
    assert parts == {
        "bad_neuron",
        "bad_time",
        "bad_value",
        "late",
        "late_clock",
        "out_of_order",
        "frame_unused",
        "seq_gap",
        "seq_missing",
        "seq_reset",
        "internal_error",
    }


def test_rtdecode_describe_prints_what_the_daemon_serves(tiny_bundle: Path) -> None:
    import json

    from typer.testing import CliRunner

    from rtdecode.cli import app

    with running_daemon(tiny_bundle) as daemon:
        ends = ["--to", daemon.input_endpoint, "--output", daemon.output_endpoint]
        r = CliRunner().invoke(app, ["describe", *ends, "--json"])
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert (
            d["protocol"] == PROTOCOL and d["neurons"]["unit_ids"] == daemon.engine.description["neurons"]["unit_ids"]
        )
        r = CliRunner().invoke(app, ["describe", *ends])
        assert r.exit_code == 0 and "targets" in r.output and "cm/s" in r.output, r.output
    r = CliRunner().invoke(app, ["describe", *ends, "--timeout", "0.5"])  # the daemon is gone
    assert r.exit_code == 1 and "no description from the daemon" in " ".join(r.output.split())  # rich wraps
