"""Bounded fuzz of the live daemon, the CI version of tools/fuzz_protocol.py (style rule 4).

Hypothesis draws bad messages (rtdecode.wire.hostile: corpus entries, random bytes, mutations, truncations, wrong types,
wrong-for-the-model, wrong versions, oversized) and where they fall among 1 s of valid traffic from the v1 fixture
session. Each example must leave the daemon alive, count every bad message under the reason
`expected_rejection` gives it, and decode the valid traffic bit-identically to the clean run. A few hundred
messages in all; one daemon serves every example (a `control` `reset` starts each one from the initial state).
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")

from test_daemon import connected, running_daemon

from rtdecode.io import load_session
from rtdecode.wire.hostile import REJECT_REASONS, bad_message, expected_rejection
from rtdecode.wire.protocol import encode_behavior, encode_clock, encode_control, encode_frame, encode_spikes
from rtdecode.wire.replay import session_messages

V1 = Path(__file__).parent / "fixtures" / "v1"
ENCODERS = {"spikes": encode_spikes, "frame": encode_frame, "behavior": encode_behavior, "clock": encode_clock}


def _valid() -> list[list[bytes]]:
    session = load_session(V1 / "session.npz")
    return [
        ENCODERS[kind](i, 0.0, *args, src="valid")
        for i, (_, kind, args) in enumerate(session_messages(session, behavior=("theta",), t1=1.0))
    ]


VALID = _valid()
TEMPLATES = VALID + [encode_control(0, 0.0, "status", src="valid"), encode_control(1, 0.0, "reset", 0.0)]


@pytest.fixture(scope="module")
def served():
    with running_daemon(V1 / "bundle") as daemon, connected(daemon, topics=("decode", "status")) as (prod, sub):
        fr = daemon.bundle.frames
        model = ((fr.height, fr.width), {b.name for b in daemon.bundle.behavior_inputs})

        def serve(messages: list[list[bytes]]) -> tuple[dict[int, tuple], dict[str, int]]:
            """Reset, send, then ask for a status: it comes after every decode of these messages."""
            prod.control("reset")
            for frames in messages:
                assert prod.send(frames)
            prod.control("status")
            decodes: dict[int, tuple] = {}
            while True:
                msg = sub.receive(timeout=20)
                assert msg is not None, "the daemon stopped answering"
                if msg["topic"] == "decode":
                    decodes[msg["window"]] = (msg["values"], msg["n_spikes"], msg["in_seq"])
                elif (
                    msg["seq"] > 0
                    and msg["counters"].get("resets", 0) == serve.resets + 1
                    and msg["counters"]["msg_control"] == 2 * (serve.resets + 1)
                ):
                    serve.resets += 1
                    return decodes, msg["counters"]

        serve.resets = 0  # type: ignore[attr-defined]
        clean, counters = serve(VALID)
        assert len(clean) == 20 and not any(counters.get(r) for r in REJECT_REASONS)
        yield serve, clean, counters, model


def _bad(seed: int, frame_shape: tuple[int, int], behaviors: set[str]) -> tuple[str, list[bytes]]:
    """The first candidate from `seed` that the daemon must reject, with its reason."""
    rng = random.Random(seed)
    while True:
        _, frames = bad_message(rng, TEMPLATES)
        reason = expected_rejection(frames, frame_shape, behaviors) if frames else None
        if reason is not None:  # a mutation that stays valid would change the state: not a bad message
            return reason, frames


# Hypothesis draws one seed and one position per bad message, so a failure shrinks to the fewest bad messages.
@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, len(VALID))), min_size=1, max_size=100))
def test_fuzzed_traffic_is_counted_and_the_valid_decodes_do_not_change(served, bad):
    serve, clean, before, (frame_shape, behaviors) = served
    expected = dict.fromkeys(REJECT_REASONS, 0)
    messages = list(VALID)
    for seed, position in sorted(bad, key=lambda b: -b[1]):  # from the back: positions stay those of VALID
        reason, frames = _bad(seed, frame_shape, behaviors)
        expected[reason] += 1
        messages.insert(position, frames)
    decodes, after = serve(messages)
    counted = {r: after.get(r, 0) - before.get(r, 0) for r in REJECT_REASONS}
    before.clear()
    before.update(after)
    assert counted == expected
    assert decodes == clean
    assert not any(v for k, v in after.items() if k.startswith("seq_"))


def test_fuzz_tool_runs():
    tool = Path(__file__).resolve().parents[1] / "tools" / "fuzz_protocol.py"
    r = subprocess.run(
        [sys.executable, str(tool), "--messages", "2000", "--huge", "2"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("[ok]") == 4 and "FAIL" not in r.stdout and "total" in r.stdout
