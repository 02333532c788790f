"""The live rolling token window: spikes arrive in batches, windows close by data time, tokens match offline.

Rules, chosen so that a time-sorted stream gives exactly `tokenize_session`'s tokens however it is batched:

* Events are processed in arrival order. An event in a later window than the open one closes the open window
  (and any empty windows in between) first. A watermark `advance(t)` ("no data older than t will come")
  closes every window that ends at or before t, so silence still produces (empty) windows. Windows never close
  by wall-clock time: a replay at any speed gives the same windows.
* An event older than the open window is late: it is dropped and counted, never re-opens a closed window
  (its decode is already published). Before the first window has closed, events older than it are kept as that
  window's history, exactly as offline tokenization uses spikes before a session's first window.
* Events with a neuron index outside [0, n_neurons) or a non-finite time (or one so far out that its time
  quantum would overflow: beyond 2**62 / n_neurons quanta, 146,000 years for 1000 neurons at 1 ms) are dropped
  and counted; so is such a watermark.
* Inside the open window arrival order does not matter: events are sorted into token order when it closes.
* Time faults: a clock that jumps back makes everything behind the open window late (counted, dropped; a
  watermark behind it is counted as `late_clock` and ignored) until data time passes the open window again,
  where decoding simply resumes. A gap closes every window in between; with `keep_last` set (the daemon's
  backlog skipping) only the newest windows of a close are built and a run of empty windows is crossed in one
  step, so a gap of hours costs what one window costs (the skipped ones are counted in `windows_skipped`).

Per-batch work on the common path (all events inside the open window) is a handful of numpy calls into
preallocated buffers; sorting and packing happen once per window, at close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rtdecode.data.tokenizer import (
    TokenBatch,
    Vocab,
    WindowConfig,
    order_events,
    pack_tokens,
    quantize_floor,
    window_range,
)

__all__ = ["ClosedWindow", "RollingWindow", "WindowCounters"]


class ClosedWindow(NamedTuple):
    """A window whose events are final (a NamedTuple: cheap to build once per window on the hot path).

    Args:
        index: absolute window index (start time = config.window_start(index)).
        start, end: window bounds, s.
        neurons, offsets: (n,) events in token order; offsets are int64 quanta inside the window.
        prev_neurons, prev_offsets: (m,) history events in token order; offsets are quanta inside the history.
        times: (n,) float64 spike times of `neurons`, s (what a stream in token_order "time" commits by).
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose: the window's index is its name
    start: float
    end: float
    neurons: np.ndarray
    offsets: np.ndarray
    prev_neurons: np.ndarray
    prev_offsets: np.ndarray
    times: np.ndarray = np.zeros(0)

    def tokens(self, config: WindowConfig, vocab: Vocab) -> tuple[TokenBatch, TokenBatch]:
        """(current, history) token arrays of this window, each with one row, via the shared `pack_tokens`."""
        cur = pack_tokens(
            self.neurons,
            self.offsets,
            np.array([self.neurons.size]),
            config.block_size,
            vocab,
            sos_eos=True,
            keep="first",
        )
        prev = pack_tokens(
            self.prev_neurons,
            self.prev_offsets,
            np.array([self.prev_neurons.size]),
            config.prev_block_size,
            vocab,
            sos_eos=False,
            keep="last",
        )
        return cur, prev


@dataclass
class WindowCounters:
    """What the window has seen; the daemon publishes these in its status messages."""

    events: int = 0
    late: int = 0
    bad_neuron: int = 0
    bad_time: int = 0
    windows_closed: int = 0
    spikes_truncated: int = 0
    windows_skipped: int = 0  # closed but not returned (keep_last): never decoded
    late_clock: int = 0  # watermarks behind the open window (the clock went back)


_NO_WINDOWS: list[ClosedWindow] = []


