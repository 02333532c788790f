"""Hostile wire messages: the corpus and generators shared by the protocol tests, the daemon fuzz test and
`tools/fuzz_protocol.py`.

It lives in the package (as numpy.testing does) because tools/ cannot import tests/; it needs only numpy and
msgpack. Three parts:

* `HOSTILE`: hand-written messages, each with the reason counter docs/protocol.md gives it (tests/test_protocol.py
  checks every one against `decode_input`);
* `bad_message(rng, templates)`: a random bad message of one of the fuzz categories (corpus entry, random bytes,
  byte mutation, truncation, wrong-typed field, valid on the wire but wrong for the model, wrong version,
  oversized), mostly built from valid templates so every input topic is covered;
* `expected_rejection(frames, ...)`: the reason the daemon will count for a message, or None when it would accept
  it. A fuzzer sends only messages with a reason: a mutation that happens to stay valid (a flipped bit in a spike
  time) would change the decoder's state, and is not a bad message.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from rtdecode.wire.protocol import (
    MAX_BEHAVIOR_SAMPLES,
    MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    MAX_SPIKES,
    BehaviorSamples,
    Frame,
    ProtocolError,
    decode_input,
)

__all__ = [
    "DROP",
    "head",
    "mk",
    "f8",
    "i4",
    "spk",
    "frm",
    "beh",
    "clk",
    "ctl",
    "nested",
    "raw_clock_header",
    "HOSTILE",
    "HUGE",
    "REJECT_REASONS",
    "mutate",
    "bad_message",
    "expected_rejection",
]

# every reason a whole message can be rejected for (docs/protocol.md); the daemon counts each under its name
REJECT_REASONS = (
    "malformed",
    "bad_version",
    "unknown_topic",
    "too_large",
    "bad_buffer",
    "bad_frame",
    "unknown_behavior",
)

DROP = object()


def head(**fields: Any) -> dict[str, Any]:
    """A valid common header (v, seq, t_send) plus `fields`; a field set to DROP is removed."""
    h = {"v": 1, "seq": 0, "t_send": 0.0, **fields}
    return {k: v for k, v in h.items() if v is not DROP}


def mk(topic: bytes, header: Any, *buffers: bytes) -> list[bytes]:
    return [topic, msgpack.packb(header, use_bin_type=True), *buffers]


def f8(*x: float) -> bytes:
    return np.array(x, "<f8").tobytes()


def i4(*x: int) -> bytes:
    return np.array(x, "<i4").tobytes()


def spk(**fields: Any) -> list[bytes]:
    """A 2-spike message with valid buffers and header `fields` on top."""
    return mk(b"spikes", head(**{"n": 2, **fields}), f8(1.0, 2.0), i4(0, 1))


def frm(pixels: bytes = bytes(6), **fields: Any) -> list[bytes]:
    return mk(b"frame", head(**{"t": 1.0, "h": 2, "w": 3, "dtype": "uint8", **fields}), pixels)


def beh(times: bytes = f8(1.0, 2.0), values: bytes = f8(3.0, 4.0), **fields: Any) -> list[bytes]:
    return mk(b"behavior", head(**{"name": "speed", "n": 2, **fields}), times, values)


def clk(**fields: Any) -> list[bytes]:
    return mk(b"clock", head(**{"t": 1.0, **fields}))


def ctl(**fields: Any) -> list[bytes]:
    return mk(b"control", head(**{"cmd": "reset", **fields}))


def nested(depth: int, leaf: bytes = b"\x01") -> bytes:
    return b"\x91" * depth + leaf  # fixarray of 1 element, `depth` times


def raw_clock_header(v_raw: bytes = b"\x01", extra: bytes = b"") -> bytes:
    """A clock header written byte by byte: {"v": <v_raw>, "seq": 0, "t_send": 0, "t": 1} + optional extra entry."""
    entries = [b"\xa1v" + v_raw, b"\xa3seq\x00", b"\xa6t_send\x00", b"\xa1t\x01"] + ([extra] if extra else [])
    return bytes([0x80 | len(entries)]) + b"".join(entries)


# (id, reason, builder): builders are called in the test so the 16 MiB case is only allocated while it runs.
HOSTILE: list[tuple[str, str, Callable[[], list[bytes]]]] = [
    # --- framing
    ("empty_list", "malformed", lambda: []),
    ("one_frame", "malformed", lambda: [b"clock"]),
    ("non_ascii_topic", "malformed", lambda: [b"sp\xc3\xafkes", clk()[1]]),
    ("topic_high_byte", "malformed", lambda: [b"clock\xff", clk()[1]]),
    ("empty_topic", "unknown_topic", lambda: [b"", clk()[1]]),
    ("unknown_topic", "unknown_topic", lambda: [b"spike", clk()[1]]),
    ("topic_with_nul", "unknown_topic", lambda: [b"clock\x00", clk()[1]]),
    ("output_topic_as_input", "unknown_topic", lambda: [b"decode", clk()[1]]),
    # --- header: not a msgpack map
    ("header_empty", "malformed", lambda: [b"clock", b""]),
    ("header_not_msgpack", "malformed", lambda: [b"clock", b"\xc1"]),  # 0xc1: never used in msgpack
    ("header_json", "malformed", lambda: [b"clock", b'{"v": 1, "seq": 0, "t_send": 0, "t": 1}']),
    ("header_truncated", "malformed", lambda: [b"clock", clk()[1][:-1]]),
    ("header_trailing_bytes", "malformed", lambda: [b"clock", clk()[1] + b"\x00"]),
    ("header_a_list", "malformed", lambda: mk(b"clock", [1, 0, 0.0, 1.0])),
    ("header_an_int", "malformed", lambda: mk(b"clock", 1)),
    ("header_nil", "malformed", lambda: mk(b"clock", None)),
    ("header_int_key", "malformed", lambda: [b"clock", raw_clock_header(extra=b"\x01\x01")]),
    ("header_bad_utf8_str", "malformed", lambda: [b"clock", raw_clock_header(extra=b"\xa1x\xa2\xff\xfe")]),
    ("header_array_len_2e32", "malformed", lambda: [b"clock", raw_clock_header(extra=b"\xa1x\xdd\xff\xff\xff\xff")]),
    ("header_map_len_2e32", "malformed", lambda: [b"clock", b"\xdf\xff\xff\xff\xff"]),
    ("header_str_len_2e32", "malformed", lambda: [b"clock", raw_clock_header(extra=b"\xa1x\xdb\xff\xff\xff\xff")]),
    # bin/ext: the decoder passes max_bin_len=0 / max_ext_len=0 to msgpack, so any *non-empty* bin or ext is
    # refused by msgpack itself (ValueError -> malformed). Empty ones pass msgpack; see test_empty_bin_and_ext.
    ("header_bin_value", "malformed", lambda: mk(b"clock", head(t=1.0, x=b"ab"))),
    ("header_bin_as_t", "malformed", lambda: mk(b"clock", head(t=b"\x00" * 8))),
    ("header_ext_value", "malformed", lambda: mk(b"clock", head(t=1.0, x=msgpack.ExtType(5, b"abcd")))),
    ("header_timestamp_ext", "malformed", lambda: mk(b"clock", head(t=1.0, x=msgpack.Timestamp(1, 0)))),
    ("header_bin_key", "malformed", lambda: [b"clock", raw_clock_header(extra=b"\xc4\x01k\x01")]),
    # nesting: msgpack's C unpacker stops at depth 1024 (StackError, a ValueError)
    ("header_nested_2000", "malformed", lambda: [b"clock", raw_clock_header(extra=b"\xa1x" + nested(2000))]),
    (
        "header_nested_map_2000",
        "malformed",
        lambda: [b"clock", raw_clock_header(extra=b"\xa1x" + b"\x81\xa1k" * 2000 + b"\x01")],
    ),
    # v just under that depth: the error message once repr()'d it -> RecursionError (fixed with reprlib)
    ("v_nested_1000", "malformed", lambda: [b"clock", raw_clock_header(v_raw=nested(1000))]),
    ("v_nested_1023", "malformed", lambda: [b"clock", raw_clock_header(v_raw=nested(1023))]),
    ("header_over_64KiB", "too_large", lambda: mk(b"clock", head(t=1.0, pad="x" * MAX_HEADER_BYTES))),
    ("header_over_64KiB_garbage", "too_large", lambda: [b"clock", b"\xc1" * (MAX_HEADER_BYTES + 1)]),
    # --- common keys
    ("missing_v", "malformed", lambda: clk(v=DROP)),
    ("v_2", "bad_version", lambda: clk(v=2)),
    ("v_0", "bad_version", lambda: clk(v=0)),
    ("v_str_1", "malformed", lambda: clk(v="1")),
    ("v_nil", "malformed", lambda: clk(v=None)),
    ("v_2_unknown_topic", "bad_version", lambda: [b"nope", clk(v=2)[1]]),  # version is checked first
    ("missing_seq", "malformed", lambda: clk(seq=DROP)),
    ("seq_bool", "malformed", lambda: clk(seq=True)),
    ("seq_float", "malformed", lambda: clk(seq=1.0)),
    ("seq_str", "malformed", lambda: clk(seq="1")),
    ("missing_t_send", "malformed", lambda: clk(t_send=DROP)),
    ("t_send_str", "malformed", lambda: clk(t_send="0.5")),
    ("t_send_bool", "malformed", lambda: clk(t_send=False)),
    ("src_int", "malformed", lambda: clk(src=7)),
    ("src_empty", "malformed", lambda: clk(src="")),
    ("src_too_long", "malformed", lambda: clk(src="x" * 65)),
    ("src_bytes", "malformed", lambda: clk(src=b"")),
    # --- spikes
    ("spikes_missing_n", "malformed", lambda: spk(n=DROP)),
    ("spikes_negative_n", "malformed", lambda: mk(b"spikes", head(n=-1), b"", b"")),
    ("spikes_n_float", "malformed", lambda: spk(n=2.0)),
    ("spikes_n_bool", "malformed", lambda: mk(b"spikes", head(n=True), f8(1.0), i4(0))),
    (
        "spikes_n_too_large",
        "too_large",
        lambda: mk(b"spikes", head(n=MAX_SPIKES + 1), bytes(8 * (MAX_SPIKES + 1)), bytes(4 * (MAX_SPIKES + 1))),
    ),
    ("spikes_n_uint64_max", "too_large", lambda: spk(n=2**64 - 1)),
    ("spikes_ids_name", "malformed", lambda: spk(ids="name")),
    ("spikes_ids_int", "malformed", lambda: spk(ids=1)),
    ("spikes_one_buffer", "bad_buffer", lambda: spk()[:3]),
    ("spikes_three_buffers", "bad_buffer", lambda: spk() + [b""]),
    ("spikes_times_one_byte_short", "bad_buffer", lambda: mk(b"spikes", head(n=2), f8(1.0, 2.0)[:-1], i4(0, 1))),
    ("spikes_times_one_byte_long", "bad_buffer", lambda: mk(b"spikes", head(n=2), f8(1.0, 2.0) + b"\0", i4(0, 1))),
    ("spikes_neurons_one_byte_short", "bad_buffer", lambda: mk(b"spikes", head(n=2), f8(1.0, 2.0), i4(0, 1)[:-1])),
    ("spikes_neurons_one_byte_long", "bad_buffer", lambda: mk(b"spikes", head(n=2), f8(1.0, 2.0), i4(0, 1) + b"\0")),
    ("spikes_unit_ids_int32_buffer", "bad_buffer", lambda: spk(ids="unit")),  # unit IDs are int64
    ("spikes_n_disagrees_with_buffers", "bad_buffer", lambda: spk(n=3)),
    # --- frame
    ("frame_h_w_mismatch", "bad_buffer", lambda: frm(w=4)),  # 2x4 header, 6-byte buffer: a buffer-size error
    ("frame_dtype_uint16", "bad_frame", lambda: frm(pixels=bytes(12), dtype="uint16")),
    ("frame_missing_dtype", "malformed", lambda: frm(dtype=DROP)),
    ("frame_h_zero", "bad_frame", lambda: frm(pixels=b"", h=0)),
    ("frame_w_negative", "bad_frame", lambda: frm(w=-3)),
    ("frame_h_str", "malformed", lambda: frm(h="2")),
    ("frame_inf_t", "malformed", lambda: frm(t=math.inf)),
    ("frame_nan_t", "malformed", lambda: frm(t=math.nan)),
    ("frame_no_buffer", "bad_buffer", lambda: frm()[:2]),
    ("frame_two_buffers", "bad_buffer", lambda: frm() + [b""]),
    ("frame_over_16MiB", "bad_frame", lambda: frm(pixels=bytes(MAX_FRAME_BYTES + 1), h=1, w=MAX_FRAME_BYTES + 1)),
    ("frame_h_w_huge", "bad_buffer", lambda: frm(h=2**63, w=2**63)),
    # --- behavior
    ("behavior_missing_name", "malformed", lambda: beh(name=DROP)),
    ("behavior_name_int", "malformed", lambda: beh(name=3)),
    ("behavior_missing_n", "malformed", lambda: beh(n=DROP)),
    ("behavior_n_too_large", "too_large", lambda: beh(n=MAX_BEHAVIOR_SAMPLES + 1)),
    ("behavior_values_shorter_than_times", "bad_buffer", lambda: beh(values=f8(3.0))),
    ("behavior_times_shorter_than_values", "bad_buffer", lambda: beh(times=f8(1.0))),
    ("behavior_one_buffer", "bad_buffer", lambda: beh()[:3]),
    # --- clock
    ("clock_nan_t", "malformed", lambda: clk(t=math.nan)),
    ("clock_inf_t", "malformed", lambda: clk(t=-math.inf)),
    ("clock_missing_t", "malformed", lambda: clk(t=DROP)),
    ("clock_t_str", "malformed", lambda: clk(t="1.0")),
    ("clock_t_nil", "malformed", lambda: clk(t=None)),
    ("clock_with_buffer", "bad_buffer", lambda: clk() + [b""]),
    # --- control
    ("control_unknown_cmd", "malformed", lambda: ctl(cmd="stop")),
    ("control_cmd_case", "malformed", lambda: ctl(cmd="RESET")),
    ("control_missing_cmd", "malformed", lambda: ctl(cmd=DROP)),
    ("control_cmd_list", "malformed", lambda: ctl(cmd=["reset"])),
    ("control_start_nan", "malformed", lambda: ctl(start=math.nan)),
    ("control_start_str", "malformed", lambda: ctl(start="0")),
    ("control_start_nil", "malformed", lambda: ctl(start=None)),
    ("control_with_buffer", "bad_buffer", lambda: ctl() + [b"\x00"]),
]


def mutate(frames: list[bytes], rng: random.Random) -> list[bytes]:
    """One to three random edits: truncate, flip, insert or delete bytes in a frame; drop or duplicate a frame."""
    frames = list(frames)
    for _ in range(rng.randint(1, 3)):
        if not frames:
            frames.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))))
            continue
        i = rng.randrange(len(frames))
        f = bytearray(frames[i])
        op = rng.randrange(6)
        if op == 0:
            del f[rng.randint(0, len(f)) :]
        elif op == 1 and f:
            f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
        elif op == 2:
            pos = rng.randint(0, len(f))
            f[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif op == 3 and f:
            f[rng.randrange(len(f))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCB, 0xD3, 0xDD, 0xFF])
        elif op == 4:
            frames.pop(i)
            continue
        else:
            frames.insert(i, bytes(f))
        frames[i] = bytes(f)
    return frames


HUGE = {"spikes_n_too_large", "frame_over_16MiB"}  # corpus entries over 512 KiB: a fuzzer sends them sparingly
CATEGORIES = ("corpus", "random", "mutated", "truncated", "wrong_type", "wrong_model", "wrong_version", "oversized")
_WRONG = [None, True, "x", "", -1, 2**64 - 1, 1.5, float("nan"), [1], {"a": 1}, b"", "\u00e9" * 70]
_KEYS = ["v", "seq", "t_send", "src", "n", "ids", "t", "h", "w", "dtype", "name", "cmd", "start"]


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(rng.randint(0, n))


def _with_header(frames: list[bytes], edit: Callable[[dict[str, Any]], None]) -> list[bytes]:
    header = msgpack.unpackb(frames[1])
    edit(header)
    return [frames[0], msgpack.packb(header, use_bin_type=True), *frames[2:]]


def bad_message(rng: random.Random, templates: list[list[bytes]], huge: bool = False) -> tuple[str, list[bytes]]:
    """(category, frames): a candidate bad message. Not every candidate is bad: check `expected_rejection`.

    Args:
        templates: valid messages to start from (one per input topic at least, so every topic is covered).
        huge: allow messages over 512 KiB (16 MiB frames); off, an oversized message stays under 1 MiB.
    """
    category = rng.choice(CATEGORIES)
    base = list(rng.choice(templates))
    if category == "corpus":
        entries = [e for e in HOSTILE if huge or e[0] not in HUGE]
        return category, rng.choice(entries)[2]()
    if category == "random":
        topic = rng.choice([b"spikes", b"frame", b"behavior", b"clock", b"control", _random_bytes(rng, 8)])
        return category, [topic, _random_bytes(rng, 48), *(_random_bytes(rng, 32) for _ in range(rng.randint(0, 3)))]
    if category == "mutated":
        return category, mutate(base, rng)
    if category == "truncated":
        i = rng.randrange(len(base))
        cut = (
            base[:i] if rng.random() < 0.3 else base[:i] + [base[i][: rng.randrange(len(base[i]) or 1)]] + base[i + 1 :]
        )
        return category, cut
    if category == "wrong_type":

        def edit(h: dict[str, Any]) -> None:
            h[rng.choice([k for k in _KEYS if k in h] or _KEYS)] = rng.choice(_WRONG)

        return category, _with_header(base, edit)
    if category == "wrong_model":  # valid on the wire, wrong for a model: behavior names, frame sizes
        if rng.random() < 0.5:
            name = rng.choice(["pupil", "x" * 64, "THETA", "\u00e9", " "])
            return category, mk(b"behavior", head(seq=rng.randrange(9), name=name, n=1), f8(1.0), f8(0.5))
        h, w = rng.randint(1, 80), rng.randint(1, 80)
        return category, mk(b"frame", head(seq=rng.randrange(9), t=1.0, h=h, w=w, dtype="uint8"), bytes(h * w))
    if category == "wrong_version":
        v = rng.choice([0, 2, 3, 255, 2**32, -1, 2**64 - 1])
        return category, _with_header(base, lambda h: h.update(v=v))
    # oversized: a header past 64 KiB, or more elements than a message may hold
    if rng.random() < 0.5 or not huge:
        return category, _with_header(base, lambda h: h.update(pad="x" * (MAX_HEADER_BYTES + rng.randint(1, 64))))
    n = rng.choice([MAX_SPIKES + 1, MAX_BEHAVIOR_SAMPLES + 1])
    return category, rng.choice(
        [
            mk(b"spikes", head(n=n), bytes(8 * n), bytes(4 * n)),
            frm(pixels=bytes(MAX_FRAME_BYTES + 1), h=1, w=MAX_FRAME_BYTES + 1),
        ]
    )


def expected_rejection(frames: list[bytes], frame_shape: tuple[int, int] | None, behaviors: set[str]) -> str | None:
    """The reason counter a daemon serving a model with this frame size and these behavior inputs counts for
    `frames`, or None if it accepts the message. Mirrors `Daemon._validate` after the wire checks."""
    try:
        msg = decode_input(frames)
    except ProtocolError as e:
        return e.reason
    if isinstance(msg, Frame) and frame_shape is not None and msg.pixels.shape != tuple(frame_shape):
        return "bad_frame"
    if isinstance(msg, BehaviorSamples) and msg.name not in behaviors:
        return "unknown_behavior"
    return None
