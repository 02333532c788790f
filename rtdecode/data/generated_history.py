"""The history of closed-loop generation: each window is conditioned on what was generated before it.

A closed loop starts from the recorded spikes before its first window (that window's own history; with a history
longer than a window, later windows still reach back into it), then adds every generated window. The history of
each window is packed by the tokenizer's `history_tokens`, as a recorded one would be, so the model never sees a
recorded spike from after the loop's start. Shared by the PyTorch generator (`rtdecode.training.generate`) and the
numpy runtime's evaluation (`rtdecode.report.generation`).
"""

from __future__ import annotations

import numpy as np

from rtdecode.data.tokenizer import TokenBatch, TokenizedSession, history_tokens

__all__ = ["ClosedLoopHistory"]


class ClosedLoopHistory:
    """Recorded spikes before window `first` (an index into `tokens`' windows), then generated ones, in absolute
    quanta; `tokens(win)` packs the history of window `win`, `add(win, ...)` appends what was generated in it."""

    def __init__(self, tokens: TokenizedSession, first: int) -> None:
        self._t = tokens
        self._cfg = tokens.config
        pre = slice(int(tokens.history_ptr[first]), int(tokens.window_ptr[first]))
        self._bins = tokens.bins[pre].astype(np.int64)
        self._neurons = tokens.neurons[pre].astype(np.int64)
        self._next = first

    def _start(self, win: int) -> int:
        return int((self._t.first_window + win) * self._cfg.bins_per_window)

    def tokens(self, win: int) -> TokenBatch:
        """History tokens (one row) of window `win`, the next window of the loop."""
        if win != self._next:
            raise ValueError(f"closed-loop generation needs consecutive windows: expected {self._next}, got {win}")
        q0 = self._start(win)
        keep = self._bins >= q0 - self._cfg.prev_bins  # older spikes can never be history again
        self._bins, self._neurons = self._bins[keep], self._neurons[keep]
        return history_tokens(self._bins, self._neurons, q0, self._cfg, self._t.vocab)

    def add(self, win: int, neurons: np.ndarray, offsets: np.ndarray) -> None:
        """The spikes generated in window `win` (offsets in quanta inside it, in generation order).

        With token_order "neuron" they are put in token order (quantum, then neuron index), as the tokenizer packs
        a recorded history: sampling need not emit one quantum's neurons in index order, and a history in an
        order the model never saw in training is not the history it learned from. With "time" the generation
        order is the arrival order."""
        offsets, neurons = np.asarray(offsets, np.int64), np.asarray(neurons, np.int64)
        if self._cfg.token_order == "neuron":
            order = np.lexsort((neurons, offsets))
            offsets, neurons = offsets[order], neurons[order]
        self._bins = np.concatenate([self._bins, self._start(win) + offsets])
        self._neurons = np.concatenate([self._neurons, neurons])
        self._next = win + 1
