"""The one tokenizer: spikes -> Neuroformer tokens, in pure numpy, shared by training and the live daemon.

Semantics (those of the Neuroformer reference), fixed here once:

* Time is quantised to `dt` on a grid anchored at `origin`: a spike at t has global quantum
  ``q = floor((t - origin) / dt + 1e-6)``. The 1e-6-quantum tolerance (10 ns at dt = 10 ms) puts a spike written
  as exactly 0.15 s into quantum 15 even though 0.15 / 0.01 is 14.999999999999998 in float64; it is far below any
  acquisition system's clock resolution. Every later step is integer arithmetic, so the offline and live paths
  cannot disagree about which window or bin a spike falls in.
* Window k covers quanta [k * B, (k + 1) * B) with B = window / dt. Its history ("previous window") covers the
  P = prev_window / dt quanta just before it, [k * B - P, k * B), and may span several earlier windows.
* Inside a window tokens are ordered by time bin, then neuron index (`token_order = "neuron"`, the reference), or
  by spike time, then neuron index (`token_order = "time"`: arrival order, for streaming at rig scale); a neuron
  firing c times in a bin gives c tokens. A current window becomes ``SOS, spikes..., EOS, PAD...`` in `block_size` slots; a window with more than
  ``block_size - 2`` spikes keeps the earliest ones (the rest are counted as truncated). History becomes
  ``spikes..., PAD...`` in `prev_block_size` slots and keeps the most recent spikes when it overflows, because
  those are the ones nearest the predicted window.
* ID tokens are neuron indices 0..N-1 plus SOS, EOS, PAD = N, N+1, N+2. Time tokens are the quantum offsets
  inside the (current or history) window 0..max(B, P)-1 plus SOS, EOS, PAD after them.

The session-wide result (`TokenizedSession`) stores every spike once, untruncated, as a sorted ragged stream with
per-window pointers; `pack_tokens` turns any set of windows into padded arrays in one vectorised pass. The live
`rtdecode.data.window.RollingWindow` calls the same `quantize`, `order_events` and `pack_tokens`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rtdecode.data.vocab import QUANTUM_TOLERANCE, Vocab, WindowConfig, quantize, quantize_floor

__all__ = [
    "concat_ranges",
    "WindowConfig",
    "Vocab",
    "TokenBatch",
    "TokenizedSession",
    "quantize",
    "quantize_floor",
    "order_events",
    "pack_tokens",
    "tokenize_session",
    "window_range",
    "token_inputs",
    "history_tokens",
]


def order_events(bins: np.ndarray, neurons: np.ndarray, n_neurons: int, times: np.ndarray | None = None) -> np.ndarray:
    """Permutation putting events in token order (stable for repeats): by quantum, then neuron index; or, given
    their `times` (token_order "time"), by time, then neuron index. Quanta never decrease with time (`quantize`
    is monotonic), so time order is also quantum order."""
    if times is not None:
        return np.lexsort((neurons, times))
    key = bins * np.int64(n_neurons) + neurons
    return np.argsort(key, kind="stable")


@dataclass(frozen=True)
class TokenBatch:
    """Padded token arrays for a batch of windows.

    ids, dts: (n_windows, slots) int32 token IDs (see Vocab). lengths: (n_windows,) int32 number of non-PAD tokens
    (SOS and EOS included for current windows). truncated: (n_windows,) int32 spikes dropped because the window
    overflowed its slots.
    """

    ids: np.ndarray
    dts: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray


def pack_tokens(
    neurons: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    slots: int,
    vocab: Vocab,
    *,
    sos_eos: bool,
    keep: Literal["first", "last"],
) -> TokenBatch:
    """Pack ragged per-window events into padded token arrays, vectorised over windows.

    Args:
        neurons: (E,) neuron indices of all windows' events, concatenated window after window, in token order.
        offsets: (E,) quantum offset of each event inside its window (0 .. n_time-1).
        counts: (n_windows,) events per window; sums to E.
        slots: width of the output arrays (block size).
        vocab: token vocabularies (specials).
        sos_eos: wrap each window's spikes in SOS ... EOS (current windows) or not (history).
        keep: on overflow keep the "first" (earliest) or "last" (most recent) events.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_win = counts.size
    cap = slots - 2 if sos_eos else slots
    kept = np.minimum(counts, cap)
    ids = np.full((n_win, slots), vocab.id_pad, dtype=np.int32)
    dts = np.full((n_win, slots), vocab.dt_pad, dtype=np.int32)
    total = int(counts.sum())
    if total:
        starts = np.cumsum(counts) - counts
        row = np.repeat(np.arange(n_win), counts)
        pos = np.arange(total) - np.repeat(starts, counts)  # position of each event inside its window
        if keep == "first":
            sel = pos < cap
            col = pos
        else:
            drop = np.repeat(counts - kept, counts)
            sel = pos >= drop
            col = pos - drop
        if not sel.all():
            row, col = row[sel], col[sel]
            neurons, offsets = neurons[sel], offsets[sel]
        col = col + 1 if sos_eos else col
        ids[row, col] = neurons
        dts[row, col] = offsets
    if sos_eos:
        ids[:, 0] = vocab.id_sos
        dts[:, 0] = vocab.dt_sos
        eos = kept + 1
        ids[np.arange(n_win), eos] = vocab.id_eos
        dts[np.arange(n_win), eos] = vocab.dt_eos
        lengths = kept + 2
    else:
        lengths = kept
    return TokenBatch(ids, dts, lengths.astype(np.int32), (counts - kept).astype(np.int32))


