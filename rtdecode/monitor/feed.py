"""The monitor's view of a daemon: one SUB socket on its output endpoint and a bounded state for the page.

The monitor is just another subscriber (docs/protocol.md, "Sockets"): a PUB socket never waits for a slow
subscriber, so the monitor cannot slow the daemon; when it falls behind, its own queue overflows and the monitor
loses messages, not the daemon. It never reads the daemon's input: the only thing it sends there is a `control`
"describe", repeated every few seconds until a description arrives, because a PUB socket drops what it published
before this subscriber joined.

Everything the state keeps is bounded (the last `history` decodes, the last `activity_windows` predicted
windows, the latest status and description) and made of JSON-ready values (non-finite floats become None), so
the web server can serialise a snapshot without touching the feed thread. A message that does not parse, or
parses with fields of the wrong type, is counted by reason and dropped: the feed never stops on input.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from rtdecode.monitor.recorded import Recorded
from rtdecode.wire.client import Producer, Subscriber
from rtdecode.wire.protocol import ProtocolError, decode_output

__all__ = ["FeedOptions", "MonitorState", "Feed", "REJECTIONS"]

TOPICS = ("decode", "activity", "status", "describe")
# status.counters that count input the daemon refused or work it could not do: the page highlights the non-zero ones
REJECTIONS = (
    "malformed",
    "bad_version",
    "unknown_topic",
    "too_large",
    "bad_buffer",
    "bad_frame",
    "unknown_behavior",
    "bad_neuron",
    "bad_time",
    "late",
    "late_clock",
    "seq_duplicate",
    "seq_gap",
    "seq_missing",
    "seq_reset",
    "out_of_order",
    "internal_error",
    "deadline_misses",
    "windows_skipped",
)


@dataclass(frozen=True)
class FeedOptions:
    """Where the daemon is and how much of it to keep.

    Args:
        output: the daemon's output (PUB) endpoint.
        input: the daemon's input endpoint, used only to ask for its description; None never sends anything.
        history: decodes kept (600 = 30 s of 50-ms windows).
        activity_windows: predicted-activity windows kept.
        describe_every: seconds between description requests while none has arrived.
        curve_server_key, curve_keys: CURVE, for a daemon run with --curve-secret: its public key file and this
            client's `.key_secret` file.
    """

    output: str = "tcp://127.0.0.1:5556"
    input: str | None = "tcp://127.0.0.1:5555"
    history: int = 600
    activity_windows: int = 100
    describe_every: float = 2.0
    curve_server_key: Path | None = None
    curve_keys: Path | None = None


def jsonable(x: Any) -> Any:
    """`x` with numpy scalars as Python numbers and non-finite floats as None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x if x is None or isinstance(x, str) else str(x)


