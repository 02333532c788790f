"""The decode engine: wire messages in, decodes and status out, every bad input counted. No sockets.

`handle` parses and validates one message (`rtdecode.wire.protocol.decode_input`), accounts its producer's
sequence, feeds spikes to the `RollingWindow` (the live form of the one tokenizer) and frames and behavior to
their rings; a window that closes is decoded at once (`_decode`: its stream's tail, or the whole window) and the
decode goes to `publish`. When decoding falls behind the data, closed windows wait until the queue is read and
only the newest is decoded (`step`), so the daemon stays current instead of falling behind.

Every bad input is counted by reason (docs/protocol.md), logged at most once per second per reason, and dropped;
nothing raised by a message reaches the caller (`guarded`). A rejected message is fully validated (model frame
size, behavior names) before it touches any state; only its producer's sequence accounting remembers it, so
that it is not counted as lost.
`rtdecode.serve.daemon` wraps this in ZeroMQ sockets; tests drive it directly.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from rtdecode.data.window import ClosedWindow, RollingWindow
from rtdecode.runtime import Bundle, Decoder
from rtdecode.runtime.streaming import StreamingError
from rtdecode.serve.config import ServeConfig, backend_options
from rtdecode.serve.description import describe
from rtdecode.serve.health import BudgetWatch, OverloadWatch, RateLimitedLog
from rtdecode.serve.rejections import count_window_rejections, usable_samples
from rtdecode.serve.rings import FrameRing, SampleRing
from rtdecode.serve.sequence import SequenceTracker
from rtdecode.serve.streamer import WindowStreamer
from rtdecode.serve.units import UnitMap
from rtdecode.wire.protocol import (
    BehaviorSamples,
    Clock,
    Control,
    Frame,
    ProtocolError,
    Spikes,
    decode_input,
    encode_activity,
    encode_decode,
    encode_describe,
    encode_status,
    encode_window,
)

__all__ = ["DecodeEngine"]

log = logging.getLogger("rtdecode.serve")

_MSG_COUNTER = {
    Spikes: "msg_spikes",
    Frame: "msg_frame",
    BehaviorSamples: "msg_behavior",
    Clock: "msg_clock",
    Control: "msg_control",
}  # accepted messages per wire topic
BUDGET_LOG_INTERVAL_S = 10.0  # an over-budget stream is logged at most this often
Publish = Callable[[list[bytes]], None]
Pending = tuple[list[ClosedWindow], int, float, float, float, float]  # windows, in seq/t_send, t_recv/parsed/window


class DecodeEngine:
    """Messages in (`handle`), outputs to `publish` (decodes, status, activity), counters in `status()`.

    Args:
        bundle: the model.
        config: daemon settings (backend, streaming, deadline, backlog policy, start).
        publish: where output messages go (multipart frames); the daemon's PUB socket, or a list in tests.
    """

    def __init__(self, bundle: Bundle, config: ServeConfig, publish: Publish) -> None:
        self.config, self.bundle, self.publish = config, bundle, publish
        opts = backend_options(config)
        self.decoder = Decoder(bundle, config.backend, **opts)
        self.units = UnitMap(bundle.vocab.neuron_ids)
        self.streaming = self.decoder.can_stream if config.streaming is None else config.streaming
        if self.streaming and not self.decoder.can_stream:
            raise StreamingError(
                f"{bundle.path} has no stream graph of this version (or backend {config.backend} "
                "cannot run it): re-export the run with this rtdecode, or serve with --no-streaming"
            )
        self.deadline_ms = config.deadline_ms if config.deadline_ms is not None else bundle.window.window * 1e3
        self.counters: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self.stages: collections.deque[tuple[float, float, float, float]] = collections.deque(maxlen=1000)
        self._warn = RateLimitedLog(log)
        self._warn_budget = RateLimitedLog(log, BUDGET_LOG_INTERVAL_S)
        self.sequences = SequenceTracker(self.counters, self._warn.warn)
        self.budget = BudgetWatch(bundle.window.max_spikes, bundle.window.prev_block_size)
        self.overload = OverloadWatch()
        self.streamer = WindowStreamer(self.decoder, config.warm_lead_ms if self.streaming else 0.0, self.counters)
        self.on_decoded: Callable[[dict[str, np.ndarray], ClosedWindow, int, float], None] | None = None
        self.extra_counters: Callable[[], dict[str, int]] = dict  # counters of the shell (recording, auth, ...)
        self._pending: list[Pending] = []  # windows closed since the last decode, with their closing message
        self._skipped_since_decode = 0
        self._t_parsed = self._t_window = 0.0
        self._out_seq = 0
        self._t0 = time.monotonic()
        self.description = describe(
            bundle,
            config,
            backend=self.decoder.backend.name,
            streaming=bool(self.streaming),
            deadline_ms=self.deadline_ms,
        )
        self._start_session(config.start)

    # ------------------------------------------------------------------ the loop's steps
    def guarded(self, step: Callable[..., None], *args: Any) -> None:
        """Run one step; an unexpected exception (a bug, not bad input: that is counted by reason) is counted as
        `internal_error`, logged with its traceback (the first 10, then rate-limited) and the daemon serves on.
        A rig loses one message's work instead of the session; the counter says it happened."""
        try:
            step(*args)
        except Exception as e:
            self.counters["internal_error"] += 1
            if self.counters["internal_error"] <= 10:
                log.exception("internal error in %s (counted as internal_error; serving on)", step.__name__)
            else:
                self._warn.warn("internal_error", f"{step.__name__}: {type(e).__name__}: {e}")

    def step(self) -> None:
        """Work between reads of the input queue: decode windows left pending while overloaded (after the queue,
        whose messages close newer ones: only the newest is decoded), then stream work if it is due."""
        if self._pending:
            self.guarded(self._decode_pending)
        if self.streaming and self.streamer.ready():
            self.guarded(self.streamer.update, self.window, self.feeds, self._context_key)

    def poll_timeout_ms(self, idle_ms: int = 20) -> int:
        return self.streamer.poll_timeout_ms(idle_ms)

    # ------------------------------------------------------------------ input
    def handle(self, frames: list[bytes], t_recv: float) -> None:
        """Process one input message; never raises for anything about the message."""
        try:
            msg = decode_input(frames)
        except ProtocolError as e:
            self._reject(e)
            return
        try:
            self._validate(msg)
        except ProtocolError as e:
            e.src, e.seq = msg.src, msg.seq
            self._reject(e)
            return
        if not self.sequences.accept(msg.src, msg.seq):
            return
        self.counters[_MSG_COUNTER[type(msg)]] += 1
        self._t_parsed = time.perf_counter()
        closed: list[ClosedWindow] = []
        if isinstance(msg, Spikes):
            neurons = self.units.indices(msg.neurons) if msg.unit_ids else msg.neurons
            closed = self.window.push(msg.times, neurons)
        elif isinstance(msg, Clock):
            closed = self.window.advance(msg.t)
        elif isinstance(msg, Frame):
            self._on_frame(msg)
        elif isinstance(msg, BehaviorSamples):
            self._on_behavior(msg)
        elif isinstance(msg, Control):
            self._on_control(msg)
        if isinstance(msg, (Spikes, Clock)):
            count_window_rejections(self.window, self.counters, self._warn.warn)
        if closed:
            self._pending.append((closed, msg.seq, msg.t_send, t_recv, self._t_parsed, time.perf_counter()))
            if not self.overload.overloaded():
                self._decode_pending()  # keeping up: decode now; overloaded: after the queue (`step`)
        if self.streaming and not isinstance(msg, Control):
            self.streamer.note_input(msg.t if isinstance(msg, Clock) else None)

    def _reject(self, error: ProtocolError) -> None:
        """A message rejected whole: counted and logged. One whose common header was valid still counts as
        received from its producer, so the producer's next message shows no false `seq_gap`."""
        self.counters[error.reason] += 1
        self._warn.warn(error.reason, str(error))
        if error.seq is not None:
            self.sequences.note_rejected(error.src, error.seq)

    def _validate(self, msg: Any) -> None:
        """The checks that need the model (frame size, behavior names); ProtocolError like the wire checks."""
        if isinstance(msg, Frame) and self.frames is not None and msg.pixels.shape != self.frames.shape:
            raise ProtocolError("bad_frame", f"frame {msg.pixels.shape} but the model takes {self.frames.shape}")
        if isinstance(msg, BehaviorSamples) and msg.name not in self.behavior:
            raise ProtocolError(
                "unknown_behavior", f"{msg.name[:64]!r} is not a behavior input of this model ({sorted(self.behavior)})"
            )

    def _on_frame(self, msg: Frame) -> None:
        if self.frames is None:
            self.counters["frame_unused"] += 1
            self._warn.warn("frame_unused", "a frame arrived but this model takes no frames; ignored")
        elif not self.frames.push(msg.t, msg.pixels):
            self.counters["out_of_order"] += 1
            self._warn.warn("out_of_order", f"frame at {msg.t:.6f} s is not after the previous frame; dropped")

    def _on_behavior(self, msg: BehaviorSamples) -> None:
        times, values = usable_samples(msg.name, msg.times, msg.values, self.counters, self._warn.warn)
        dropped = self.behavior[msg.name].push(times, values)
        if dropped:
            self.counters["out_of_order"] += dropped
            self._warn.warn("out_of_order", f"{dropped} '{msg.name}' sample(s) not after the previous one dropped")

    def _on_control(self, msg: Control) -> None:
        if self._pending:
            self._decode_pending()  # windows that closed before the command: a status counts them, a reset keeps them
        if msg.cmd == "status":
            self.publish_status(msg)
        elif msg.cmd == "describe":
            self.publish_describe(msg)
        elif msg.cmd == "reset":
            self.counters["resets"] += 1
            self._fold_window_counters()
            self._start_session(msg.start if msg.start is not None else self.config.start)
            self.sequences.clear()

    def _start_session(self, start: float) -> None:
        """Fresh per-session state: the rolling window (first window at or after `start`), empty rings, no stream."""
        # skipping backlog: the window builds only the newest window of a close and crosses gaps in one step
        self.window = RollingWindow(
            self.bundle.window,
            self.bundle.vocab.n_neurons,
            start=start,
            keep_last=1 if self.config.skip_backlog else None,
        )
        fr = self.bundle.frames
        self.frames = FrameRing(fr.height, fr.width) if fr.enabled else None
        self.behavior = {b.name: SampleRing() for b in self.bundle.behavior_inputs}
        self.streamer.reset()
        self.description["window"]["start_s"] = start  # a reset may move the start: the description follows

    # ------------------------------------------------------------------ decoding
    def feeds(self, window: ClosedWindow) -> dict[str, np.ndarray]:
        """Model inputs of a closed window from the rings: the same functions training used."""
        frames = valid = None
        if self.frames is not None:
            frames, valid = self.frames.stack(self._context_time(window), self.bundle.frames.n_frames)
        behavior = {name: ring.recent() for name, ring in self.behavior.items()}
        return self.decoder.window_feeds(window, frames, behavior, frame_valid=valid)

    def _context_key(self, window: ClosedWindow) -> Hashable:
        """Changes exactly when the window's context inputs do: the range of stored frames and of behavior samples
        it reads (entries are immutable and only ever arrive newer, so the range says what they are) and its
        history (which grows only before the first window closes, when early spikes become the first window's
        history). A frame for the next window, or evicting one the window no longer reads, does not."""
        key: list[Any] = [int(window.prev_neurons.size)]
        if self.frames is not None:
            key.append(self.frames.window_key(self._context_time(window), self.bundle.frames.n_frames))
        key += [
            self.behavior[spec.name].window_key(self._context_time(window), spec.input_window)
            for spec in self.bundle.behavior_inputs
        ]
        return tuple(key)

    def _context_time(self, window: ClosedWindow) -> float:
        return float(self.bundle.window.context_time(window.start, window.end))

    def _decode_pending(self) -> None:
        """Decode the windows closed since the last call: the newest only, with `skip_backlog` (the others are
        counted as skipped and mark the daemon overloaded), else all in order."""
        pending, self._pending = self._pending, []
        if self.config.skip_backlog:
            backlog = sum(len(p[0]) for p in pending[:-1])
            pending = pending[-1:]
            self.counters["windows_skipped"] += backlog + len(pending[0][0]) - 1
            self._skipped_since_decode += backlog
        for closed, in_seq, in_t_send, t_recv, t_parsed, t_window in pending:
            self._t_parsed, self._t_window = t_parsed, t_window
            for w in closed[-1:] if self.config.skip_backlog else closed:
                self._decode(w, in_seq, in_t_send, t_recv)

    def _decode(self, w: ClosedWindow, in_seq: int, in_t_send: float, t_recv: float) -> None:
        """Decode one closed window and publish it; account latency, deadline, budget and overload."""
        self.streamer.closing()
        feeds = None
        if self.streaming:
            out = self.streamer.finish(w, self._context_key(w), self.feeds)
        elif self.decoder.can_decode:
            feeds = self.feeds(w)
            out = self.decoder.decode(feeds)
        else:  # spikes only: the decode message marks the window's close (count, budget); activity follows it
            out = {}
        values = {k: float(v[0]) for k, v in out.items()}
        t_model = time.perf_counter()
        latency = (t_model - t_recv) * 1e3
        n = int(w.neurons.size)
        cut = self.budget.add(n, int(w.prev_neurons.size))
        self._publish(
            encode_decode(
                self._out_seq, time.monotonic(), w.index, w.start, w.end, values, n, cut, in_seq, in_t_send, latency
            )
        )
        if self.config.publish_windows:  # after the decode: never on its latency
            self._publish(encode_window(self._out_seq, time.monotonic(), w.index, w.start, w.end, w.times, w.neurons))
        if self.budget.over_budget:
            self._warn_budget.warn("over_budget", self.budget.message())
        # where the post-close time goes: parse (decode + validate the closing message), window (close it: sort
        # and pack), model (stream tail or whole-window decode, feeds included), publish (encode + send)
        self.stages.append(
            (
                self._t_parsed - t_recv,
                self._t_window - self._t_parsed,
                t_model - self._t_window,
                time.perf_counter() - t_model,
            )
        )
        self.counters["windows"] += 1
        self.streamer.published()
        self.latencies.append(latency)
        late = latency > self.deadline_ms
        if late:
            self.counters["deadline_misses"] += 1
        if self.overload.record(self._skipped_since_decode, late):
            self._warn.warn(
                "overloaded",
                f"decoding is slower than the data (window {w.index}: {latency:.1f} ms "
                f"after its close, {self._skipped_since_decode} windows skipped before it); decoding "
                "only the newest closed window until it keeps up",
            )
        self._skipped_since_decode = 0
        if self.on_decoded is not None:
            self.on_decoded(feeds if feeds is not None else self.feeds(w), w, in_seq, in_t_send)

    # ------------------------------------------------------------------ output
    def _publish(self, frames: list[bytes]) -> None:
        self._out_seq += 1
        self.publish(frames)

    def publish_activity(self, header: dict[str, Any], times: np.ndarray, neurons: np.ndarray) -> None:
        """Publish a generated window (`rtdecode.serve.generation`)."""
        self._publish(
            encode_activity(
                self._out_seq,
                time.monotonic(),
                header["window"],
                header["t_start"],
                times,
                neurons,
                header["in_seq"],
                header["in_t_send"],
            )
        )
        self.counters["activity"] += 1

    def publish_status(self, request: Control | None = None) -> None:
        """Publish a status; `request` is the `control` message that asked for it (its seq/t_send are echoed)."""
        self._publish(encode_status(self._out_seq, time.monotonic(), self.status(), request))

    def publish_describe(self, request: Control | None = None) -> None:
        """Publish the daemon's description: on start (the readiness signal) and when a client asks."""
        self._publish(encode_describe(self._out_seq, time.monotonic(), self.description, request))

    def _fold_window_counters(self) -> None:
        c = self.window.counters
        for name in ("late", "bad_neuron", "bad_time", "spikes_truncated", "windows_skipped", "late_clock"):
            self.counters[name] += getattr(c, name)
            setattr(c, name, 0)

    def status(self) -> dict[str, Any]:
        """The `status` message's body (docs/protocol.md)."""
        self._fold_window_counters()
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
        # saturate: msgpack packs integers up to 2**64 - 1 and a hostile seq jump can add ~2**64 to seq_missing
        counters = {k: min(int(v), 2**63 - 1) for k, v in self.counters.items()}
        counters.update(self.extra_counters())
        counters.update(self.streamer.warm_counters)
        counters["overload_episodes"] = self.overload.episodes
        stages = (np.median(np.array(self.stages), axis=0) * 1e3).tolist() if self.stages else [0.0] * 4
        return {
            "uptime_s": time.monotonic() - self._t0,
            "backend": self.decoder.backend.name,
            "streaming": bool(self.streaming),
            "overloaded": self.overload.overloaded(),
            "truncation": self.budget.status(),
            "model": {"sha256": self.bundle.source.get("sha256", ""), "step": self.bundle.source.get("step") or 0},
            "windows": int(self.counters["windows"]),
            "deadline_misses": int(self.counters["deadline_misses"]),
            "latency_ms": {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(lat.max())},
            "stages_ms": dict(zip(("parse", "window", "model", "publish"), stages)),
            "counters": counters,
        }
