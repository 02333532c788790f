"""Train/validation/test splits by contiguous time blocks or trials, with guard gaps: no leakage.

The release split random 50-ms windows, so a test window's neighbours (sharing its history and its slow
behavior) sat in the training set. Here whole blocks of consecutive windows go to one split, and windows
within `gap` seconds of a boundary between two different splits are left out entirely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "split_blocks", "split_trials", "trial_of", "within_trials"]


@dataclass(frozen=True)
class Split:
    """Window indices (into a TokenizedSession) of each part; guard windows are in none of them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def summary(self) -> dict[str, int]:
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test) summing to 1; got {fractions}"
        )


def _guarded(labels: np.ndarray, window_starts: np.ndarray, window: float, gap: float) -> Split:
    """Drop windows within `gap` s of a change of label, then group indices by label (0 train, 1 val, 2 test).

    Windows tile time, so a window either ends at or before a boundary or starts at or after it: its distance
    to the boundary is measured from its near edge and is never negative.
    """
    keep = labels >= 0
    boundaries = window_starts[np.flatnonzero(np.diff(labels) != 0) + 1]
    if boundaries.size and gap > 0:
        nxt = np.searchsorted(boundaries, window_starts, side="right")  # first boundary after each start
        has_prev, has_next = nxt > 0, nxt < boundaries.size
        d_prev = window_starts - boundaries[np.clip(nxt - 1, 0, None)]
        d_next = boundaries[np.clip(nxt, None, boundaries.size - 1)] - (window_starts + window)
        tol = 1e-9 * max(window, 1.0)
        keep &= ~((has_prev & (d_prev < gap - tol)) | (has_next & (d_next < gap - tol)))
    idx = np.arange(labels.size)
    return Split(idx[keep & (labels == 0)], idx[keep & (labels == 1)], idx[keep & (labels == 2)])


def split_blocks(
    window_starts: np.ndarray,
    window: float,
    *,
    n_blocks: int = 10,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    gap: float,
    seed: int = 0,
) -> Split:
    """Split consecutive windows into `n_blocks` contiguous blocks and deal the blocks to train/val/test.

    Args:
        window_starts: (W,) float64 start time of each window, s, increasing.
        window: window length, s.
        n_blocks: number of contiguous blocks; more blocks spread each split over the session.
        fractions: share of blocks for (train, val, test); each non-zero share gets at least one block.
        gap: guard, s, between windows of different splits; use at least the history window (prev_window) plus
            the window, so no window's history or target overlaps another split.
        seed: which blocks go where is drawn by this seed (reproducible).
    """
    _check_fractions(fractions)
    n_win = window_starts.size
    if n_blocks < 1 or n_blocks > max(n_win, 1):
        raise ValueError(f"n_blocks must be in 1..{n_win} (the number of windows); got {n_blocks}")
    counts = np.floor(np.asarray(fractions) * n_blocks).astype(int)
    for i in np.flatnonzero((np.asarray(fractions) > 0) & (counts == 0)):
        counts[i] = 1
    counts[0] = n_blocks - counts[1:].sum()
    if counts[0] < 1 and fractions[0] > 0:
        raise ValueError(f"{n_blocks} blocks are too few for fractions {fractions}; use more blocks")
    block_labels = np.repeat(np.arange(3), counts)
    np.random.default_rng(seed).shuffle(block_labels)
    block_of_window = np.minimum((np.arange(n_win) * n_blocks) // max(n_win, 1), n_blocks - 1)
    return _guarded(block_labels[block_of_window], window_starts, window, gap)


def split_trials(
    window_starts: np.ndarray,
    window: float,
    trials: np.ndarray,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    gap: float,
    seed: int = 0,
) -> Split:
    """Deal whole trials to train/val/test; windows outside every trial are dropped.

    Args:
        window_starts: (W,) window start times, s.
        window: window length, s.
        trials: (n_trials, 2) [start, stop) s, sorted, non-overlapping.
        fractions, gap, seed: as in `split_blocks`.
    """
    _check_fractions(fractions)
    n_trials = trials.shape[0]
    if n_trials < 3:
        raise ValueError(f"need at least 3 trials to split by trial; got {n_trials} (use split_blocks instead)")
    counts = np.round(np.asarray(fractions) * n_trials).astype(int)
    counts[0] = n_trials - counts[1:].sum()
    trial_labels = np.repeat(np.arange(3), counts)
    np.random.default_rng(seed).shuffle(trial_labels)
    t = trial_of(window_starts, window, trials)
    labels = np.where(t >= 0, trial_labels[np.clip(t, 0, None)], -1)
    return _guarded(labels, window_starts, window, gap)


def trial_of(window_starts: np.ndarray, window: float, trials: np.ndarray) -> np.ndarray:
    """(W,) index of the trial that contains each window entirely, -1 for a window outside every trial."""
    t = np.searchsorted(trials[:, 0], window_starts, side="right") - 1
    inside = (t >= 0) & (window_starts + window <= trials[np.clip(t, 0, None), 1] + 1e-9)
    return np.where(inside, t, -1)


def within_trials(split: Split, window_starts: np.ndarray, window: float, trials: np.ndarray) -> Split:
    """`split` without the windows outside every trial: a session with too few trials to deal them whole still
    trains and tests on its trials only."""
    keep = trial_of(window_starts, window, trials) >= 0
    return Split(*(part[keep[part]] for part in (split.train, split.val, split.test)))
