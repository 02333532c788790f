"""The monitor's view of a daemon: one SUB socket on its output endpoint and a bounded state for the page.

The monitor is just another subscriber (docs/protocol.md, "Sockets"): a PUB socket never waits for a slow
subscriber, so the monitor never blocks the daemon; when it falls behind, its own queue overflows and the monitor
loses messages, not the daemon. (It is still a process on the same machine: `rtdecode monitor` lowers its own
priority and bounds the page's update rate so that it leaves the CPU to the daemon.) It never reads the daemon's
input: the only thing it sends there is a `control` "describe", repeated every few seconds until a description
arrives (a PUB socket drops what it published before this subscriber joined), and again when a `status` names
another model than the description did (the daemon was restarted with another bundle).

Everything the state keeps is bounded (the last `history` decodes, the last `activity_windows` predicted
windows and as many incoming-spike windows, the latest status and description) and made of JSON-ready values
(non-finite floats become None), so the web server can serialise a snapshot without touching the feed thread. A
message that does not parse, or parses with fields of the wrong type, is counted by reason and dropped; an
unexpected error while handling one is counted as "internal": the feed never stops on input.
"""

from __future__ import annotations

import logging
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
from rtdecode.serve.rejections import WINDOW_REJECTIONS
from rtdecode.wire.client import Producer, Subscriber
from rtdecode.wire.hostile import REJECT_REASONS
from rtdecode.wire.protocol import OUTPUT_TOPICS, ProtocolError, decode_output

__all__ = ["FeedOptions", "MonitorState", "Feed", "REJECTIONS", "TOPICS"]

log = logging.getLogger(__name__)

# `window` (the incoming spikes of each decoded window) is published by a daemon run with --publish-windows
TOPICS = tuple(t for t in ("decode", "activity", "status", "describe", "window") if t in OUTPUT_TOPICS)
# status.counters that count input the daemon refused or work it could not do: the page highlights the non-zero
# ones. Built from the daemon's own lists (docs/protocol.md, "Whole messages" and "Parts of messages").
REJECTIONS = tuple(
    dict.fromkeys(
        (
            *REJECT_REASONS,
            *WINDOW_REJECTIONS,
            "bad_value",
            "out_of_order",
            "frame_unused",
            "seq_duplicate",
            "seq_gap",
            "seq_missing",
            "seq_reset",
            "internal_error",
            "deadline_misses",
            "windows_skipped",
        )
    )
)