def token_inputs(cur: TokenBatch | None, hist: TokenBatch, trim: bool = True) -> dict[str, np.ndarray]:
    """The model's token inputs as int64 arrays: `ids`, `dts`, `lengths` (current window, unless `cur` is None)
    and `prev_ids`, `prev_dts`, `prev_lengths` (history).

    With `trim`, arrays are cut to the longest window of the batch (at least 2 current slots and 1 history slot):
    PAD is masked anyway, so results are unchanged and the model does less work. Training batches, live window
    feeds and generation all build their inputs here.
    """
    out: dict[str, np.ndarray] = {}
    if cur is not None:
        T = int(cur.lengths.max(initial=2)) if trim else cur.ids.shape[1]
        out.update(
            ids=cur.ids[:, :T].astype(np.int64),
            dts=cur.dts[:, :T].astype(np.int64),
            lengths=cur.lengths.astype(np.int64),
        )
    M = max(1, int(hist.lengths.max(initial=1))) if trim else hist.ids.shape[1]
    out.update(
        prev_ids=hist.ids[:, :M].astype(np.int64),
        prev_dts=hist.dts[:, :M].astype(np.int64),
        prev_lengths=hist.lengths.astype(np.int64),
    )
    return out


def history_tokens(
    bins: np.ndarray, neurons: np.ndarray, window_start: int, config: WindowConfig, vocab: Vocab
) -> TokenBatch:
    """History tokens (one row) of the window starting at quantum `window_start`, from events in token order.

    Args:
        bins: (E,) quanta of earlier events, on any grid shared with `window_start` (absolute, or relative to
            some window's start); events outside [window_start - P, window_start) are ignored.
        neurons: (E,) their neuron indices.
    """
    lo = window_start - config.prev_bins
    keep = (bins >= lo) & (bins < window_start)
    return pack_tokens(
        neurons[keep],
        bins[keep] - lo,
        np.array([int(keep.sum())]),
        config.prev_block_size,
        vocab,
        sos_eos=False,
        keep="last",
    )


