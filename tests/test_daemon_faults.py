"""Time and sequence faults through the real daemon (docs/protocol.md, "Time faults" and "Sequence numbers"):
a clock that jumps back, gaps of minutes to days, duplicate / reset / skipped sequence numbers. Each has one
defined outcome, counted in `status`. Uses the committed v1 bundle (fast, no torch); waits on messages only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from test_daemon import collect, connected, final_status, running_daemon

from rtdecode.wire.protocol import encode_clock, encode_frame, encode_spikes

V1_BUNDLE = Path(__file__).parent / "fixtures" / "v1" / "bundle"
PX = np.zeros((32, 64), np.uint8)  # the v1 model's frame size


def test_gaps_of_minutes_and_days_are_crossed_at_once():
    """A spike 10 minutes after the last one closes 11,999 windows; only the newest is decoded (backlog
    skipping), the rest are counted, and no per-window work is done for the empty ones: a 10-day gap (17 million
    windows) is answered as fast, where a loop over its windows would not finish within the timeout."""
    with running_daemon(V1_BUNDLE) as daemon, connected(daemon) as (prod, sub):
        prod.spikes(np.array([0.01]), np.array([1], np.int32))
        prod.clock(0.05)
        prod.spikes(np.array([600.01]), np.array([2], np.int32))  # 10 minutes later
        prod.clock(600.05)
        decodes = collect(sub, "decode", lambda out: len(out) >= 3, timeout=20)
        status = final_status(prod, sub)
        day10 = 600.05 + 10 * 86400
        prod.clock(day10)
        (late,) = collect(sub, "decode", lambda out: len(out) >= 1, timeout=20)
        status10 = final_status(prod, sub)
    assert [d["window"] for d in decodes] == [0, 11999, 12000]
    assert [d["n_spikes"] for d in decodes] == [1, 0, 1]
    assert status["counters"]["windows_skipped"] == 11999 - 1
    assert decodes[1]["latency_ms"] < 1000 and late["latency_ms"] < 1000
    assert late["window"] == round(day10 / 0.05) - 1
    assert status10["counters"]["windows_skipped"] == late["window"] + 1 - 4  # all closed but the 4 decoded


def test_a_clock_that_jumps_back_is_counted_and_decoding_resumes():
    """Everything behind the open window after the jump is counted (spikes `late`, the watermark `late_clock`,
    frames and behavior `out_of_order`) and dropped; decoding carries on once data time passes the open window."""
    with running_daemon(V1_BUNDLE) as daemon, connected(daemon) as (prod, sub):
        prod.frame(0.9, PX)
        prod.behavior("theta", np.array([0.9]), np.array([1.0]))
        prod.clock(1.0)  # windows 0..19 closed (19 decoded as the newest), window 20 open
        (before,) = collect(sub, "decode", lambda out: len(out) >= 1)
        prod.spikes(np.array([0.2, 0.5]), np.array([1, 2], np.int32))  # the clock jumped back by 0.5-0.8 s
        prod.frame(0.4, PX)
        prod.behavior("theta", np.array([0.4]), np.array([2.0]))
        prod.clock(0.5)
        prod.spikes(np.array([1.02]), np.array([3], np.int32))  # time passes the open window again
        prod.frame(1.01, PX)
        prod.clock(1.05)
        (after,) = collect(sub, "decode", lambda out: len(out) >= 1)
        status = final_status(prod, sub)
    assert (before["window"], after["window"], after["n_spikes"]) == (19, 20, 1)
    c = status["counters"]
    assert (c["late"], c["late_clock"], c["out_of_order"]) == (2, 1, 2)
    assert np.isfinite(after["values"]["speed"])


def test_sequence_numbers_per_producer():
    """seq is checked per producer name (`src`): a duplicate is dropped, a gap is counted with the number of
    messages missing, a step back is a restart and is used; messages without `src` are not checked; a rejected
    message does not touch the sequence state."""
    with running_daemon(V1_BUNDLE) as daemon, connected(daemon) as (prod, sub):

        def spikes(seq: int, t: float, neuron: int, src: str | None = "rig") -> None:
            prod.send(encode_spikes(seq, 0.0, np.array([t]), np.array([neuron], np.int32), src=src))

        spikes(0, 0.01, 1)
        spikes(1, 0.02, 2)
        spikes(1, 0.03, 3)  # duplicate: dropped
        spikes(5, 0.04, 4)  # 2, 3, 4 missing: a gap
        spikes(2, 0.045, 5)  # back: the producer restarted its sequence
        spikes(0, 0.046, 6, src=None)  # anonymous: never checked
        spikes(0, 0.047, 7, src=None)
        prod.send(encode_frame(9, 0.0, 0.01, np.zeros((2, 2), np.uint8), src="rig"))  # bad_frame: no seq effect
        prod.send(encode_clock(3, 0.0, 0.05, src="rig"))
        (d,) = collect(sub, "decode", lambda out: len(out) >= 1)
        status = final_status(prod, sub)
    c = status["counters"]
    assert d["n_spikes"] == 6 and c["msg_spikes"] == 6 and c["bad_frame"] == 1
    assert (c["seq_duplicate"], c["seq_gap"], c["seq_missing"], c["seq_reset"]) == (1, 1, 3, 1)


def test_valid_messages_with_extreme_values_do_not_stop_the_daemon():
    """Values the wire format allows but no rig sends: times of +-1e300 and 1e15 s, seq jumping by 2**64 - 1
    (its seq_missing total passes what msgpack can pack: status saturates it at 2**63 - 1). The daemon counts
    them, keeps answering, and decodes normally after a reset."""
    with running_daemon(V1_BUNDLE) as daemon, connected(daemon) as (prod, sub):
        for seq in (0, 2**64 - 1, 0, 2**64 - 1):
            prod.send(encode_clock(seq, 0.0, 0.0, src="evil"))
        prod.spikes(np.array([1e300, -1e300, 9.2e17, 1e15, 0.01]), np.array([1, 2, 3, 4, 5], np.int32))
        for t in (1e300, -1e300):
            prod.clock(t)
        status = final_status(prod, sub)
        prod.control("reset")
        prod.spikes(np.array([0.01]), np.array([1], np.int32))
        prod.clock(0.05)
        (d,) = collect(sub, "decode", lambda out: len(out) >= 1)
    c = status["counters"]
    assert c["seq_missing"] == 2**63 - 1 and c["seq_reset"] == 1
    assert (c["bad_time"], c["late"]) == (5, 1)  # 1e15 s is a far-future spike: the window jumps there
    assert (d["window"], d["n_spikes"]) == (0, 1)
