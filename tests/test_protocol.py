"""Wire protocol 1.1 (docs/protocol.md): golden bytes, round trips, a hostile-input corpus and a bounded fuzz.

Modelled on safetensors' `tests/test_simple.py` + `attacks/` + `fuzz.py` (style rule 4):

* the golden bytes pin every frame of one message of each type, so no change of encoding goes unnoticed; they are
  written out key by key as a reference for a C++/MATLAB implementer (note: msgpack puts its own numbers, e.g. the
  float64 `t_send`, big-endian in the header; the array buffers are little-endian);
* every entry of the hostile corpus (`rtdecode.wire.hostile.HOSTILE`, shared with the daemon fuzz test and
  tools/fuzz_protocol.py) must raise `ProtocolError` with the reason counter the spec names, never any other
  exception (the daemon catches only `ProtocolError`: anything else would kill its input loop);
* the fuzz feeds random frames, random msgpack headers and mutated golden messages to the decoders under the same
  rule. It is bounded (a few hundred examples per test) so the whole file runs in a few seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rtdecode.wire.hostile import HOSTILE, clk, f8, frm, head, i4, mk, mutate, nested, raw_clock_header, spk
from rtdecode.wire.protocol import (
    CONTROL_COMMANDS,
    MAX_BEHAVIOR_SAMPLES,
    MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    MAX_SPIKES,
    OUTPUT_TOPICS,
    BehaviorSamples,
    Clock,
    Control,
    Frame,
    ProtocolError,
    Spikes,
    decode_input,
    decode_output,
    encode_activity,
    encode_behavior,
    encode_clock,
    encode_control,
    encode_decode,
    encode_describe,
    encode_frame,
    encode_spikes,
    encode_status,
    encode_window,
)

# No example database: a test run must not write files; examples are few, so settings stay explicit per test.
ROUNDTRIP = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _hx(*parts: str) -> bytes:
    """Bytes from hex pieces; spaces inside a piece are allowed, for readability."""
    return bytes.fromhex(" ".join(parts))


# ================================================================================================ golden bytes
# Each header below is listed entry by entry: msgpack key, then value. Common pieces:
#   a1 76 / 01                    "v" (fixstr, 1 byte) -> positive fixint 1
#   a3 736571 / xx                "seq" -> positive fixint
#   a6 745f73656e64 / cb ...      "t_send" -> float64 (0xcb + 8 bytes, big-endian as msgpack requires)
# Array buffers are raw little-endian: float64 1.5 = 0x3FF8000000000000 is sent as 00 00 00 00 00 00 f8 3f.
GOLDEN: dict[str, tuple[Callable[[], list[bytes]], list[bytes]]] = {
    "spikes_index": (
        lambda: encode_spikes(7, 0.5, np.array([1.5, 2.25]), np.array([3, 258])),
        [
            _hx("7370696b6573"),  # topic "spikes"
            _hx(
                "84",  # fixmap, 4 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "07",  # seq: 7
                "a6 745f73656e64",
                "cb 3fe0000000000000",  # t_send: 0.5
                "a1 6e",
                "02",
            ),  # n: 2 (no "ids" key: model indices)
            _hx("0000000000 00f83f", "0000000000 000240"),  # times float64[2] LE: 1.5, 2.25
            _hx("03000000", "02010000"),  # neurons int32[2] LE: 3, 258 (0x0102)
        ],
    ),
    "spikes_unit": (
        lambda: encode_spikes(8, 0.75, np.array([1.5]), np.array([(1 << 32) + 5]), unit_ids=True),
        [
            _hx("7370696b6573"),  # topic "spikes"
            _hx(
                "85",  # fixmap, 5 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "08",  # seq: 8
                "a6 745f73656e64",
                "cb 3fe8000000000000",  # t_send: 0.75
                "a1 6e",
                "01",  # n: 1
                "a3 696473",
                "a4 756e6974",
            ),  # ids: "unit"
            _hx("0000000000 00f83f"),  # times float64[1] LE: 1.5
            _hx("05000000 01000000"),  # neurons int64[1] LE: 2**32 + 5
        ],
    ),
    "frame": (
        lambda: encode_frame(9, 1.0, 2.0, np.arange(6, dtype=np.uint8).reshape(2, 3)),
        [
            _hx("6672616d65"),  # topic "frame"
            _hx(
                "87",  # fixmap, 7 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "09",  # seq: 9
                "a6 745f73656e64",
                "cb 3ff0000000000000",  # t_send: 1.0
                "a1 74",
                "cb 4000000000000000",  # t: 2.0
                "a1 68",
                "02",  # h: 2
                "a1 77",
                "03",  # w: 3
                "a5 6474797065",
                "a5 75696e7438",
            ),  # dtype: "uint8"
            _hx("000102", "030405"),  # pixels uint8[2*3], row-major
        ],
    ),
    "behavior": (
        lambda: encode_behavior(10, 1.125, "theta", np.array([1.0, 1.5]), np.array([0.25, -2.0])),
        [
            _hx("6265686176696f72"),  # topic "behavior"
            _hx(
                "85",  # fixmap, 5 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "0a",  # seq: 10
                "a6 745f73656e64",
                "cb 3ff2000000000000",  # t_send: 1.125
                "a4 6e616d65",
                "a5 7468657461",  # name: "theta"
                "a1 6e",
                "02",
            ),  # n: 2
            _hx("0000000000 00f03f", "0000000000 00f83f"),  # times float64[2] LE: 1.0, 1.5
            _hx("0000000000 00d03f", "0000000000 0000c0"),  # values float64[2] LE: 0.25, -2.0
        ],
    ),
    "clock": (
        lambda: encode_clock(11, 1.25, 3.0),
        [
            _hx("636c6f636b"),  # topic "clock"
            _hx(
                "84",  # fixmap, 4 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "0b",  # seq: 11
                "a6 745f73656e64",
                "cb 3ff4000000000000",  # t_send: 1.25
                "a1 74",
                "cb 4008000000000000",
            ),  # t: 3.0
        ],
    ),
    "clock_src": (  # the optional producer name goes right after the common keys
        lambda: encode_clock(14, 2.0, 4.0, src="rig-1"),
        [
            _hx("636c6f636b"),  # topic "clock"
            _hx(
                "85",  # fixmap, 5 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "0e",  # seq: 14
                "a6 745f73656e64",
                "cb 4000000000000000",  # t_send: 2.0
                "a3 737263",
                "a5 7269672d31",  # src: "rig-1"
                "a1 74",
                "cb 4010000000000000",
            ),  # t: 4.0
        ],
    ),
    "control_reset": (
        lambda: encode_control(12, 1.5, "reset", start=100.0),
        [
            _hx("636f6e74726f6c"),  # topic "control"
            _hx(
                "85",  # fixmap, 5 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "0c",  # seq: 12
                "a6 745f73656e64",
                "cb 3ff8000000000000",  # t_send: 1.5
                "a3 636d64",
                "a5 7265736574",  # cmd: "reset"
                "a5 7374617274",
                "cb 4059000000000000",
            ),  # start: 100.0
        ],
    ),
    "control_status": (
        lambda: encode_control(13, 1.75, "status"),
        [
            _hx("636f6e74726f6c"),  # topic "control"
            _hx(
                "84",  # fixmap, 4 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "0d",  # seq: 13
                "a6 745f73656e64",
                "cb 3ffc000000000000",  # t_send: 1.75
                "a3 636d64",
                "a6 737461747573",
            ),  # cmd: "status"
        ],
    ),
    "decode": (
        lambda: encode_decode(1, 2.5, 42, 4.0, 4.125, {"speed": 12.5, "phi": -1.0}, 17, 0, 11, 1.25, 0.75),
        [
            _hx("6465636f6465"),  # topic "decode"
            _hx(
                "8c",  # fixmap, 12 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "01",  # seq: 1
                "a6 745f73656e64",
                "cb 4004000000000000",  # t_send: 2.5
                "a6 77696e646f77",
                "2a",  # window: 42
                "a7 745f7374617274",
                "cb 4010000000000000",  # t_start: 4.0
                "a5 745f656e64",
                "cb 4010800000000000",  # t_end: 4.125
                "a6 76616c756573",
                "82",  # values: fixmap, 2 entries (insertion order)
                "a5 7370656564",
                "cb 4029000000000000",  # . speed: 12.5
                "a3 706869",
                "cb bff0000000000000",  # . phi: -1.0
                "a8 6e5f7370696b6573",
                "11",  # n_spikes: 17
                "a9 7472756e6361746564",
                "00",  # truncated: 0
                "a6 696e5f736571",
                "0b",  # in_seq: 11
                "a9 696e5f745f73656e64",
                "cb 3ff4000000000000",  # in_t_send: 1.25
                "aa 6c6174656e63795f6d73",
                "cb 3fe8000000000000",
            ),  # latency_ms: 0.75
        ],
    ),
    "activity": (
        lambda: encode_activity(2, 2.75, 43, 4.125, np.array([4.25]), np.array([2]), 11, 1.25),
        [
            _hx("6163746976697479"),  # topic "activity"
            _hx(
                "88",  # fixmap, 8 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "02",  # seq: 2
                "a6 745f73656e64",
                "cb 4006000000000000",  # t_send: 2.75
                "a6 77696e646f77",
                "2b",  # window: 43
                "a7 745f7374617274",
                "cb 4010800000000000",  # t_start: 4.125
                "a1 6e",
                "01",  # n: 1
                "a6 696e5f736571",
                "0b",  # in_seq: 11
                "a9 696e5f745f73656e64",
                "cb 3ff4000000000000",
            ),  # in_t_send: 1.25
            _hx("0000000000 001140"),  # times float64[1] LE: 4.25
            _hx("02000000"),  # neurons int32[1] LE: 2
        ],
    ),
    "status": (
        lambda: encode_status(
            3,
            3.0,
            {
                "uptime_s": 60.0,
                "backend": "cpu",
                "model": {"sha256": "ab", "step": 5},
                "windows": 600,
                "deadline_misses": 0,
                "latency_ms": {"p50": 0.5, "p99": 1.0, "p99.9": 2.0, "max": 4.0},
                "counters": {"msg_spikes": 9},
            },
        ),
        [
            _hx("737461747573"),  # topic "status"
            _hx(
                "8a",  # fixmap, 10 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "03",  # seq: 3
                "a6 745f73656e64",
                "cb 4008000000000000",  # t_send: 3.0
                "a8 757074696d655f73",
                "cb 404e000000000000",  # uptime_s: 60.0
                "a7 6261636b656e64",
                "a3 637075",  # backend: "cpu"
                "a5 6d6f64656c",
                "82",  # model: fixmap, 2 entries
                "a6 736861323536",
                "a2 6162",  # . sha256: "ab"
                "a4 73746570",
                "05",  # . step: 5
                "a7 77696e646f7773",
                "cd 0258",  # windows: 600 (uint16, big-endian)
                "af 646561646c696e655f6d6973736573",
                "00",  # deadline_misses: 0
                "aa 6c6174656e63795f6d73",
                "84",  # latency_ms: fixmap, 4 entries
                "a3 703530",
                "cb 3fe0000000000000",  # . p50: 0.5
                "a3 703939",
                "cb 3ff0000000000000",  # . p99: 1.0
                "a5 7039392e39",
                "cb 4000000000000000",  # . p99.9: 2.0
                "a3 6d6178",
                "cb 4010000000000000",  # . max: 4.0
                "a8 636f756e74657273",
                "81",  # counters: fixmap, 1 entry
                "aa 6d73675f7370696b6573",
                "09",
            ),  # . msg_spikes: 9
        ],
    ),
    "control_describe": (
        lambda: encode_control(15, 2.25, "describe", src="rig-1"),
        [
            _hx("636f6e74726f6c"),  # topic "control"
            _hx(
                "85",  # fixmap, 5 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "0f",  # seq: 15
                "a6 745f73656e64",
                "cb 4002000000000000",  # t_send: 2.25
                "a3 737263",
                "a5 7269672d31",  # src: "rig-1"
                "a3 636d64",
                "a8 6465736372696265",
            ),  # cmd: "describe"
        ],
    ),
    "status_reply": (  # a status answering the `control` "status" seq 16 of "rig-1" sent at 3.5
        lambda: encode_status(4, 4.0, {"windows": 1}, request=Control(16, 3.5, "status", None, "rig-1")),
        [
            _hx("737461747573"),  # topic "status"
            _hx(
                "87",  # fixmap, 7 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "04",  # seq: 4
                "a6 745f73656e64",
                "cb 4010000000000000",  # t_send: 4.0
                "a7 77696e646f7773",
                "01",  # windows: 1
                "a6 696e5f736571",
                "10",  # in_seq: 16
                "a9 696e5f745f73656e64",
                "cb 400c000000000000",  # in_t_send: 3.5
                "a6 696e5f737263",
                "a5 7269672d31",
            ),  # in_src: "rig-1"
        ],
    ),
    "describe": (  # a description cut to three keys (the daemon sends all of docs/protocol.md's)
        lambda: encode_describe(5, 5.0, {"protocol": "1.1", "ready": True, "neurons": {"n": 2, "unit_ids": [7, 300]}}),
        [
            _hx("6465736372696265"),  # topic "describe"
            _hx(
                "86",  # fixmap, 6 entries
                "a1 76",
                "01",  # v: 1 (the major version; the minor is in "protocol")
                "a3 736571",
                "05",  # seq: 5
                "a6 745f73656e64",
                "cb 4014000000000000",  # t_send: 5.0
                "a8 70726f746f636f6c",
                "a3 312e31",  # protocol: "1.1"
                "a5 7265616479",
                "c3",  # ready: true
                "a7 6e6575726f6e73",
                "82",  # neurons: fixmap, 2 entries
                "a1 6e",
                "02",  # . n: 2
                "a8 756e69745f696473",
                "92",  # . unit_ids: fixarray, 2 entries
                "07",  # .. 7
                "cd 012c",
            ),  # .. 300 (uint16, big-endian)
        ],
    ),
    "window": (  # the spikes of decoded window 3, [0.15, 0.2) s: one spike of neuron 4 at 0.175 s
        lambda: encode_window(6, 6.0, 3, 0.15, 0.2, np.array([0.175]), np.array([4])),
        [
            _hx("77696e646f77"),  # topic "window"
            _hx(
                "87",  # fixmap, 7 entries
                "a1 76",
                "01",  # v: 1
                "a3 736571",
                "06",  # seq: 6
                "a6 745f73656e64",
                "cb 4018000000000000",  # t_send: 6.0
                "a6 77696e646f77",
                "03",  # window: 3
                "a7 745f7374617274",
                "cb 3fc3333333333333",  # t_start: 0.15
                "a5 745f656e64",
                "cb 3fc999999999999a",  # t_end: 0.2
                "a1 6e",
                "01",
            ),  # n: 1
            _hx("6666666666 66c63f"),  # times float64[1] LE: 0.175
            _hx("04000000"),  # neurons int32[1] LE: 4
        ],
    ),
}
INPUT_GOLDEN = [
    "spikes_index",
    "spikes_unit",
    "frame",
    "behavior",
    "clock",
    "clock_src",
    "control_reset",
    "control_status",
    "control_describe",
]
OUTPUT_GOLDEN = ["decode", "activity", "status", "status_reply", "describe", "window"]


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_bytes(name: str) -> None:
    build, expected = GOLDEN[name]
    frames = build()
    assert all(type(f) is bytes for f in frames)
    assert [f.hex() for f in frames] == [f.hex() for f in expected]  # hex: a readable diff on failure


def _fields(msg: Any) -> dict[str, Any]:
    """A decoded input message as plain values, arrays as (dtype string, shape, values) for exact comparison."""
    out = {"type": type(msg).__name__}
    for k, v in vars(msg).items():
        out[k] = (v.dtype.str, v.shape, v.tolist()) if isinstance(v, np.ndarray) else v
    return out


GOLDEN_PARSED = {
    "spikes_index": {
        "type": "Spikes",
        "seq": 7,
        "t_send": 0.5,
        "times": ("<f8", (2,), [1.5, 2.25]),
        "neurons": ("<i4", (2,), [3, 258]),
        "unit_ids": False,
        "src": None,
    },
    "spikes_unit": {
        "type": "Spikes",
        "seq": 8,
        "t_send": 0.75,
        "times": ("<f8", (1,), [1.5]),
        "neurons": ("<i8", (1,), [(1 << 32) + 5]),
        "unit_ids": True,
        "src": None,
    },
    "frame": {
        "type": "Frame",
        "seq": 9,
        "t_send": 1.0,
        "t": 2.0,
        "pixels": ("|u1", (2, 3), [[0, 1, 2], [3, 4, 5]]),
        "src": None,
    },
    "behavior": {
        "type": "BehaviorSamples",
        "seq": 10,
        "t_send": 1.125,
        "name": "theta",
        "times": ("<f8", (2,), [1.0, 1.5]),
        "values": ("<f8", (2,), [0.25, -2.0]),
        "src": None,
    },
    "clock": {"type": "Clock", "seq": 11, "t_send": 1.25, "t": 3.0, "src": None},
    "clock_src": {"type": "Clock", "seq": 14, "t_send": 2.0, "t": 4.0, "src": "rig-1"},
    "control_reset": {"type": "Control", "seq": 12, "t_send": 1.5, "cmd": "reset", "start": 100.0, "src": None},
    "control_status": {"type": "Control", "seq": 13, "t_send": 1.75, "cmd": "status", "start": None, "src": None},
    "control_describe": {
        "type": "Control",
        "seq": 15,
        "t_send": 2.25,
        "cmd": "describe",
        "start": None,
        "src": "rig-1",
    },
}


@pytest.mark.parametrize("name", INPUT_GOLDEN)
def test_golden_inputs_decode(name: str) -> None:
    msg = decode_input(GOLDEN[name][1])
    assert _fields(msg) == GOLDEN_PARSED[name]
    assert isinstance(msg.t_send, float) and type(msg.seq) is int


@pytest.mark.parametrize("name", INPUT_GOLDEN)
def test_golden_inputs_are_not_outputs(name: str) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_output(GOLDEN[name][1])
    assert e.value.reason == "unknown_topic"


def test_golden_outputs_decode() -> None:
    dec = decode_output(GOLDEN["decode"][1])
    assert dec == {
        "topic": "decode",
        "v": 1,
        "seq": 1,
        "t_send": 2.5,
        "window": 42,
        "t_start": 4.0,
        "t_end": 4.125,
        "values": {"speed": 12.5, "phi": -1.0},
        "n_spikes": 17,
        "truncated": 0,
        "in_seq": 11,
        "in_t_send": 1.25,
        "latency_ms": 0.75,
    }

    act = decode_output(GOLDEN["activity"][1])
    times, neurons = act.pop("times"), act.pop("neurons")
    assert act == {
        "topic": "activity",
        "v": 1,
        "seq": 2,
        "t_send": 2.75,
        "window": 43,
        "t_start": 4.125,
        "n": 1,
        "in_seq": 11,
        "in_t_send": 1.25,
    }
    assert (times.dtype.str, times.tolist()) == ("<f8", [4.25])
    assert (neurons.dtype.str, neurons.tolist()) == ("<i4", [2])

    status = decode_output(GOLDEN["status"][1])
    assert status == {
        "topic": "status",
        "v": 1,
        "seq": 3,
        "t_send": 3.0,
        "uptime_s": 60.0,
        "backend": "cpu",
        "model": {"sha256": "ab", "step": 5},
        "windows": 600,
        "deadline_misses": 0,
        "latency_ms": {"p50": 0.5, "p99": 1.0, "p99.9": 2.0, "max": 4.0},
        "counters": {"msg_spikes": 9},
    }
    reply = decode_output(GOLDEN["status_reply"][1])
    assert (reply["in_seq"], reply["in_t_send"], reply["in_src"]) == (16, 3.5, "rig-1")
    window = decode_output(GOLDEN["window"][1])
    assert (window["window"], window["n"], window["times"].tolist(), window["neurons"].tolist()) == (3, 1, [0.175], [4])
    describe = decode_output(GOLDEN["describe"][1])
    assert describe["topic"] == "describe" and describe["neurons"] == {"n": 2, "unit_ids": [7, 300]}

    for name in OUTPUT_GOLDEN:  # outputs are not inputs
        with pytest.raises(ProtocolError) as e:
            decode_input(GOLDEN[name][1])
        assert e.value.reason == "unknown_topic"


def test_unknown_header_keys_are_ignored() -> None:
    """Forward compatibility (spec: 'Unknown keys are ignored'): extra keys of any msgpack type, appended."""
    topic, header, *bufs = GOLDEN["spikes_index"][1]
    h = msgpack.unpackb(header)
    h.update({"future": {"nested": [1, 2.5, None, True]}, "zz": "x", "seq2": -3})
    msg = decode_input([topic, msgpack.packb(h, use_bin_type=True), *bufs])
    assert _fields(msg) == GOLDEN_PARSED["spikes_index"]


# ================================================================================================ round trips
_finite = st.floats(allow_nan=False, allow_infinity=False)
_seq = st.integers(0, 2**64 - 1)  # msgpack's whole unsigned range


def _same_bits(a: np.ndarray, b: np.ndarray, dtype: str) -> bool:
    """Equal values *and* bits (keeps -0.0 vs 0.0 apart), in the wire dtype."""
    return a.dtype == np.dtype(dtype) and a.tobytes() == np.ascontiguousarray(b, dtype=dtype).tobytes()


@st.composite
def _spikes(draw: st.DrawFn, unit_ids: bool) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 200))
    times = draw(hnp.arrays(np.float64, n, elements=_finite))
    neurons = draw(hnp.arrays(np.int64 if unit_ids else np.int32, n))
    return times, neurons


@ROUNDTRIP
@given(seq=_seq, t_send=_finite, data=st.data(), unit_ids=st.booleans())
def test_roundtrip_spikes(seq: int, t_send: float, data: st.DataObject, unit_ids: bool) -> None:
    times, neurons = data.draw(_spikes(unit_ids))
    msg = decode_input(encode_spikes(seq, t_send, times, neurons, unit_ids=unit_ids))
    assert isinstance(msg, Spikes) and (msg.seq, msg.t_send, msg.unit_ids) == (seq, t_send, unit_ids)
    assert _same_bits(msg.times, times, "<f8")
    assert _same_bits(msg.neurons, neurons, "<i8" if unit_ids else "<i4")


@ROUNDTRIP
@given(
    seq=_seq,
    t_send=_finite,
    t=_finite,
    pixels=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)),
)
def test_roundtrip_frame(seq: int, t_send: float, t: float, pixels: np.ndarray) -> None:
    msg = decode_input(encode_frame(seq, t_send, t, pixels))
    assert isinstance(msg, Frame) and (msg.seq, msg.t_send, msg.t) == (seq, t_send, t)
    assert msg.pixels.shape == pixels.shape and _same_bits(msg.pixels, pixels, "u1")


@ROUNDTRIP
@given(
    seq=_seq,
    t_send=_finite,
    name=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    n=st.integers(0, 100),
    data=st.data(),
)
def test_roundtrip_behavior(seq: int, t_send: float, name: str, n: int, data: st.DataObject) -> None:
    # any float64 value travels, NaN included (the daemon, not the decoder, judges sample values)
    times = data.draw(hnp.arrays(np.float64, n, elements=_finite))
    values = data.draw(hnp.arrays(np.float64, n))
    msg = decode_input(encode_behavior(seq, t_send, name, times, values))
    assert isinstance(msg, BehaviorSamples) and (msg.seq, msg.t_send, msg.name) == (seq, t_send, name)
    assert _same_bits(msg.times, times, "<f8") and _same_bits(msg.values, values, "<f8")


@ROUNDTRIP
@given(seq=_seq, t_send=_finite, t=_finite)
def test_roundtrip_clock(seq: int, t_send: float, t: float) -> None:
    msg = decode_input(encode_clock(seq, t_send, t))
    assert msg == Clock(seq, t_send, t) and math.copysign(1, msg.t) == math.copysign(1, t)


@ROUNDTRIP
@given(seq=_seq, t_send=_finite, cmd=st.sampled_from(list(CONTROL_COMMANDS)), start=st.none() | _finite)
def test_roundtrip_control(seq: int, t_send: float, cmd: str, start: float | None) -> None:
    assert decode_input(encode_control(seq, t_send, cmd, start)) == Control(seq, t_send, cmd, start)


@ROUNDTRIP
@given(src=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64), seq=_seq)
def test_roundtrip_src(src: str, seq: int) -> None:
    """The optional producer name travels on every input topic."""
    for frames in (
        encode_spikes(seq, 0.0, np.zeros(1), np.zeros(1), src=src),
        encode_clock(seq, 0.0, 1.0, src=src),
        encode_frame(seq, 0.0, 1.0, np.zeros((1, 1), np.uint8), src=src),
        encode_behavior(seq, 0.0, "x", np.zeros(1), np.zeros(1), src=src),
        encode_control(seq, 0.0, "status", src=src),
    ):
        assert decode_input(frames).src == src


@ROUNDTRIP
@given(seq=_seq, t_send=_finite, window=st.integers(0, 2**40), t_start=_finite, data=st.data())
def test_roundtrip_activity(seq: int, t_send: float, window: int, t_start: float, data: st.DataObject) -> None:
    times, neurons = data.draw(_spikes(unit_ids=False))
    out = decode_output(encode_activity(seq, t_send, window, t_start, times, neurons, 5, 0.25))
    assert (out["topic"], out["seq"], out["t_send"], out["window"], out["t_start"], out["n"]) == (
        "activity",
        seq,
        t_send,
        window,
        t_start,
        len(times),
    )
    assert _same_bits(out["times"], times, "<f8") and _same_bits(out["neurons"], neurons, "<i4")


# ================================================================================================ hostile corpus
# The corpus and its builders (head, mk, spk, frm, clk, ...) live in rtdecode.wire.hostile.


@pytest.mark.parametrize("reason, build", [pytest.param(r, b, id=i) for i, r, b in HOSTILE])
def test_hostile_input(reason: str, build: Callable[[], list[bytes]]) -> None:
    frames = build()
    try:
        decode_input(frames)
    except ProtocolError as e:
        assert e.reason == reason, str(e)
        assert str(e).startswith(f"{reason}: ") and len(str(e)) < 500  # log lines stay short
    except Exception as e:
        pytest.fail(f"{type(e).__name__} escaped decode_input: {e}")
    else:
        pytest.fail(f"accepted a hostile message, expected {reason}")


def test_hostile_corpus_covers_every_reason() -> None:
    assert {r for _, r, _ in HOSTILE} == {
        "malformed",
        "bad_version",
        "unknown_topic",
        "too_large",
        "bad_buffer",
        "bad_frame",
    }


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([b"activity", msgpack.packb(head(n=2)), f8(1.0, 2.0)], id="activity_one_buffer"),
        pytest.param([b"activity", msgpack.packb(head(n=1)), f8(1.0), i4(1) + b"\0"], id="activity_long_buffer"),
        pytest.param([b"activity", msgpack.packb(head(n=-1)), b"", b""], id="activity_negative_n"),
        pytest.param([b"decode", b"\xc1"], id="decode_not_msgpack"),
        pytest.param([b"status", msgpack.packb(head(v=2))], id="status_v2"),
    ],
)
def test_hostile_output(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        decode_output(frames)


def test_header_limit_is_inclusive() -> None:
    """A header of exactly 64 KiB is accepted; one byte more is `too_large` (spec: 'larger than 64 KiB')."""
    base = len(msgpack.packb(head(t=1.0, pad="")))
    pad = MAX_HEADER_BYTES - base - 2  # the str header grows from 1 (fixstr) to 3 bytes (str16) once >= 32 chars
    header = msgpack.packb(head(t=1.0, pad="x" * pad))
    assert len(header) == MAX_HEADER_BYTES
    assert isinstance(decode_input([b"clock", header]), Clock)
    with pytest.raises(ProtocolError) as e:
        decode_input([b"clock", msgpack.packb(head(t=1.0, pad="x" * (pad + 1)))])
    assert e.value.reason == "too_large"


def test_spike_limit_is_inclusive() -> None:
    n = MAX_SPIKES
    msg = decode_input(mk(b"spikes", head(n=n), bytes(8 * n), bytes(4 * n)))
    assert isinstance(msg, Spikes) and len(msg.times) == n


def test_frame_limit_is_inclusive() -> None:
    msg = decode_input(frm(pixels=bytes(MAX_FRAME_BYTES), h=4096, w=4096))
    assert isinstance(msg, Frame) and msg.pixels.shape == (4096, 4096)


def test_empty_bin_and_ext_pass_the_length_limit() -> None:
    """max_bin_len=0 / max_ext_len=0 still let *empty* bin/ext through msgpack: harmless under an unknown key
    (ignored), `malformed` under a known one (type check)."""
    assert isinstance(decode_input(mk(b"clock", head(t=1.0, x=b"", y=msgpack.ExtType(5, b"")))), Clock)
    for bad in (clk(t=b""), clk(seq=b""), spk(ids=b""), clk(t=msgpack.ExtType(1, b""))):
        with pytest.raises(ProtocolError) as e:
            decode_input(bad)
        assert e.value.reason == "malformed"
    with pytest.raises(ProtocolError) as e:
        decode_input(clk(v=b""))
    assert e.value.reason == "malformed"  # v must be an integer


def test_nested_unknown_key_below_msgpack_limit_is_ignored() -> None:
    assert isinstance(decode_input([b"clock", raw_clock_header(extra=b"\xa1x" + nested(1000))]), Clock)


def test_decoder_does_not_judge_spike_values() -> None:
    """Non-finite spike times and out-of-range neuron indices are the daemon's business (bad_time, bad_neuron:
    it drops those spikes, not the message), so the decoder passes them through."""
    msg = decode_input(mk(b"spikes", head(n=3), f8(math.nan, math.inf, 1.0), i4(-1, 2**31 - 1, 0)))
    assert isinstance(msg, Spikes) and np.isnan(msg.times[0]) and msg.neurons.tolist() == [-1, 2**31 - 1, 0]


# The spec's types are enforced: seq is an int >= 0 and v an int (not a bool or a float equal to 1).
def test_spec_negative_seq_rejected() -> None:
    with pytest.raises(ProtocolError):
        decode_input(clk(seq=-1))


@pytest.mark.parametrize("v", [True, 1.0])
def test_spec_v_must_be_int(v: Any) -> None:
    with pytest.raises(ProtocolError):
        decode_input(clk(v=v))


# ================================================================================================ fuzz
def _check_input(frames: list[bytes]) -> None:
    """decode_input must return a well-formed message or raise ProtocolError; nothing else."""
    try:
        msg = decode_input(frames)
    except ProtocolError as e:
        assert e.reason in {"malformed", "bad_version", "unknown_topic", "too_large", "bad_buffer", "bad_frame"}
        return
    assert type(msg.seq) is int and type(msg.t_send) is float
    if isinstance(msg, Spikes):
        assert msg.times.dtype == "<f8" and msg.neurons.dtype == ("<i8" if msg.unit_ids else "<i4")
        assert msg.times.shape == msg.neurons.shape and msg.times.ndim == 1 and len(msg.times) <= MAX_SPIKES
    elif isinstance(msg, Frame):
        assert msg.pixels.dtype == np.uint8 and msg.pixels.ndim == 2 and min(msg.pixels.shape) > 0
        assert msg.pixels.nbytes <= MAX_FRAME_BYTES and math.isfinite(msg.t)
    elif isinstance(msg, BehaviorSamples):
        assert type(msg.name) is str and msg.times.dtype == msg.values.dtype == "<f8"
        assert msg.times.shape == msg.values.shape and len(msg.times) <= MAX_BEHAVIOR_SAMPLES
    elif isinstance(msg, Clock):
        assert type(msg.t) is float and math.isfinite(msg.t)
    elif isinstance(msg, Control):
        assert msg.cmd in CONTROL_COMMANDS and (msg.start is None or math.isfinite(msg.start))
    else:
        pytest.fail(f"decode_input returned {type(msg).__name__}")


def _check_output(frames: list[bytes]) -> None:
    try:
        out = decode_output(frames)
    except ProtocolError:
        return
    assert isinstance(out, dict) and out["topic"] in OUTPUT_TOPICS


_GOLDEN_FRAMES = [GOLDEN[name][1] for name in INPUT_GOLDEN + OUTPUT_GOLDEN]
_TOPICS = [b"spikes", b"frame", b"behavior", b"clock", b"control", b"decode", b"activity", b"status"]


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_fuzz_random_frames(frames: list[bytes]) -> None:
    _check_input(frames)
    _check_output(frames)


@FUZZ
@given(st.sampled_from(_TOPICS), st.binary(max_size=64), st.lists(st.binary(max_size=32), max_size=3))
def test_fuzz_random_header_bytes(topic: bytes, header: bytes, buffers: list[bytes]) -> None:
    _check_input([topic, header, *buffers])
    _check_output([topic, header, *buffers])


# Any msgpack value the decoder can meet (bin/ext included, to exercise the length limits).
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=2)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=2)),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=6,
)
_KEYS = ["v", "seq", "t_send", "src", "n", "ids", "t", "h", "w", "dtype", "name", "cmd", "start"]


@st.composite
def _structured(draw: st.DrawFn) -> list[bytes]:
    """A golden message whose header has 1-3 keys replaced by any msgpack value or removed, extra keys added,
    and sometimes a buffer replaced: valid msgpack maps that get past the first checks."""
    topic, raw, *buffers = draw(st.sampled_from(_GOLDEN_FRAMES))
    header = msgpack.unpackb(raw)
    for key in draw(st.lists(st.sampled_from(_KEYS), min_size=1, max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            header.pop(key, None)
        else:
            header[key] = draw(_values)
    header.update(draw(st.dictionaries(st.text(max_size=3), _values, max_size=2)))
    if buffers and draw(st.booleans()):
        i = draw(st.integers(0, len(buffers) - 1))
        buffers[i] = draw(st.binary(max_size=24) | st.sampled_from([b"", bytes(4), bytes(8), bytes(16)]))
    return [topic, msgpack.packb(header, use_bin_type=True), *buffers]


@FUZZ
@given(_structured())
def test_fuzz_structured_headers(frames: list[bytes]) -> None:
    _check_input(frames)
    _check_output(frames)


@FUZZ
@given(st.sampled_from(_GOLDEN_FRAMES), st.randoms(use_true_random=False))
def test_fuzz_mutated_golden(frames: list[bytes], rng: random.Random) -> None:
    mutated = mutate(frames, rng)
    _check_input(mutated)
    _check_output(mutated)


def test_fuzz_mutated_golden_seeded() -> None:
    """Many cheap mutations without hypothesis' per-example overhead (fixed seed: reproducible in CI)."""
    rng = random.Random(20240601)
    for _ in range(20_000):
        mutated = mutate(rng.choice(_GOLDEN_FRAMES), rng)
        _check_input(mutated)
        _check_output(mutated)
