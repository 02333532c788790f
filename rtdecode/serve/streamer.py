"""Streaming decode, scheduled: the open window's spikes go through the model while it is open, so its close has
only the tail left (`rtdecode.runtime.streaming` does the math; this decides when, and with which context).

Stream work runs only when the input queue is empty and has stayed empty for a moment, so a message that closes a
window never waits behind stream work started after it arrived; a rig sends a block's spikes and its watermark
back to back, and the watermark must not wait behind a speculation started in the gap. After a decode is
published, stream work waits a little longer: on a busy CPU the decode's way out (ZeroMQ's I/O thread, the
subscriber's process) needs a core first. Optionally a helper thread re-reads the close's working set into the
CPU caches just before the predicted close (`rtdecode.runtime.warming`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Hashable

import numpy as np

from rtdecode.data.window import ClosedWindow, RollingWindow
from rtdecode.runtime import Decoder
from rtdecode.runtime.streaming import WindowStream
from rtdecode.runtime.warming import CacheWarmer

__all__ = ["WindowStreamer"]

STREAM_YIELD_S = 0.002  # stream work waits this long after a publish ...
STREAM_INPUT_GRACE_S = 0.0005  # ... and this long after any input
# Spike-time order, before the window's last quantum: run final spikes only once this many are waiting. A stream
# call costs ~0.1 ms however few tokens it runs, and at a few Hz per unit a 1-ms block brings one or two spikes;
# in the last quantum every block runs, so the close is left with the last one.
STREAM_MIN_BATCH = 16
WARM_HORIZON_S = 0.05  # a close predicted further ahead than this is not warmed for (not real time, or no clock)

Feeds = Callable[[ClosedWindow], dict[str, np.ndarray]]
ContextKey = Callable[[ClosedWindow], Hashable]


class WindowStreamer:
    """The open window's `WindowStream`, brought up to date when the loop is idle and finished at its close.

    Args:
        decoder: the daemon's decoder (streams run its stream graph).
        warm_lead_ms: cache warm-up lead before each predicted close (0 = no warm-up thread).
        counters: the daemon's status counters (stream_* counts).
    """

    def __init__(self, decoder: Decoder, warm_lead_ms: float, counters: collections.Counter[str]) -> None:
        self.decoder, self.warm_lead_ms, self.counters = decoder, warm_lead_ms, counters
        self.max_spikes = decoder.window.max_spikes
        self.by_time = decoder.window.token_order == "time"
        self.warmer: CacheWarmer | None = None
        self.reset()

    def start(self) -> None:
        """Start the warm-up thread when it is asked for and can help: CPU caches only (an "auto" backend that
        chose the CPU included); other backends may not take concurrent runs of one session."""
        if self.warm_lead_ms > 0 and self.decoder.backend.name == "onnxruntime":
            self.warmer = CacheWarmer(self.decoder.backend)

    def stop(self) -> None:
        if self.warmer is not None:
            self.warmer.stop()

    def reset(self) -> None:
        """A new session: no stream, no watermark."""
        self.stream: WindowStream | None = None
        self.due = False  # input arrived since the stream was last brought up to date
        self.after_publish = 0.0  # monotonic time before which stream work waits: just after a publish ...
        self.after_input = 0.0  # ... and just after an input that may have its watermark right behind it
        self.watermark = float("-inf")  # the newest clock watermark, s
        self.watermark_at = 0.0  # when it arrived, time.monotonic() s
        self._warm_armed: tuple[int, int, Hashable, float] | None = None  # (window, committed, context key, time)
        self.cancel_warm_up()

    # ------------------------------------------------------------------ scheduling
    def note_input(self, clock_t: float | None) -> None:
        """Input arrived (a clock watermark at `clock_t`, or other data): bring the stream up to date once the
        queue has been empty for STREAM_INPUT_GRACE_S, or at once after a watermark: it ends an acquisition block,
        so no closing message follows it back to back. (Waiting out the grace after a watermark too would starve
        the stream of a rig sending a block every millisecond: each block would arrive before the grace ran out.)"""
        self.due = True
        now = time.monotonic()
        if clock_t is None:
            self.after_input = now + STREAM_INPUT_GRACE_S
            return
        self.after_input = now
        if clock_t > self.watermark:
            self.watermark, self.watermark_at = clock_t, now

    def poll_timeout_ms(self, idle_ms: int) -> int:
        """How long the loop may wait for input before stream work is due."""
        after = max(self.after_publish, self.after_input)
        return max(0, int((after - time.monotonic()) * 1e3) + 1) if self.due else idle_ms

    def ready(self) -> bool:
        return self.due and time.monotonic() >= max(self.after_publish, self.after_input)

    def published(self) -> None:
        """A decode was just published: stream work for the next window waits STREAM_YIELD_S."""
        self.after_publish = time.monotonic() + STREAM_YIELD_S

    # ------------------------------------------------------------------ streaming
    def update(self, window: RollingWindow, feeds: Feeds, context_key: ContextKey) -> None:
        """Bring the open window's stream up to date: (re)start it, refresh its context, commit what is final
        (complete quanta; with token_order "time", every spike before the newest).

        Goes on while the daemon is overloaded: work done while a window is open is work its close does not do."""
        self.due = False
        opened = window.open_window()
        key = context_key(opened)
        if self.stream is None or self.stream.index != opened.index:
            self.stream = WindowStream(self.decoder, opened, feeds(opened), key)
        elif self.stream.key != key:
            self.stream.set_context(feeds(opened), key)
            self.counters["stream_context_refresh"] += 1
        boundary = max(
            int(opened.offsets[-1]) if opened.offsets.size else 0,  # the newest quantum may still grow
            window.quantum_offset(self.watermark) if self.watermark > opened.start else 0,
        )
        in_last = boundary >= self.decoder.window.bins_per_window - 1
        if self.by_time:  # spikes before the newest one (or the watermark) are final
            newest = float(opened.times[-1]) if opened.times.size else float("-inf")
            final = int(np.searchsorted(opened.times, max(newest, self.watermark), side="left"))
            if in_last or final - self.stream.n_committed >= STREAM_MIN_BATCH:
                self.stream.commit_first(opened, final)
        else:
            self.stream.commit(opened, boundary)  # quanta before `boundary` are complete
        if in_last or self.stream.n_committed >= self.max_spikes:
            self.stream.speculate(opened)  # only the last quantum (or nothing, at the token cap) is still open
        self._warm_for_close(opened)

    def finish(self, closed: ClosedWindow, key: Hashable, feeds: Feeds) -> dict[str, np.ndarray]:
        """The closed window's outputs: from its stream when it has one that matches, else streamed whole now.

        A window without a usable stream (the daemon skipped ahead after a stall, events arrived out of order, the
        context changed late) still goes through the `stream` graph, all of it at once: with a bounded attention
        span that costs what streaming the window would have (a 1700-spike window: 16 ms, against 80-120 ms for
        the whole-window `decode` graph, whose first run also claims ~95 MB more). A whole-window decode there
        would be slower than the windows arrive, and the daemon would stay behind through a burst."""
        stream, self.stream = self.stream, None
        if stream is not None and stream.index == closed.index and stream.matches(closed, key):
            out = stream.finish(closed)
            self.counters["windows_streamed"] += 1
            self.counters["stream_speculation_used"] += int(stream.speculation_used)
            return out
        if stream is not None and stream.index == closed.index:
            self.counters["stream_fallback"] += 1  # out-of-order events or a late context change
        self.counters["windows_streamed_at_close"] += 1
        return WindowStream(self.decoder, closed, feeds(closed), key).finish(closed)

    # ------------------------------------------------------------------ cache warm-up
    def closing(self) -> None:
        """A window is about to be decoded: a warm-up still running means the lead is too short; a request made
        late (backlog, fast replay) must not run into the publish."""
        if self.warmer is not None:
            if self.warmer.busy:
                self.counters["stream_warm_overlap"] += 1
            self.cancel_warm_up()

    def cancel_warm_up(self) -> None:
        if self.warmer is not None:
            self.warmer.cancel()
        self._warm_armed = None

    def _warm_for_close(self, opened: ClosedWindow) -> None:
        """Have the helper thread re-read the close's working set shortly before the close (data time is assumed
        to run at wall-clock speed from the newest watermark; a close far off or already due is left alone). At
        the token cap the speculated EOS-only tail is final and the close runs no model: nothing to warm. A
        request is re-made only when the stream or the predicted time has moved (each one copies the cache)."""
        s = self.stream
        if self.warmer is None:
            return
        if s is None or s.broken or s.key is None or s.n_committed >= self.max_spikes:
            self.cancel_warm_up()
            return
        close_at = self.watermark_at + (opened.end - self.watermark)
        at = close_at - self.warm_lead_ms * 1e-3
        if not 0 < at - time.monotonic() < WARM_HORIZON_S:
            return
        armed = self._warm_armed
        if armed is not None and armed[:3] == (s.index, s.n_committed, s.key) and abs(armed[3] - at) < 5e-4:
            return
        self.warmer.arm(at, s.warm_steps())
        self._warm_armed = (s.index, s.n_committed, s.key, at)

    @property
    def warm_counters(self) -> dict[str, int]:
        if self.warmer is None:
            return {}
        return {"stream_warm_runs": self.warmer.runs, "stream_warm_errors": self.warmer.errors}
