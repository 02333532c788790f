"""`rtdecode serve`: the live daemon. Spikes, frames and behavior in over ZeroMQ; decodes and activity out.

One thread owns every socket (ZeroMQ sockets are not thread-safe): it polls the input PULL socket and an inproc
socket from the generation worker, feeds spikes to the shared `RollingWindow`, keeps frames and behavior in
rings, decodes each closed window at once and publishes it on the PUB socket. Windows close by data time only.
Generation (`--generate`) runs on its own thread with its own inference sessions, for the newest window only,
so it never delays a decode. With streaming on the CPU and `--warm-lead-ms`, a helper thread re-reads the model's
weights into cache just before each predicted close (`rtdecode.runtime.warming`); it touches no socket and no
state a decode reads.
Every bad input is counted by reason (docs/protocol.md), logged at most once per second per reason, and
dropped; nothing raised by a message reaches the loop. A rejected message changes nothing but its counter: it is
fully validated (model frame size, behavior names) before sequence accounting or any state.
Optional CURVE authentication (rtdecode.auth) secures both sockets.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from rtdecode.auth import CurveServer, exposure_warnings, is_loopback
from rtdecode.protocol import (
    BehaviorSamples,
    Clock,
    Control,
    Frame,
    ProtocolError,
    Spikes,
    decode_input,
    encode_activity,
    encode_decode,
    encode_status,
)
from rtdecode.health import BudgetWatch, OverloadWatch
from rtdecode.rings import FrameRing, SampleRing
from rtdecode.runtime import Bundle, Decoder
from rtdecode.runtime.streaming import StreamingError, WindowStream
from rtdecode.runtime.warming import CacheWarmer
from rtdecode.tokenizer import history_tokens, token_inputs
from rtdecode.window import ClosedWindow, RollingWindow

__all__ = ["ServeConfig", "Daemon", "is_loopback"]

log = logging.getLogger("rtdecode.daemon")

_MSG_COUNTER = {Spikes: "msg_spikes", Frame: "msg_frame", BehaviorSamples: "msg_behavior", Clock: "msg_clock",
                Control: "msg_control"}  # accepted messages per wire topic
STREAM_YIELD_S = 0.002  # stream work waits this long after a publish, and this long after any input:
STREAM_INPUT_GRACE_S = 0.0005
WARM_HORIZON_S = 0.05  # a close predicted further ahead than this is not warmed for (not real time, or no clock)
MAX_WARM_LEAD_MS = 20.0
BUDGET_LOG_INTERVAL_S = 10.0  # an over-budget stream is logged at most this often
MAX_SOURCES = 256  # producers (`src`) whose sequence is tracked; the least recently seen is forgotten beyond this


@dataclass(frozen=True)
class ServeConfig:
    """Daemon settings (the `rtdecode serve` options).

    Attributes:
        input, output: ZeroMQ endpoints the daemon binds (PULL in, PUB out).
        backend, threads: inference backend and its intra-op threads. 1 by default: measured on 2 cores, one
            thread gave decode p99 1.64 ms vs 5.7 ms with two spinning threads, and end-to-end p99 4.9 ms vs 8.5 ms
            with the daemon at 7% CPU instead of 76% (spinning pools starve co-located producers).
        generate: publish predicted activity of the next window (separate thread and sessions).
        temperature, top_p, seed: sampling of the generated activity.
        record: directory for the crash-safe recording of every input and output message, or None.
        deadline_ms: per-window budget from the closing message's arrival to the decode's publication
            (None = the window length).
        skip_backlog: when several windows close at once, decode only the newest (count the rest).
        streaming: run each window's spikes through the model while it is open, leaving only the tail for the
            moment it closes (`rtdecode.runtime.streaming`); same decodes as window at a time (tested within 1e-5).
            None (default) = on when the bundle has the stream graph (measured: post-close p99 1.11 vs
            7.83 ms at 300 neurons x 4.4 Hz, 0.24 vs 10.16 ms at 1000 x 21.7 Hz; docs/performance.md); True = required;
            False = off. Windows it cannot stream exactly are decoded at a time.
        warm_lead_ms: with streaming on the CPU onnxruntime backend, run a throwaway one-token step this long
            before each window's predicted close, on a helper thread, so the close finds the weights in cache
            (`rtdecode.runtime.warming`). The close is predicted from the newest clock watermark, assuming data
            time runs at wall-clock speed. 0 (default) = off. Whether it helps depends on the CPU's caches and
            who else uses them: on a shared AMD EPYC host 2 ms cut the post-close p99 (median of 18 interleaved
            pairs 1.49 vs 1.67 ms), on a shared Intel Xeon host it cost p50 and no p99 (docs/performance.md).
            Measure on the rig with `rtdecode bench serve --modes streaming,streaming-warm`.
        start: session start time, s: the first window starts at the first grid point at or after it.
        status_interval: seconds between status messages.
        rcvhwm, sndhwm: ZeroMQ high-water marks (messages) of the input and output sockets.
        curve_secret: the daemon's `.key_secret` file (`rtdecode keys`): both sockets become CURVE servers and
            only clients whose public key is in `curve_allow` can connect. None = no authentication.
        curve_allow: client public key files, or folders of `*.key` files, allowed when `curve_secret` is set.
    """

    input: str = "tcp://127.0.0.1:5555"
    output: str = "tcp://127.0.0.1:5556"
    backend: str = "onnxruntime"
    threads: int = 1
    generate: bool = False
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int = 0
    record: Path | None = None
    deadline_ms: float | None = None
    skip_backlog: bool = True
    streaming: bool | None = None
    warm_lead_ms: float = 0.0
    start: float = 0.0
    status_interval: float = 1.0
    rcvhwm: int = 10_000
    sndhwm: int = 1_000
    curve_secret: Path | None = None
    curve_allow: tuple[Path, ...] = ()


class _RateLimitedLog:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval, self.last = interval, {}  # type: ignore[var-annotated]

    def warn(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, -1e9) >= self.interval:
            self.last[reason] = now
            log.warning("%s: %s", reason, message)


class Daemon:
    """The serving loop. `run(stop)` blocks until `stop` is set; `ready` is set once sockets are bound."""

    def __init__(self, bundle_dir: str | Path, config: ServeConfig = ServeConfig(), context: zmq.Context | None = None) -> None:
        if not 0 <= config.warm_lead_ms <= MAX_WARM_LEAD_MS:
            raise ValueError(f"warm_lead_ms must be between 0 and {MAX_WARM_LEAD_MS} ms (got {config.warm_lead_ms}): "
                             "the warm-up is for caches, which do not stay warm much longer")
        self.config = config
        self.bundle = Bundle.load(bundle_dir)
        opts = {"threads": config.threads} if config.threads and config.backend.startswith("onnxruntime") else {}
        self.decoder = Decoder(self.bundle, config.backend, **opts)
        self.n_neurons = self.bundle.vocab.n_neurons
        ids = np.asarray(self.bundle.vocab.neuron_ids, np.int64)
        self._unit_order = np.argsort(ids, kind="stable")
        self._unit_sorted = ids[self._unit_order]
        self.streaming = self.decoder.can_stream if config.streaming is None else config.streaming
        if self.streaming and not self.decoder.can_stream:
            raise StreamingError(f"{bundle_dir} has no stream graph of this version (or backend {config.backend} cannot run "
                                 "them): re-export the run with this rtdecode, or serve with --no-streaming")
        self.warmer: CacheWarmer | None = None  # started with the sockets (`_bind`)
        self._start_session(config.start)
        self.deadline_ms = config.deadline_ms if config.deadline_ms is not None else self.bundle.window.window * 1e3
        self.counters: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self.stages: collections.deque[tuple[float, float, float, float]] = collections.deque(maxlen=1000)
        self._t_parsed = self._t_window = 0.0
        self._last_seq: dict[str, int] = {}  # src -> last seq, least recently seen first
        self._out_seq = 0
        self._warn = _RateLimitedLog()
        self._warn_budget = _RateLimitedLog(BUDGET_LOG_INTERVAL_S)
        self.budget = BudgetWatch(self.bundle.window.max_spikes, self.bundle.window.prev_block_size)
        self.overload = OverloadWatch()
        self._pending: list[tuple[Any, ...]] = []  # windows closed since the last decode, with their closing message
        self._skipped_since_decode = 0
        self._t0 = time.monotonic()
        self.ready = threading.Event()
        self._own_context = context is None
        self.context = context or zmq.Context()
        if config.curve_allow and config.curve_secret is None:
            raise ValueError("allowed client keys were given without --curve-secret: pass the daemon's key file too")
        self.curve = CurveServer(config.curve_secret, config.curve_allow) if config.curve_secret is not None else None
        self.recorder = None
        if config.record is not None:
            from rtdecode.recording import RecordingWriter

            self.recorder = RecordingWriter(config.record)
        self.generator: _GenerationWorker | None = None

    # ------------------------------------------------------------------ sockets and loop
    def _bind(self) -> None:
        for warning in exposure_warnings((self.config.input, self.config.output), curve=self.curve is not None):
            log.warning(warning)
        if self.curve is not None:
            self.curve.start(self.context)  # the ZAP handler must run before the first client connects
        self.pull = self.context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, self.config.rcvhwm)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, self.config.sndhwm)
        self.pub.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.apply(self.pull)
            self.curve.apply(self.pub)
        self.pull.bind(self.config.input)
        self.pub.bind(self.config.output)
        self.input_endpoint = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.output_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        # CPU caches only (an "auto" backend that chose the CPU included); other backends may not take
        # concurrent runs of one session
        if self.streaming and self.config.warm_lead_ms > 0 and self.decoder.backend.name == "onnxruntime":
            self.warmer = CacheWarmer(self.decoder.backend)
        self.gen_pull = None
        if self.config.generate:
            inproc = f"inproc://rtdecode-generate-{id(self)}"
            self.gen_pull = self.context.socket(zmq.PULL)
            self.gen_pull.setsockopt(zmq.LINGER, 0)
            self.gen_pull.bind(inproc)
            self.generator = _GenerationWorker(self, inproc)
            self.generator.start()

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; always closes sockets and flushes the recording."""
        self._bind()
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        if self.gen_pull is not None:
            poller.register(self.gen_pull, zmq.POLLIN)
        next_status = time.monotonic()
        self.ready.set()
        try:
            while not stop.is_set():
                wait = self._stream_after - time.monotonic() if self._stream_due else 0.02
                events = dict(poller.poll(timeout=max(0, int(wait * 1e3) + 1) if self._stream_due else 20))
                if self.pull in events:
                    for _ in range(1000):  # drain, but come back to the poller regularly
                        try:
                            frames = self.pull.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._guarded(self.handle, frames, time.perf_counter())
                if self._pending:
                    # overloaded (a decode missed its deadline or windows were skipped recently): windows are decoded
                    # after the queue, whose messages close newer ones, and only the newest is decoded
                    # (`_decode_pending`), so the daemon stays current instead of falling behind
                    self._guarded(self._decode_pending)
                if self._stream_due and time.monotonic() >= self._stream_after:
                    # the queue is empty (or 1000 were handled), and a just-published decode has had its moment
                    self._stream_due = False
                    self._guarded(self._stream)
                if self.gen_pull is not None and self.gen_pull in events:
                    self._guarded(self._forward_activity)
                if time.monotonic() >= next_status:
                    self._guarded(self.publish_status)
                    next_status = time.monotonic() + self.config.status_interval
        finally:
            self.close()

    def _guarded(self, step: Any, *args: Any) -> None:
        """Run one step of the loop; an unexpected exception (a bug, not bad input: that is counted by reason) is
        counted as `internal_error`, logged with its traceback (the first 10, then rate-limited) and the daemon
        serves on. A rig loses one message's work instead of the session; the counter says it happened."""
        try:
            step(*args)
        except Exception as e:
            self.counters["internal_error"] += 1
            if self.counters["internal_error"] <= 10:
                log.exception("internal error in %s (counted as internal_error; serving on)", step.__name__)
            else:
                self._warn.warn("internal_error", f"{step.__name__}: {type(e).__name__}: {e}")

    def close(self) -> None:
        if self.generator is not None:
            self.generator.stop()
        if self.warmer is not None:
            self.warmer.stop()
        for name in ("pull", "pub", "gen_pull"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        if self.recorder is not None:
            self.recorder.close()
        if self._own_context:
            self.context.term()

    def _publish(self, frames: list[bytes]) -> None:
        self._out_seq += 1
        self.pub.send_multipart(frames, copy=False)
        if self.recorder is not None:
            self.recorder.record(1, frames)

    # ------------------------------------------------------------------ input handling
    def handle(self, frames: list[bytes], t_recv: float) -> None:
        """Process one input message; never raises for anything about the message."""
        if self.recorder is not None:
            self.recorder.record(0, frames)
        try:
            msg = decode_input(frames)
            self._validate(msg)
        except ProtocolError as e:
            self.counters[e.reason] += 1
            self._warn.warn(e.reason, str(e))
            return
        if not self._check_seq(msg):
            return
        self.counters[_MSG_COUNTER[type(msg)]] += 1
        self._t_parsed = time.perf_counter()
        closed: list[ClosedWindow] = []
        if isinstance(msg, Spikes):
            neurons = self._map_units(msg.neurons) if msg.unit_ids else msg.neurons
            closed = self.window.push(msg.times, neurons)
        elif isinstance(msg, Clock):
            closed = self.window.advance(msg.t)
        elif isinstance(msg, Frame):
            self._on_frame(msg)
        elif isinstance(msg, BehaviorSamples):
            self._on_behavior(msg)
        elif isinstance(msg, Control):
            self._on_control(msg)
        if closed:
            self._pending.append((closed, msg.seq, msg.t_send, t_recv, self._t_parsed, time.perf_counter()))
            if not self.overload.overloaded():
                self._decode_pending()  # keeping up: decode now; overloaded: after the queue (see `run`)
        if self.streaming and not isinstance(msg, Control):
            self._stream_due = True  # brought up to date once the input queue is empty: never ahead of a message
            # ... and has stayed empty for a moment: a rig sends a block's spikes and its watermark back to back,
            # and the watermark that closes the window must not wait behind a speculation started in the gap
            self._stream_after = max(self._stream_after, time.monotonic() + STREAM_INPUT_GRACE_S)
            if isinstance(msg, Clock) and msg.t > self._watermark:
                self._watermark, self._watermark_at = msg.t, time.monotonic()

    def _validate(self, msg: Any) -> None:
        """The checks that need the model (frame size, behavior names); ProtocolError like the wire checks."""
        if isinstance(msg, Frame) and self.frames is not None and msg.pixels.shape != self.frames.shape:
            raise ProtocolError("bad_frame", f"frame {msg.pixels.shape} but the model takes {self.frames.shape}")
        if isinstance(msg, BehaviorSamples) and msg.name not in self.behavior:
            raise ProtocolError("unknown_behavior", f"{msg.name[:64]!r} is not a behavior input of this model "
                                                    f"({sorted(self.behavior)})")

    def _check_seq(self, msg: Any) -> bool:
        """Sequence accounting per producer (`src`); False for a duplicate, which is dropped (docs/protocol.md).

        seq = last + 1: normal. seq > last + 1: `seq_gap` (+ `seq_missing` messages the producer dropped or lost).
        seq == last: `seq_duplicate`, the message is dropped: it would count its spikes twice. seq < last: the
        producer restarted its counter (`seq_reset`); the message is used and its data judged by time as always.
        Messages without `src` cannot be told apart by producer, so they are not checked.
        """
        if msg.src is None:
            return True
        last = self._last_seq.pop(msg.src, None)
        self._last_seq[msg.src] = msg.seq  # re-inserted: most recently seen last
        if len(self._last_seq) > MAX_SOURCES:
            del self._last_seq[next(iter(self._last_seq))]
            self.counters["seq_sources_forgotten"] += 1
        if last is None or msg.seq == last + 1:
            return True
        if msg.seq > last:
            self.counters["seq_gap"] += 1
            self.counters["seq_missing"] += msg.seq - last - 1
        elif msg.seq == last:
            self.counters["seq_duplicate"] += 1
            self._warn.warn("seq_duplicate", f"producer {msg.src!r} sent seq {msg.seq} twice; the repeat is dropped")
            return False
        else:
            self.counters["seq_reset"] += 1
            self._warn.warn("seq_reset", f"producer {msg.src!r} restarted its sequence ({last} -> {msg.seq})")
        return True

    def _map_units(self, units: np.ndarray) -> np.ndarray:
        """Acquisition unit IDs -> model indices; unknown IDs become -1 (counted as bad_neuron by the window)."""
        pos = np.minimum(np.searchsorted(self._unit_sorted, units), self._unit_sorted.size - 1)
        known = self._unit_sorted[pos] == units
        return np.where(known, self._unit_order[pos], -1).astype(np.int32)

    def _on_frame(self, msg: Frame) -> None:
        if self.frames is None:
            self.counters["frame_unused"] += 1
            return
        if not self.frames.push(msg.t, msg.pixels):
            self.counters["out_of_order"] += 1


    def _on_behavior(self, msg: BehaviorSamples) -> None:
        dropped = self.behavior[msg.name].push(msg.times, msg.values)
        if dropped:
            self.counters["out_of_order"] += dropped


    def _on_control(self, msg: Control) -> None:
        if self._pending:
            self._decode_pending()  # windows that closed before the command: a status counts them, a reset keeps them
        if msg.cmd == "status":
            self.publish_status()
        elif msg.cmd == "reset":
            self.counters["resets"] += 1
            self._fold_window_counters()
            self._start_session(msg.start if msg.start is not None else self.config.start)
            self._last_seq.clear()

    def _start_session(self, start: float) -> None:
        """Fresh per-session state: the rolling window (first window at or after `start`) and empty rings."""
        # skipping backlog: the window builds only the newest window of a close and crosses gaps in one step
        self.window = RollingWindow(self.bundle.window, self.n_neurons, start=start,
                                    keep_last=1 if self.config.skip_backlog else None)
        fr = self.bundle.frames
        self.frames = FrameRing(fr["height"], fr["width"]) if fr.get("enabled") else None
        self.behavior = {b["name"]: SampleRing() for b in self.bundle.behavior_inputs}
        self.stream: WindowStream | None = None  # the open window's streaming decode
        self._stream_due = False  # input arrived since the stream was last brought up to date
        self._stream_after = 0.0  # monotonic time before which stream work waits (just after a publish)
        self._watermark = float("-inf")  # the newest clock watermark, s
        self._watermark_at = 0.0  # when it arrived, time.monotonic() s
        self._warm_armed: tuple[Any, ...] | None = None  # (window, committed, context key, time) of the last request
        self._cancel_warm_up()

    def _context_key(self, window: ClosedWindow) -> tuple[Any, ...]:
        """Changes exactly when the window's context inputs do: the range of stored frames and of behavior samples
        it reads (entries are immutable and only ever arrive newer, so the range says what they are) and its
        history (which grows only before the first window closes, when early spikes become the first window's
        history). A frame for the next window, or evicting one the window no longer reads, does not."""
        key: list[Any] = [int(window.prev_neurons.size)]
        if self.frames is not None:
            key.append(self.frames.window_key(window.end, self.bundle.frames["n_frames"]))
        key += [self.behavior[spec["name"]].window_key(window.end, spec["input_window"])
                for spec in self.bundle.behavior_inputs]
        return tuple(key)

    def _stream(self) -> None:
        """Bring the open window's stream up to date: (re)start it, refresh its context, commit complete quanta.

        Runs when the input queue is empty, so a message that closes a window never waits behind stream work
        that started after it arrived; windows that close before their stream caught up just have a longer tail.
        It goes on while the daemon is overloaded: a backlog leaves no empty queue to stream in, and in between,
        work done while a window is open is work its close does not have to do."""
        opened = self.window.open_window()
        key = self._context_key(opened)
        if self.stream is None or self.stream.index != opened.index:
            self.stream = WindowStream(self.decoder, opened, self.feeds(opened), key)
        elif self.stream.key != key:
            self.stream.set_context(self.feeds(opened), key)
            self.counters["stream_context_refresh"] += 1
        boundary = max(int(opened.offsets[-1]) if opened.offsets.size else 0,  # the newest quantum may still grow
                       self.window.quantum_offset(self._watermark) if self._watermark > opened.start else 0)
        self.stream.commit(opened, boundary)  # quanta before `boundary` are complete
        if boundary >= self.bundle.window.bins_per_window - 1 or self.stream.n_committed >= self.bundle.window.max_spikes:
            self.stream.speculate(opened)  # only the last quantum (or nothing, at the token cap) is still open
        self._warm_for_close(opened)

    def _warm_for_close(self, opened: ClosedWindow) -> None:
        """Have the helper thread re-read the close's working set shortly before the close (data time is assumed
        to run at wall-clock speed from the newest watermark; a close far off or already due is left alone). At
        the token cap the speculated EOS-only tail is final and the close runs no model: nothing to warm. A
        request is re-made only when the stream or the predicted time has moved (each one copies the cache)."""
        s = self.stream
        if self.warmer is None:
            return
        if s is None or s.broken or s.key is None or s.n_committed >= self.bundle.window.max_spikes:
            self._cancel_warm_up()
            return
        close_at = self._watermark_at + (opened.end - self._watermark)
        at = close_at - self.config.warm_lead_ms * 1e-3
        if not 0 < at - time.monotonic() < WARM_HORIZON_S:
            return
        armed = self._warm_armed
        if armed is not None and armed[:3] == (s.index, s.n_committed, s.key) and abs(armed[3] - at) < 5e-4:
            return
        self.warmer.arm(at, s.warm_steps())
        self._warm_armed = (s.index, s.n_committed, s.key, at)

    def _cancel_warm_up(self) -> None:
        if self.warmer is not None:
            self.warmer.cancel()
        self._warm_armed = None

    # ------------------------------------------------------------------ decoding
    def feeds(self, window: ClosedWindow) -> dict[str, np.ndarray]:
        """Model inputs of a closed window from the rings: the same functions training used."""
        frames = valid = None
        if self.frames is not None:
            frames, valid = self.frames.stack(window.end, self.bundle.frames["n_frames"])
        behavior = {name: ring.recent() for name, ring in self.behavior.items()}
        return self.decoder.window_feeds(window, frames, behavior, frame_valid=valid)

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
            self._decode(closed[-1:] if self.config.skip_backlog else closed, in_seq, in_t_send, t_recv)

    def _decode(self, closed: list[ClosedWindow], in_seq: int, in_t_send: float, t_recv: float) -> None:
        if self.warmer is not None:
            if self.warmer.busy:
                self.counters["stream_warm_overlap"] += 1  # the close came during a warm-up: the lead is too short
            self._cancel_warm_up()  # a request made late (backlog, fast replay) must not run into the publish
        for w in closed:
            feeds = None
            stream, self.stream = self.stream, None
            if stream is not None and stream.index == w.index and stream.matches(w, self._context_key(w)):
                out = stream.finish(w)
                self.counters["windows_streamed"] += 1
                self.counters["stream_speculation_used"] += int(stream.speculation_used)
            else:
                if stream is not None and stream.index == w.index:
                    self.counters["stream_fallback"] += 1  # out-of-order events or a late context change
                feeds = self.feeds(w)
                out = self.decoder.decode(feeds)
            values = {k: float(v[0]) for k, v in out.items()}
            t_model = time.perf_counter()
            latency = (t_model - t_recv) * 1e3
            n = int(w.neurons.size)
            cut = self.budget.add(n, int(w.prev_neurons.size))
            self._publish(encode_decode(self._out_seq, time.monotonic(), w.index, w.start, w.end, values, n, cut,
                                        in_seq, in_t_send, latency))
            if self.budget.over_budget:
                self._warn_budget.warn("over_budget", self.budget.message())
            # where the post-close time goes: parse (decode + validate the closing message), window (close it:
            # sort and pack), model (stream tail or whole-window decode, feeds included), publish (encode + send)
            self.stages.append((self._t_parsed - t_recv, self._t_window - self._t_parsed, t_model - self._t_window,
                                time.perf_counter() - t_model))
            self.counters["windows"] += 1
            # stream work for the next window waits STREAM_YIELD_S: on a busy CPU the decode's way out (ZeroMQ's I/O
            # thread here, the subscriber's process) needs a core first; measured, see docs/performance.md
            self._stream_after = time.monotonic() + STREAM_YIELD_S
            self.latencies.append(latency)
            if latency > self.deadline_ms:
                self.counters["deadline_misses"] += 1
            if self.overload.record(self._skipped_since_decode, latency > self.deadline_ms):
                self._warn.warn("overloaded", f"decoding is slower than the data (window {w.index}: {latency:.1f} ms "
                                f"after its close, {self._skipped_since_decode} windows skipped before it); decoding "
                                "only the newest closed window until it keeps up")
            self._skipped_since_decode = 0
            if self.generator is not None:
                self.generator.submit(feeds if feeds is not None else self.feeds(w), w, in_seq, in_t_send)

    def _forward_activity(self) -> None:
        while True:
            try:
                frames = self.gen_pull.recv_multipart(zmq.NOBLOCK)  # type: ignore[union-attr]
            except zmq.Again:
                return
            h = msgpack.unpackb(frames[0])
            self._publish(encode_activity(self._out_seq, time.monotonic(), h["window"], h["t_start"],
                                          np.frombuffer(frames[1], "<f8"), np.frombuffer(frames[2], "<i4"),
                                          h["in_seq"], h["in_t_send"]))
            self.counters["activity"] += 1

    # ------------------------------------------------------------------ status
    def _fold_window_counters(self) -> None:
        c = self.window.counters
        for name in ("late", "bad_neuron", "bad_time", "spikes_truncated", "windows_skipped", "late_clock"):
            self.counters[name] += getattr(c, name)
            setattr(c, name, 0)

    def status(self) -> dict[str, Any]:
        self._fold_window_counters()
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
        # saturate: msgpack packs integers up to 2**64 - 1 and a hostile seq jump can add ~2**64 to seq_missing
        counters = {k: min(int(v), 2**63 - 1) for k, v in self.counters.items()}
        if self.recorder is not None:
            counters.update({f"recording_{k}": int(v) for k, v in self.recorder.stats.items() if isinstance(v, (int, np.integer))})
        if self.generator is not None:
            counters["generate_dropped"] = self.generator.dropped
        if self.warmer is not None:
            counters["stream_warm_runs"], counters["stream_warm_errors"] = self.warmer.runs, self.warmer.errors
        if self.curve is not None:
            counters["auth_allowed"], counters["auth_denied"] = self.curve.allow.allowed, self.curve.allow.denied
        counters["overload_episodes"] = self.overload.episodes
        src = self.bundle.manifest.get("source", {})
        return {
            "uptime_s": time.monotonic() - self._t0,
            "backend": self.decoder.backend.name,
            "streaming": bool(self.streaming),
            "overloaded": self.overload.overloaded(),
            "truncation": self.budget.status(),
            "model": {"sha256": src.get("sha256", ""), "step": src.get("step") or 0},
            "windows": int(self.counters["windows"]),
            "deadline_misses": int(self.counters["deadline_misses"]),
            "latency_ms": {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(lat.max())},
            "stages_ms": dict(zip(("parse", "window", "model", "publish"),
                                  (np.median(np.array(self.stages), axis=0) * 1e3).tolist() if self.stages else [0.0] * 4)),
            "counters": counters,
        }

    def publish_status(self) -> None:
        self._publish(encode_status(self._out_seq, time.monotonic(), self.status()))


class _GenerationWorker(threading.Thread):
    """Generates the next window's activity for the newest decoded window, off the decode path.

    Holds one pending request; a new request replaces an unstarted one (counted in `dropped`). Results go back to
    the loop thread over an inproc socket, which publishes them (only that thread touches the PUB socket).
    """

    def __init__(self, daemon: Daemon, endpoint: str) -> None:
        super().__init__(name="rtdecode-generate", daemon=True)
        cfg = daemon.config
        opts = {"threads": cfg.threads} if cfg.threads and cfg.backend.startswith("onnxruntime") else {}
        self.decoder = Decoder(daemon.bundle, cfg.backend, **opts)
        self.window_cfg = daemon.bundle.window
        self.context, self.endpoint = daemon.context, endpoint
        self.temperature, self.top_p, self.rng_seed = cfg.temperature, cfg.top_p, cfg.seed
        self._cond = threading.Condition()
        self._pending: tuple[Any, ...] | None = None
        self._stopping = False
        self.dropped = 0
        self._count = 0

    def submit(self, feeds: dict[str, np.ndarray], window: ClosedWindow, in_seq: int, in_t_send: float) -> None:
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = (feeds, window, in_seq, in_t_send)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.join(timeout=5)

    def run(self) -> None:
        sock = self.context.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        return
                    feeds, window, in_seq, in_t_send = self._pending  # type: ignore[misc]
                    self._pending = None
                # the generated window is the one after `window`, conditioned on `window` as its history
                hist_feeds = _history_from_current(feeds, window, self.window_cfg, self.decoder)
                ids, offs = self.decoder.generate(hist_feeds, temperature=self.temperature, top_p=self.top_p,
                                                  seed=self.rng_seed + self._count)
                self._count += 1
                t_start = window.end
                times = t_start + (offs[0] + 0.5) * self.window_cfg.dt
                header = msgpack.packb({"window": window.index + 1, "t_start": t_start, "in_seq": in_seq, "in_t_send": in_t_send})
                sock.send_multipart([header, times.astype("<f8").tobytes(), ids[0].astype("<i4").tobytes()])
        finally:
            sock.close(linger=0)


def _history_from_current(feeds: dict[str, np.ndarray], window: ClosedWindow, cfg: Any, decoder: Decoder) -> dict[str, np.ndarray]:
    """Context for predicting the next window: its history is the just-closed window's (and earlier) spikes."""
    # the closed window's events and its history, in quanta relative to the closed window's start (token order)
    bins = np.concatenate([window.prev_offsets - cfg.prev_bins, window.offsets]).astype(np.int64)
    neurons = np.concatenate([window.prev_neurons, window.neurons])
    hist = history_tokens(bins, neurons, cfg.bins_per_window, cfg, decoder.vocab)  # the next window starts at B
    return {**feeds, **token_inputs(None, hist)}