class MonitorState:
    """What the page shows, updated by the feed thread and read by the server (one lock, short sections)."""

    def __init__(self, options: FeedOptions = FeedOptions(), recorded: Recorded | None = None) -> None:
        self.options = options
        self.recorded = recorded
        self._lock = threading.Lock()
        self.decodes: deque[dict[str, Any]] = deque(maxlen=options.history)
        self.activity: deque[dict[str, Any]] = deque(maxlen=options.activity_windows)
        self.status: dict[str, Any] | None = None
        self.describe: dict[str, Any] | None = None
        self.received: Counter[str] = Counter()  # parsed messages per topic
        self.dropped: Counter[str] = Counter()  # messages the feed could not use, per reason
        self.decode_count = 0  # decodes received since start (the deque keeps the last `history`)
        self.describe_requests = 0
        self.version = 0  # +1 per change: the server pushes only when it moved
        self._ids = 0

    def add(self, frames: list[bytes], t_receive: float) -> None:
        """Parse one output message and fold it into the state; count and drop what cannot be used."""
        try:
            msg = decode_output(frames)
        except ProtocolError as e:
            self._drop(e.reason)
            return
        try:
            entry = self._entry(msg, t_receive)
        except (KeyError, TypeError, ValueError, AttributeError):
            self._drop(f"bad_{msg['topic']}")
            return
        with self._lock:
            self.received[msg["topic"]] += 1
            self._ids += 1
            if entry is not None:
                entry["id"] = self._ids
            if msg["topic"] == "decode":
                self.decodes.append(entry)  # type: ignore[arg-type]
                self.decode_count += 1
            elif msg["topic"] == "activity":
                self.activity.append(entry)  # type: ignore[arg-type]
            elif msg["topic"] == "status":
                self.status = entry
            elif msg["topic"] == "describe":
                self.describe = entry
            self.version += 1

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1
            self.version += 1

    def _entry(self, msg: dict[str, Any], t_receive: float) -> dict[str, Any] | None:
        """The JSON-ready record of a parsed message (raises on fields of the wrong type)."""
        topic = msg["topic"]
        if topic == "decode":
            values = {str(k): jsonable(float(v)) for k, v in msg["values"].items()}
            t_start, t_end = float(msg["t_start"]), float(msg["t_end"])
            recorded = self.recorded.values(list(values), t_start, t_end) if self.recorded else {}
            return {
                "window": int(msg["window"]),
                "t_start": t_start,
                "t_end": t_end,
                "values": values,
                "recorded": recorded,
                "n_spikes": int(msg["n_spikes"]),
                "truncated": int(msg.get("truncated", 0)),
                "latency_ms": jsonable(float(msg["latency_ms"])),
            }
        if topic == "activity":
            return {
                "window": int(msg["window"]),
                "t_start": float(msg["t_start"]),
                "times": msg["times"].tolist(),
                "neurons": msg["neurons"].tolist(),
            }
        body = {k: v for k, v in msg.items() if k not in ("topic", "v", "seq", "t_send")}
        if topic == "status" and not isinstance(body.get("counters", {}), dict):
            raise TypeError("status.counters is not a map")
        return dict(jsonable(body), t_receive=t_receive)

    def snapshot(self, since_decode: int = 0, since_activity: int = 0) -> dict[str, Any]:
        """The state for the page: decodes and activity windows with `id` above the given ones (all by default),
        the latest status and description, the feed's own counts and latency percentiles over the kept decodes."""
        with self._lock:
            decodes = [d for d in self.decodes if d["id"] > since_decode]
            activity = [a for a in self.activity if a["id"] > since_activity]
            latencies = [d["latency_ms"] for d in self.decodes if d["latency_ms"] is not None]
            status_time = self.status["t_receive"] if self.status else None
            out: dict[str, Any] = {
                "version": self.version,
                "decode_count": self.decode_count,
                "decodes": decodes,
                "activity": activity,
                "status": self.status,
                "describe": self.describe,
                "feed": {
                    "output": self.options.output,
                    "received": dict(self.received),
                    "dropped": dict(self.dropped),
                    "describe_requests": self.describe_requests,
                    "history": self.options.history,
                },
            }
        out["status_age_s"] = None if status_time is None else time.monotonic() - status_time  # a silent daemon
        p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else (None, None)
        out["latency"] = {"n": len(latencies), "p50": p50, "p99": p99}
        out["session"] = self.recorded.summary() if self.recorded else None
        out["rejections"] = list(REJECTIONS)
        return out


class Feed:
    """The subscriber thread: reads the daemon's outputs into `state` until `stop()`.

    Sockets are made, used and closed on the thread (ZeroMQ sockets are not thread-safe), in a context of its
    own so that stopping the monitor never waits on anyone else's sockets.
    """

    def __init__(self, state: MonitorState) -> None:
        self.state = state
        self.options = state.options
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rtdecode-monitor-feed", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread; returns once its sockets are connected (raises what connecting raised)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the monitor's subscriber did not start within {timeout:g} s")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        o = self.options
        context = zmq.Context()
        sub: Subscriber | None = None
        producer: Producer | None = None
        try:
            try:
                key, keys = o.curve_server_key, o.curve_keys
                sub = Subscriber(o.output, TOPICS, context, rcvhwm=1000, curve_server_key=key, curve_keys=keys)
                if o.input:
                    name = f"monitor-{secrets.token_hex(4)}"
                    producer = Producer(o.input, context, 1, name, curve_server_key=key, curve_keys=keys)
                    producer.socket.setsockopt(zmq.LINGER, 0)  # an unanswered request must not hold up the exit
            except BaseException as e:
                self._error = e
                return
            finally:
                self._ready.set()
            self._loop(sub, producer)
        finally:
            for client in (sub, producer):
                if client is not None:
                    client.close()
            context.term()

    def _loop(self, sub: Subscriber, producer: Producer | None) -> None:
        next_ask = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if producer is not None and self.state.describe is None and now >= next_ask:
                producer.control("describe")  # never blocks: dropped while the daemon is not there
                self.state.describe_requests += 1
                next_ask = now + self.options.describe_every
            if not sub.socket.poll(100):
                continue
            for _ in range(1000):  # drain, then come back to the stop flag and the request timer
                try:
                    frames = sub.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.state.add(frames, time.monotonic())