@dataclass(frozen=True)
class FeedOptions:
    """Where the daemon is and how much of it to keep.

    Args:
        output: the daemon's output (PUB) endpoint.
        input: the daemon's input endpoint, used only to ask for its description; None never sends anything.
        history: decodes kept (600 = 30 s of 50-ms windows).
        activity_windows: predicted-activity windows kept, and as many incoming-spike windows (`window`).
        describe_every: seconds between description requests while none has arrived (or the one that did names
            another model than the latest status).
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
    """What the page shows, updated by the feed thread and read by the server (one lock, short sections).

    Only the feed thread calls `add`; the server only calls `snapshot`.
    """

    def __init__(self, options: FeedOptions = FeedOptions(), recorded: Recorded | None = None) -> None:
        self.options = options
        self.recorded = recorded
        self._lock = threading.Lock()
        self.decodes: deque[dict[str, Any]] = deque(maxlen=options.history)
        self.activity: deque[dict[str, Any]] = deque(maxlen=options.activity_windows)
        self.windows: deque[dict[str, Any]] = deque(maxlen=options.activity_windows)  # incoming spikes
        self.status: dict[str, Any] | None = None
        self.describe: dict[str, Any] | None = None
        self.received: Counter[str] = Counter()  # parsed messages per topic
        self.dropped: Counter[str] = Counter()  # messages the feed could not use, per reason
        self.decode_count = 0  # decodes received since start (the deque keeps the last `history`)
        self.describe_requests = 0
        self.version = 0  # +1 per change: the server pushes only when it moved
        self.generation = 0  # +1 when kept entries were rewritten: the server sends the page everything again
        self._circular: frozenset[str] = frozenset()  # the description's circular targets
        self._ids = 0

    @property
    def describe_stale(self) -> bool:
        """No description yet, or the latest status names another model than it (the daemon was restarted)."""
        d, st = self.describe, self.status
        if d is None:
            return True
        if st is None or not isinstance(st.get("model"), dict) or not isinstance(d.get("model"), dict):
            return False
        return bool(st["model"].get("sha256") != d["model"].get("sha256"))

    def add(self, frames: list[bytes], t_receive: float) -> None:
        """Parse one output message and fold it into the state; count and drop what cannot be used."""
        try:
            msg = decode_output(frames)
        except ProtocolError as e:
            self._drop(e.reason)
            return
        topic = msg["topic"]
        try:
            entry = self._entry(msg, t_receive)
            rewritten = self._recompute_recorded(entry) if topic == "describe" else None
        except (KeyError, TypeError, ValueError, AttributeError):
            self._drop(f"bad_{topic}")
            return
        with self._lock:
            self.received[topic] += 1
            self._ids += 1
            entry["id"] = self._ids
            if topic == "decode":
                self.decodes.append(entry)
                self.decode_count += 1
            elif topic == "activity":
                self.activity.append(entry)
            elif topic == "window":
                self.windows.append(entry)
            elif topic == "status":
                self.status = entry
            elif topic == "describe":
                self.describe = entry
                if rewritten is not None:
                    self.decodes = rewritten
                    self.generation += 1
            self.version += 1

    def drop(self, reason: str) -> None:
        """Count a message the feed could not use under `reason`."""
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1
            self.version += 1

    def _recompute_recorded(self, describe: dict[str, Any]) -> deque[dict[str, Any]] | None:
        """When a description changes which targets are circular, the kept decodes with their recorded values
        computed again (None when nothing changes). Runs on the feed thread, the only writer of the decodes."""
        targets = describe.get("targets") or []
        if not isinstance(targets, list):
            raise TypeError("describe.targets is not a list")
        circular = frozenset(str(t["name"]) for t in targets if isinstance(t, dict) and t.get("kind") == "circular")
        if circular == self._circular:
            return None
        self._circular = circular
        if self.recorded is None:
            return None
        out: deque[dict[str, Any]] = deque(maxlen=self.options.history)
        for d in list(self.decodes):
            recorded = self.recorded.values(list(d["values"]), d["t_start"], d["t_end"], circular)
            out.append({**d, "recorded": jsonable(recorded)})
        return out

    @staticmethod
    def _spikes(msg: dict[str, Any]) -> tuple[list[float], list[int]]:
        times, neurons = msg["times"], msg["neurons"]
        if not np.isfinite(times).all():  # JSON has no NaN; the daemon never windows one
            raise ValueError("a spike time is not finite")
        return times.tolist(), neurons.tolist()

    def _entry(self, msg: dict[str, Any], t_receive: float) -> dict[str, Any]:
        """The JSON-ready record of a parsed message (raises on fields of the wrong type)."""
        topic = msg["topic"]
        if topic == "decode":
            values = {str(k): jsonable(float(v)) for k, v in msg["values"].items()}
            t_start, t_end = float(msg["t_start"]), float(msg["t_end"])
            recorded = (
                jsonable(self.recorded.values(list(values), t_start, t_end, self._circular)) if self.recorded else {}
            )
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
            times, neurons = self._spikes(msg)
            return {"window": int(msg["window"]), "t_start": float(msg["t_start"]), "times": times, "neurons": neurons}
        if topic == "window":
            times, neurons = self._spikes(msg)
            return {
                "window": int(msg["window"]),
                "t_start": float(msg["t_start"]),
                "t_end": float(msg["t_end"]),
                "n": len(times),
                "times": times,
                "neurons": neurons,
            }
        body = {k: v for k, v in msg.items() if k not in ("topic", "v", "seq", "t_send")}
        if topic == "status" and not isinstance(body.get("counters", {}), dict):
            raise TypeError("status.counters is not a map")
        return dict(jsonable(body), t_receive=t_receive)

    def snapshot(self, since_decode: int = 0, since_activity: int = 0, since_window: int = 0) -> dict[str, Any]:
        """The state for the page: decodes, activity windows and incoming-spike windows with `id` above the given
        ones (all by default), the latest status and description, the feed's own counts and latency percentiles
        over the kept decodes."""
        with self._lock:
            decodes = [d for d in self.decodes if d["id"] > since_decode]
            activity = [a for a in self.activity if a["id"] > since_activity]
            windows = [w for w in self.windows if w["id"] > since_window]
            latencies = [d["latency_ms"] for d in self.decodes if d["latency_ms"] is not None]
            status_time = self.status["t_receive"] if self.status else None
            out: dict[str, Any] = {
                "version": self.version,
                "generation": self.generation,
                "decode_count": self.decode_count,
                "decodes": decodes,
                "activity": activity,
                "windows": windows,
                "status": self.status,
                "describe": self.describe,
                "describe_stale": self.describe is not None and self.describe_stale,
                "feed": {
                    "output": self.options.output,
                    "received": dict(self.received),
                    "dropped": dict(self.dropped),
                    "describe_requests": self.describe_requests,
                    "history": self.options.history,
                    "windows_kept": self.options.activity_windows,
                    "topics": list(TOPICS),
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
            try:
                now = time.monotonic()
                if producer is not None and self.state.describe_stale and now >= next_ask:
                    next_ask = now + self.options.describe_every
                    producer.control("describe")  # never blocks: dropped while the daemon is not there
                    self.state.describe_requests += 1
                if not sub.socket.poll(100):
                    continue
                for _ in range(1000):  # drain, then come back to the stop flag and the request timer
                    try:
                        frames = sub.socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
            except Exception:  # a socket error outside one message: log it, wait a little, go on
                log.exception("monitor feed error (the feed goes on)")
                self._stop.wait(0.5)

    def _handle(self, frames: list[bytes]) -> None:
        """One message into the state; an unexpected error is counted as "internal", never raised."""
        try:
            self.state.add(frames, time.monotonic())
        except Exception:
            self.state.drop("internal")
            if self.state.dropped["internal"] in (1, 10, 100) or self.state.dropped["internal"] % 1000 == 0:
                log.exception("monitor feed: error handling a message (%d so far)", self.state.dropped["internal"])
