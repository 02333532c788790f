"""The wire protocol (docs/protocol.md, version 1.1): encoding and strict decoding of every message.

Messages are ZeroMQ multipart `[topic, msgpack header, raw little-endian buffers...]`. Decoding validates every
field named in the spec and raises `ProtocolError(reason, detail)` with the reason counter the daemon uses, so a
malformed packet costs one exception and a counter increment, never the process. Arrays are read with
`np.frombuffer` (no copy) and only after their sizes have been checked against the header.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

VERSION = 1  # the header's `v`: the major version; a daemon rejects every other (`bad_version`)
PROTOCOL = "1.1"  # major.minor; minor versions only add (topics, keys, commands), announced in `describe`
MAX_HEADER_BYTES = 64 * 1024
MAX_SPIKES = 65_536
MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_BEHAVIOR_SAMPLES = 65_536
MAX_SRC_CHARS = 64

INPUT_TOPICS = ("spikes", "frame", "behavior", "clock", "control")
OUTPUT_TOPICS = ("decode", "activity", "status", "describe", "window")
CONTROL_COMMANDS = ("reset", "status", "describe")

__all__ = [
    "VERSION",
    "PROTOCOL",
    "CONTROL_COMMANDS",
    "ProtocolError",
    "Spikes",
    "Frame",
    "BehaviorSamples",
    "Clock",
    "Control",
    "InputMessage",
    "encode_spikes",
    "encode_frame",
    "encode_behavior",
    "encode_clock",
    "encode_control",
    "decode_input",
    "encode_decode",
    "encode_activity",
    "encode_status",
    "encode_describe",
    "encode_window",
    "decode_output",
]


class ProtocolError(ValueError):
    """An invalid message; `reason` is the counter name from docs/protocol.md.

    `src` and `seq` are the message's producer and sequence number when its common header was valid, so that the
    daemon can count a message rejected for its body as received (no false `seq_gap` on the producer's next one).
    """

    def __init__(self, reason: str, detail: str, src: str | None = None, seq: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.src, self.seq = reason, src, seq


@dataclass(frozen=True)
class Spikes:
    seq: int
    t_send: float
    times: np.ndarray  # (n,) float64 s
    neurons: np.ndarray  # (n,) int32 indices, or int64 unit IDs when unit_ids
    unit_ids: bool = False
    src: str | None = None  # the producer's name (optional header key), for sequence accounting


@dataclass(frozen=True)
class Frame:
    seq: int
    t_send: float
    t: float
    pixels: np.ndarray  # (h, w) uint8
    src: str | None = None  # the producer's name (optional header key), for sequence accounting


@dataclass(frozen=True)
class BehaviorSamples:
    seq: int
    t_send: float
    name: str
    times: np.ndarray
    values: np.ndarray
    src: str | None = None  # the producer's name (optional header key), for sequence accounting


@dataclass(frozen=True)
class Clock:
    seq: int
    t_send: float
    t: float
    src: str | None = None  # the producer's name (optional header key), for sequence accounting


@dataclass(frozen=True)
class Control:
    seq: int
    t_send: float
    cmd: str
    start: float | None = None
    src: str | None = None  # the producer's name (optional header key), for sequence accounting


InputMessage = Spikes | Frame | BehaviorSamples | Clock | Control


# ------------------------------------------------------------------------------------------------- encoding
def _header(seq: int, t_send: float, src: str | None = None, **fields: Any) -> bytes:
    head: dict[str, Any] = {"v": VERSION, "seq": int(seq), "t_send": float(t_send)}
    if src is not None:
        head["src"] = src
    return msgpack.packb({**head, **fields}, use_bin_type=True)


def _le(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def _same_length(a: np.ndarray, b: np.ndarray, what: str) -> int:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} times but {len(b)} values; they must match")
    return len(a)


def encode_spikes(
    seq: int, t_send: float, times: np.ndarray, neurons: np.ndarray, unit_ids: bool = False, src: str | None = None
) -> list[bytes]:
    n = _same_length(times, neurons, "spikes")
    extra = {"ids": "unit"} if unit_ids else {}
    return [
        b"spikes",
        _header(seq, t_send, src, n=n, **extra),
        _le(times, "f8"),
        _le(neurons, "i8" if unit_ids else "i4"),
    ]


def encode_frame(seq: int, t_send: float, t: float, pixels: np.ndarray, src: str | None = None) -> list[bytes]:
    h, w = pixels.shape
    return [b"frame", _header(seq, t_send, src, t=float(t), h=int(h), w=int(w), dtype="uint8"), _le(pixels, "u1")]


def encode_behavior(
    seq: int, t_send: float, name: str, times: np.ndarray, values: np.ndarray, src: str | None = None
) -> list[bytes]:
    n = _same_length(times, values, f"behavior '{name}'")
    return [b"behavior", _header(seq, t_send, src, name=name, n=n), _le(times, "f8"), _le(values, "f8")]


def encode_clock(seq: int, t_send: float, t: float, src: str | None = None) -> list[bytes]:
    return [b"clock", _header(seq, t_send, src, t=float(t))]


def encode_control(
    seq: int, t_send: float, cmd: str, start: float | None = None, src: str | None = None
) -> list[bytes]:
    extra = {} if start is None else {"start": float(start)}
    return [b"control", _header(seq, t_send, src, cmd=cmd, **extra)]


# ------------------------------------------------------------------------------------------------- decoding
def _parse_header(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    if len(frames) < 2:
        raise ProtocolError("malformed", f"expected [topic, header, ...], got {len(frames)} frame(s)")
    try:
        topic = bytes(frames[0]).decode("ascii")
    except UnicodeDecodeError as e:
        raise ProtocolError("malformed", "topic is not ASCII") from e
    raw = frames[1]
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("too_large", f"header of {len(raw)} bytes (limit {MAX_HEADER_BYTES})")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
    except Exception as e:  # msgpack raises several types for garbage
        raise ProtocolError("malformed", f"header is not msgpack ({type(e).__name__})") from e
    if not isinstance(header, dict):
        raise ProtocolError("malformed", "header is not a map")
    if "v" not in header:
        raise ProtocolError("malformed", "header has no protocol version 'v'")
    if not isinstance(header["v"], int) or isinstance(header["v"], bool):
        raise ProtocolError("malformed", f"protocol version 'v' must be an integer, got {type(header['v']).__name__}")
    if header["v"] != VERSION:
        # reprlib: `v` is attacker-controlled; a plain repr of a ~1000-deep nested list raises RecursionError
        # (msgpack's own depth limit is 1024) and a 60 KiB string would flood the log.
        raise ProtocolError(
            "bad_version", f"protocol version {reprlib.repr(header['v'])}, this daemon speaks {VERSION}"
        )
    return topic, header


def _get(header: dict[str, Any], key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in header:
        if default is ...:
            raise ProtocolError("malformed", f"header has no '{key}'")
        return default
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, typ):
        raise ProtocolError("malformed", f"'{key}' must be {getattr(typ, '__name__', typ)}, got {type(value).__name__}")
    return value


def _array(frame: bytes, dtype: str, n: int, what: str) -> np.ndarray:
    dt = np.dtype(dtype).newbyteorder("<")
    if len(frame) != n * dt.itemsize:
        raise ProtocolError("bad_buffer", f"{what}: {len(frame)} bytes for {n} x {dt.itemsize}-byte values")
    return np.frombuffer(frame, dtype=dt)


def _buffers(frames: list[bytes], count: int, topic: str) -> list[bytes]:
    if len(frames) != 2 + count:
        raise ProtocolError("bad_buffer", f"'{topic}' needs {count} buffer(s), got {len(frames) - 2}")
    return frames[2:]


def _count(header: dict[str, Any], limit: int) -> int:
    n = _get(header, "n", int)
    if n < 0:
        raise ProtocolError("malformed", f"'n' must be >= 0, got {n}")
    if n > limit:
        raise ProtocolError("too_large", f"{n} elements in one message (limit {limit})")
    return n


def decode_input(frames: list[bytes]) -> InputMessage:
    """Parse and validate one input message; raises ProtocolError with the reason counter on any violation."""
    topic, h = _parse_header(frames)
    if topic not in INPUT_TOPICS:
        raise ProtocolError("unknown_topic", f"'{topic}' is not an input topic ({', '.join(INPUT_TOPICS)})")
    seq, t_send = _get(h, "seq", int), _finite(_get(h, "t_send", (int, float)))
    if seq < 0:
        raise ProtocolError("malformed", f"'seq' must be >= 0, got {seq}")
    src = _get(h, "src", str, None)
    if src is not None and not 0 < len(src) <= MAX_SRC_CHARS:
        raise ProtocolError("malformed", f"'src' must be 1 to {MAX_SRC_CHARS} characters, got {len(src)}")
    try:
        return _decode_body(topic, h, frames, seq, t_send, src)
    except ProtocolError as e:
        e.src, e.seq = src, seq  # the common header was valid: say whose message this was
        raise


def _decode_body(
    topic: str, h: dict[str, Any], frames: list[bytes], seq: int, t_send: float, src: str | None
) -> InputMessage:
    if topic == "spikes":
        n = _count(h, MAX_SPIKES)
        ids = _get(h, "ids", str, "index")
        if ids not in ("index", "unit"):
            raise ProtocolError("malformed", f"'ids' must be 'index' or 'unit', got {ids!r}")
        t_buf, n_buf = _buffers(frames, 2, topic)
        unit = ids == "unit"
        return Spikes(
            seq, t_send, _array(t_buf, "f8", n, "times"), _array(n_buf, "i8" if unit else "i4", n, "neurons"), unit, src
        )
    if topic == "frame":
        if len(frames) == 3 and len(frames[2]) > MAX_FRAME_BYTES:
            raise ProtocolError("bad_frame", f"frame of {len(frames[2])} bytes (limit {MAX_FRAME_BYTES})")
        hh, ww = _get(h, "h", int), _get(h, "w", int)
        if _get(h, "dtype", str) != "uint8" or hh <= 0 or ww <= 0:
            raise ProtocolError("bad_frame", "frames must be uint8 with positive h and w")
        (buf,) = _buffers(frames, 1, topic)
        return Frame(
            seq, t_send, _finite(_get(h, "t", (int, float))), _array(buf, "u1", hh * ww, "pixels").reshape(hh, ww), src
        )
    if topic == "behavior":
        n = _count(h, MAX_BEHAVIOR_SAMPLES)
        name = _get(h, "name", str)
        t_buf, v_buf = _buffers(frames, 2, topic)
        return BehaviorSamples(
            seq, t_send, name, _array(t_buf, "f8", n, "times"), _array(v_buf, "f8", n, "values"), src
        )
    if topic == "clock":
        _buffers(frames, 0, topic)
        return Clock(seq, t_send, _finite(_get(h, "t", (int, float))), src)
    _buffers(frames, 0, topic)
    cmd = _get(h, "cmd", str)
    if cmd not in CONTROL_COMMANDS:
        raise ProtocolError("malformed", f"unknown control command {reprlib.repr(cmd)} ({', '.join(CONTROL_COMMANDS)})")
    start = _get(h, "start", (int, float), None)
    return Control(seq, t_send, cmd, None if start is None else _finite(start), src)


def _finite(x: Any) -> float:
    x = float(x)
    if not np.isfinite(x):
        raise ProtocolError("malformed", "a time must be finite")
    return x


# ------------------------------------------------------------------------------------------------- outputs
def encode_decode(
    seq: int,
    t_send: float,
    window: int,
    t_start: float,
    t_end: float,
    values: dict[str, float],
    n_spikes: int,
    truncated: int,
    in_seq: int,
    in_t_send: float,
    latency_ms: float,
) -> list[bytes]:
    return [
        b"decode",
        _header(
            seq,
            t_send,
            window=int(window),
            t_start=float(t_start),
            t_end=float(t_end),
            values={k: float(v) for k, v in values.items()},
            n_spikes=int(n_spikes),
            truncated=int(truncated),
            in_seq=int(in_seq),
            in_t_send=float(in_t_send),
            latency_ms=float(latency_ms),
        ),
    ]


def encode_activity(
    seq: int,
    t_send: float,
    window: int,
    t_start: float,
    times: np.ndarray,
    neurons: np.ndarray,
    in_seq: int,
    in_t_send: float,
) -> list[bytes]:
    return [
        b"activity",
        _header(
            seq,
            t_send,
            window=int(window),
            t_start=float(t_start),
            n=len(times),
            in_seq=int(in_seq),
            in_t_send=float(in_t_send),
        ),
        _le(times, "f8"),
        _le(neurons, "i4"),
    ]


def encode_window(
    seq: int, t_send: float, window: int, t_start: float, t_end: float, times: np.ndarray, neurons: np.ndarray
) -> list[bytes]:
    """The spikes of a decoded window as the daemon windowed them (`serve --publish-windows`): what it decoded."""
    return [
        b"window",
        _header(seq, t_send, window=int(window), t_start=float(t_start), t_end=float(t_end), n=len(times)),
        _le(times, "f8"),
        _le(neurons, "i4"),
    ]


def _reply_to(request: Control | None) -> dict[str, Any]:
    """The header keys that tie an answer to the `control` message that asked for it (absent otherwise)."""
    if request is None:
        return {}
    echo: dict[str, Any] = {"in_seq": int(request.seq), "in_t_send": float(request.t_send)}
    if request.src is not None:
        echo["in_src"] = request.src
    return echo


def encode_status(seq: int, t_send: float, status: dict[str, Any], request: Control | None = None) -> list[bytes]:
    """A status message; `request` is the `control` "status" message it answers, whose seq/t_send/src it echoes."""
    return [b"status", _header(seq, t_send, **status, **_reply_to(request))]


def encode_describe(
    seq: int, t_send: float, description: dict[str, Any], request: Control | None = None
) -> list[bytes]:
    """The daemon's description (docs/protocol.md, "describe"); `request` as for `encode_status`."""
    return [b"describe", _header(seq, t_send, **description, **_reply_to(request))]


def decode_output(frames: list[bytes]) -> dict[str, Any]:
    """Parse an output message into its header dict (+ 'topic', and 'times'/'neurons' for activity)."""
    topic, h = _parse_header(frames)
    if topic not in OUTPUT_TOPICS:
        raise ProtocolError("unknown_topic", f"'{topic}' is not an output topic")
    out = dict(h, topic=topic)
    if topic in ("activity", "window"):
        n = _count(h, 1 << 30)
        t_buf, n_buf = _buffers(frames, 2, topic)
        out["times"], out["neurons"] = _array(t_buf, "f8", n, "times"), _array(n_buf, "i4", n, "neurons")
    return out