@dataclass(frozen=True)
class TokenizedSession:
    """Every spike of a session in token order, with pointers to each window's and each history's events.

    Args:
        config: the window config used.
        vocab: the vocabularies.
        bins: (S,) int64 global quanta, non-decreasing (token order).
        neurons: (S,) int32 neuron indices.
        first_window: absolute index of the first complete window inside the session.
        window_ptr: (n_windows + 1,) int64; window i's events are bins/neurons[window_ptr[i]:window_ptr[i + 1]].
        history_ptr: (n_windows,) int64; window i's history events are [history_ptr[i]:window_ptr[i]].
    """

    config: WindowConfig
    vocab: Vocab
    bins: np.ndarray
    neurons: np.ndarray
    first_window: int
    window_ptr: np.ndarray
    history_ptr: np.ndarray

    @property
    def n_windows(self) -> int:
        return int(self.window_ptr.size - 1)

    @property
    def window_counts(self) -> np.ndarray:
        """(n_windows,) spikes per window before truncation."""
        return np.diff(self.window_ptr)

    def window_starts(self) -> np.ndarray:
        """(n_windows,) float64 start time of each window, s."""
        return self.config.window_start(self.first_window + np.arange(self.n_windows))

    def window_ends(self) -> np.ndarray:
        return self.window_starts() + self.config.window

    def current(self, windows: np.ndarray | list[int]) -> TokenBatch:
        """Current-window tokens (SOS, spikes, EOS, PAD) for the given window indices (0-based in this session)."""
        w = np.asarray(windows, dtype=np.int64)
        lo, hi = self.window_ptr[w], self.window_ptr[w + 1]
        base = (self.first_window + w) * self.config.bins_per_window
        return self._pack(lo, hi, base, self.config.block_size, sos_eos=True, keep="first")

    def history(self, windows: np.ndarray | list[int]) -> TokenBatch:
        """History tokens (spikes of the previous `prev_window`, PAD) for the given windows."""
        w = np.asarray(windows, dtype=np.int64)
        lo, hi = self.history_ptr[w], self.window_ptr[w]
        base = (self.first_window + w) * self.config.bins_per_window - self.config.prev_bins
        return self._pack(lo, hi, base, self.config.prev_block_size, sos_eos=False, keep="last")

    def _pack(
        self,
        lo: np.ndarray,
        hi: np.ndarray,
        base: np.ndarray,
        slots: int,
        *,
        sos_eos: bool,
        keep: Literal["first", "last"],
    ) -> TokenBatch:
        self.config.require_budgets()
        counts = hi - lo
        idx = concat_ranges(lo, counts)
        offsets = self.bins[idx] - np.repeat(base, counts)
        return pack_tokens(self.neurons[idx], offsets, counts, slots, self.vocab, sos_eos=sos_eos, keep=keep)

    def truncation_stats(self) -> dict[str, int]:
        """How many windows overflowed `block_size` and how many spikes that dropped."""
        over = np.maximum(self.window_counts - self.config.max_spikes, 0)
        return {"windows_truncated": int((over > 0).sum()), "spikes_truncated": int(over.sum())}


def concat_ranges(lo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[i], lo[i] + counts[i]) over i, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) + np.repeat(lo - starts, counts)


def window_range(start: float, stop: float, config: WindowConfig) -> tuple[int, int]:
    """Absolute indices [first, last) of the complete windows inside [start, stop).

    The first window starts at or after `start` and the last ends at or before `stop`, with the same quantum
    tolerance as `quantize`, so offline tokenization and the live window agree on which windows exist.
    """
    B = config.bins_per_window
    x0 = (start - config.origin) / config.dt
    x1 = (stop - config.origin) / config.dt
    q_start = math.ceil(x0 - QUANTUM_TOLERANCE)
    q_stop = math.floor(x1 + QUANTUM_TOLERANCE)
    return -(-q_start // B), q_stop // B


def tokenize_session(
    spike_times: np.ndarray,
    spike_neurons: np.ndarray,
    n_neurons: int,
    start: float,
    stop: float,
    config: WindowConfig,
    neuron_ids: Any = None,
) -> TokenizedSession:
    """Tokenize a whole recording at once (vectorised; no Python loop over spikes, bins or neurons).

    Windows are the complete windows of the grid inside [start, stop). Spikes before the first window still
    serve as its history.

    Args:
        spike_times: (S,) float64 s. Need not be sorted: events are put in token order here.
        spike_neurons: (S,) integer neuron indices in [0, n_neurons).
        n_neurons, start, stop: as in `Session`.
        config: window config.
        neuron_ids: optional (N,) unit IDs stored in the vocabulary.
    """
    B = config.bins_per_window
    times = np.asarray(spike_times, dtype=np.float64)
    bins = quantize(times, config)
    neurons = np.asarray(spike_neurons).astype(np.int32, copy=False)
    if neurons.size and (neurons.min() < 0 or neurons.max() >= n_neurons):
        raise ValueError(f"neuron indices must lie in [0, {n_neurons}); got {neurons.min()}..{neurons.max()}")
    order = order_events(bins, neurons, n_neurons, times if config.token_order == "time" else None)
    bins, neurons = bins[order], neurons[order]
    first, last = window_range(start, stop, config)
    n_windows = max(last - first, 0)
    edges = (first + np.arange(n_windows + 1, dtype=np.int64)) * B
    window_ptr = np.searchsorted(bins, edges, side="left").astype(np.int64)
    history_ptr = np.searchsorted(bins, edges[:-1] - config.prev_bins, side="left").astype(np.int64)
    return TokenizedSession(
        config=config,
        vocab=Vocab.for_config(config, n_neurons, neuron_ids),
        bins=bins,
        neurons=neurons,
        first_window=first,
        window_ptr=window_ptr,
        history_ptr=history_ptr,
    )
