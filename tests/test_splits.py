"""Splits are contiguous, guarded against leakage, reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.data.splits import split_blocks, split_trials, within_trials

W = 0.05
STARTS = np.arange(4000) * W


def labels_of(split, n):
    lab = np.full(n, -1)
    lab[split.train], lab[split.val], lab[split.test] = 0, 1, 2
    return lab


def test_blocks_are_disjoint_reproducible_and_roughly_proportional():
    a = split_blocks(STARTS, W, n_blocks=10, gap=0.1, seed=3)
    b = split_blocks(STARTS, W, n_blocks=10, gap=0.1, seed=3)
    c = split_blocks(STARTS, W, n_blocks=10, gap=0.1, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)))
    assert not np.array_equal(a.test, c.test)
    assert not set(a.train) & set(a.val) and not set(a.train) & set(a.test) and not set(a.val) & set(a.test)
    assert a.summary()["val"] > 300 and a.summary()["test"] > 300 and a.summary()["train"] > 3000


@pytest.mark.parametrize("gap", [0.05, 0.1, 0.2, 0.33])
def test_guard_gap_separates_every_pair_of_splits(gap):
    s = split_blocks(STARTS, W, n_blocks=20, gap=gap, seed=0)
    lab = labels_of(s, STARTS.size)
    kept = np.flatnonzero(lab >= 0)
    # any two kept windows of different splits are at least `gap` apart (edge to edge)
    for i, j in zip(kept[:-1], kept[1:]):
        if lab[i] != lab[j]:
            assert STARTS[j] - (STARTS[i] + W) >= gap - 1e-9


def test_split_by_trials_keeps_trials_whole():
    trials = np.stack([np.arange(30) * 2.0, np.arange(30) * 2.0 + 1.5], axis=1)
    s = split_trials(STARTS, W, trials, gap=0.1, seed=1)
    lab = labels_of(s, STARTS.size)
    for t0, t1 in trials:
        inside = lab[(STARTS >= t0) & (STARTS + W <= t1)]
        assert len(set(inside[inside >= 0].tolist())) <= 1  # one split per trial
    assert (lab[(STARTS % 2.0) >= 1.5] == -1).all()  # windows between trials are in no split


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="summing to 1"):
        split_blocks(STARTS, W, fractions=(0.5, 0.1, 0.1), gap=0.1)
    with pytest.raises(ValueError, match="at least 3 trials"):
        split_trials(STARTS, W, np.array([[0.0, 1.0]]), gap=0.1)


def test_too_few_trials_to_deal_still_keep_the_split_inside_them():
    """Two trials (e.g. two epochs picked by --epoch) cannot be dealt whole to three splits: the session is
    split in time blocks, and the windows between and around the trials are left out."""
    starts = np.arange(0, 100, 0.05)
    trials = np.array([[10.0, 30.0], [60.0, 90.0]])
    split = within_trials(split_blocks(starts, 0.05, n_blocks=10, gap=0.3), starts, 0.05, trials)
    kept = np.concatenate([split.train, split.val, split.test])
    assert kept.size and np.all(
        ((starts[kept] >= 10.0) & (starts[kept] + 0.05 <= 30.0 + 1e-9))
        | ((starts[kept] >= 60.0) & (starts[kept] + 0.05 <= 90.0 + 1e-9))
    )