class RollingWindow:
    """Accepts spike batches in arrival order and returns windows as they close.

    Args:
        config: window config (the bundle's).
        n_neurons: N; valid indices are 0..N-1.
        start: session start time, s: the first window is the first grid window starting at or after it
            (as in `tokenize_session`).
        capacity: initial event capacity of the open window's buffers; they grow (rarely) if a window holds more.
        keep_last: None (default) returns every closed window, as offline tokenization has them. An int k makes
            each `push`/`advance` return only the newest k windows it closed: the others still pass their events on
            as history but are not returned (counted in `counters.windows_skipped`), and runs of empty windows are
            jumped over in O(1). The windows returned have exactly the tokens they would have without it.
    """

    def __init__(
        self,
        config: WindowConfig,
        n_neurons: int,
        start: float = 0.0,
        capacity: int = 4096,
        keep_last: int | None = None,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be None or >= 1, got {keep_last}")
        self.config = config
        self.keep_last = keep_last
        self.n_neurons = int(n_neurons)
        self.vocab = Vocab.for_config(config, n_neurons)
        self.counters = WindowCounters()
        self._B = config.bins_per_window
        self._P = config.prev_bins
        self._max_spikes = config.max_spikes
        # times whose quantum would overflow the int64 token-order key (quantum * N + neuron) are bad, not data
        self._max_q = float(2**62 // max(self.n_neurons, 1))
        self._open = window_range(start, start, config)[0]  # first window starting at or after `start`
        self._lo = self._open * self._B  # first quantum of the open window
        self._hi = self._lo + self._B
        self._by_time = config.token_order == "time"
        self._bins = np.empty(capacity, dtype=np.int64)
        self._neurons = np.empty(capacity, dtype=np.int32)
        self._times = np.empty(capacity, dtype=np.float64)
        self._n = 0
        self._any_closed = False
        # history: events of the last P quanta before the open window, in token order
        self._hist_bins = np.zeros(0, dtype=np.int64)
        self._hist_neurons = np.zeros(0, dtype=np.int32)
        self._hist_times = np.zeros(0, dtype=np.float64)

    @property
    def open_index(self) -> int:
        """Absolute index of the window currently collecting events."""
        return self._open

    @property
    def open_start(self) -> float:
        return float(self.config.window_start(self._open))

    def push(self, times: np.ndarray, neurons: np.ndarray) -> list[ClosedWindow]:
        """Add a batch of events; return the windows this batch closed (usually none).

        Args:
            times: (n,) float64 spike times, s, session clock.
            neurons: (n,) integer neuron indices.
        """
        n = times.shape[0]
        if n == 0:
            return _NO_WINDOWS
        if neurons.shape[0] != n:
            raise ValueError(f"{n} spike times but {neurons.shape[0]} neuron indices")
        self.counters.events += n
        qf = quantize_floor(times, self.config)  # float: NaN/inf fail the range test below, so the fast path
        neurons = neurons.astype(np.int32, copy=False)  # needs no separate finiteness check
        # one unsigned comparison catches negative and too-large indices together
        if neurons.view(np.uint32).max() >= self.n_neurons:
            bad = neurons.view(np.uint32) >= self.n_neurons
            self.counters.bad_neuron += int(bad.sum())
            qf, neurons, times = qf[~bad], neurons[~bad], times[~bad]
        if qf.size and qf.min() >= self._lo and qf.max() < self._hi:
            self._append(qf, neurons, times)
            return _NO_WINDOWS
        finite = np.abs(qf) < self._max_q  # False for NaN and inf too
        if not finite.all():
            self.counters.bad_time += int((~finite).sum())
            qf, neurons, times = qf[finite], neurons[finite], times[finite]
        return self._push_slow(qf.astype(np.int64), neurons, times) if qf.size else _NO_WINDOWS

    def advance(self, t: float) -> list[ClosedWindow]:
        """Watermark: no event older than `t` will come; close every window ending at or before t."""
        qf = float(quantize_floor(np.array([t], dtype=np.float64), self.config)[0])
        if not abs(qf) < self._max_q:
            self.counters.bad_time += 1
            return _NO_WINDOWS
        q = int(qf)
        if q < self._lo and self._any_closed:
            self.counters.late_clock += 1  # the clock went back: nothing to close, counted
        target = q // self._B  # the window containing t stays open
        return self._close_until(target) if target > self._open else _NO_WINDOWS

    def open_window(self) -> ClosedWindow:
        """The open window as it stands: its events so far in token order and its history (streaming decode reads
        it while the window is open). Events still to come may sort anywhere after the last complete time quantum
        (token_order "neuron") or after the newest spike time (token_order "time")."""
        order = self._order(self._bins[: self._n], self._neurons[: self._n], self._times[: self._n])
        h_lo = np.searchsorted(self._hist_bins, self._lo - self._P, side="left")
        start = self.config.origin + self._lo * self.config.dt
        return ClosedWindow(
            self._open,
            start,
            start + self.config.window,
            self._neurons[: self._n][order],
            self._bins[: self._n][order] - self._lo,
            self._hist_neurons[h_lo:],
            self._hist_bins[h_lo:] - (self._lo - self._P),
            self._times[: self._n][order],
        )

    def quantum_offset(self, t: float) -> int:
        """Offset in quanta of time `t` from the open window's start (a watermark's first incomplete quantum);
        0 for a time that is not a usable watermark (non-finite or out of range)."""
        qf = float(quantize_floor(np.array([t], dtype=np.float64), self.config)[0])
        return int(qf) - self._lo if abs(qf) < self._max_q else 0

    def flush(self) -> list[ClosedWindow]:
        """Close the open window regardless (end of stream). Offline tokenization only keeps windows that are
        complete inside the session, so use `advance(session.stop)` to match it exactly."""
        return self._close_until(self._open + 1)

    # ------------------------------------------------------------------ internals
    def _order(self, bins: np.ndarray, neurons: np.ndarray, times: np.ndarray) -> np.ndarray:
        return order_events(bins, neurons, self.n_neurons, times if self._by_time else None)

    def _append(self, q: np.ndarray, neurons: np.ndarray, times: np.ndarray) -> None:
        end = self._n + q.shape[0]
        if end > self._bins.shape[0]:
            size = max(end, 2 * self._bins.shape[0])
            self._bins = np.resize(self._bins, size)
            self._neurons = np.resize(self._neurons, size)
            self._times = np.resize(self._times, size)
        self._bins[self._n : end] = q
        self._neurons[self._n : end] = neurons
        self._times[self._n : end] = times
        self._n = end

    def _push_slow(self, q: np.ndarray, neurons: np.ndarray, times: np.ndarray) -> list[ClosedWindow]:
        """Batch crosses a window boundary or holds late events: apply the arrival-order rules vectorised."""
        w = q // self._B
        # an event is late if an earlier event (or the open window) already reached a later window;
        # w[i] < max(w[:i + 1]) is the same test as w[i] < max(w[:i]), and needs no shifted copy
        late = w < np.maximum(np.maximum.accumulate(w), self._open)
        if late.any():
            if not self._any_closed:
                early = late & (w < self._open) & (q >= self._lo - self._P)
                # events before the first window serve as its history (offline does the same)
                if early.any():
                    self._add_history(q[early], neurons[early], times[early])
                    late &= ~early
                    keep = ~early
                    q, neurons, times, w, late = q[keep], neurons[keep], times[keep], w[keep], late[keep]
            self.counters.late += int(late.sum())
            if late.any():
                q, neurons, times, w = q[~late], neurons[~late], times[~late], w[~late]
        closed: list[ClosedWindow] = []
        if q.size == 0:
            return closed
        # remaining events are in non-decreasing window order; split at window changes
        cuts = (np.flatnonzero(w[1:] != w[:-1]) + 1).tolist()
        for lo, hi in zip([0, *cuts], [*cuts, w.size]):
            target = int(w[lo])
            if target > self._open:
                closed.extend(self._close_until(target))
            self._append(q[lo:hi], neurons[lo:hi], times[lo:hi])
        if self.keep_last is not None and len(closed) > self.keep_last:
            # a batch spanning several windows: at most one built window per window boundary it crosses
            self.counters.windows_skipped += len(closed) - self.keep_last
            closed = closed[-self.keep_last :]
        return closed

    def _add_history(self, q: np.ndarray, neurons: np.ndarray, times: np.ndarray) -> None:
        bins = np.concatenate((self._hist_bins, q))
        nrn = np.concatenate((self._hist_neurons, neurons))
        tms = np.concatenate((self._hist_times, times))
        order = self._order(bins, nrn, tms)
        self._hist_bins, self._hist_neurons, self._hist_times = bins[order], nrn[order], tms[order]

    def _close_until(self, target: int) -> list[ClosedWindow]:
        """Close the open window and every (empty) window before absolute index `target`; open `target`.

        With `keep_last` only the newest `keep_last` of them are built and returned; the loop jumps over the empty
        ones before those in one step, so its cost does not depend on the length of a gap.
        """
        out: list[ClosedWindow] = []
        cfg = self.config
        while self._open < target:
            emit = self.keep_last is None or target - self._open <= self.keep_last
            if not emit and self._n == 0:
                # empty windows nobody will see: their only trace would be history, and they add none
                jump = target - self.keep_last - self._open  # type: ignore[operator]
                self.counters.windows_closed += jump
                self.counters.windows_skipped += jump
                self._any_closed = True
                self._open += jump
                self._lo += jump * self._B
                self._hi += jump * self._B
                continue
            bins, nrn, tms = self._bins[: self._n], self._neurons[: self._n], self._times[: self._n]
            order = self._order(bins, nrn, tms)
            bins, nrn, tms = bins[order], nrn[order], tms[order]  # copies: the buffers are reused
            h_lo = np.searchsorted(self._hist_bins, self._lo - self._P, side="left")
            hist_bins, hist_neurons = self._hist_bins[h_lo:], self._hist_neurons[h_lo:]
            hist_times = self._hist_times[h_lo:]
            start = cfg.origin + self._lo * cfg.dt  # the same float expression as TokenizedSession.window_starts
            if emit:
                out.append(
                    ClosedWindow(
                        index=self._open,
                        start=start,
                        end=start + cfg.window,
                        neurons=nrn,
                        offsets=bins - self._lo,
                        prev_neurons=hist_neurons,
                        prev_offsets=hist_bins - (self._lo - self._P),
                        times=tms,
                    )
                )
            else:
                self.counters.windows_skipped += 1
            self.counters.windows_closed += 1
            if nrn.size > self._max_spikes:
                self.counters.spikes_truncated += nrn.size - self._max_spikes
            # the closed window's events join the history; keep only what a later window can need
            self._hist_bins = np.concatenate((hist_bins, bins))
            self._hist_neurons = np.concatenate((hist_neurons, nrn))
            self._hist_times = np.concatenate((hist_times, tms))
            self._n = 0
            self._any_closed = True
            self._open += 1
            self._lo += self._B
            self._hi += self._B
        return out
