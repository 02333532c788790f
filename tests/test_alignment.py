"""Frames and behavior per window: no look-ahead, fixed-size stacks, means and gaps."""

from __future__ import annotations

import numpy as np

from rtdecode.alignment import behavior_per_window, frame_ranges, frame_stack_indices, frames_per_window


def test_frame_ranges_exclude_frames_at_or_after_window_end():
    ft = np.arange(10) * 0.05  # 20 fps
    lo, hi = frame_ranges(ft, np.array([0.15, 0.2]), frame_window=0.15)
    assert (lo.tolist(), hi.tolist()) == ([0, 1], [3, 4])  # the frame at exactly 0.15 s belongs to the next window
    assert ft[hi[0] - 1] < 0.15


def test_frame_stack_indices_last_n_oldest_first_and_padding():
    ft = np.arange(10) * 0.05
    idx = frame_stack_indices(ft, np.array([0.0, 0.06, 0.2]), n_frames=3)
    assert idx.tolist() == [[-1, -1, -1], [0, 0, 1], [1, 2, 3]]
    assert frames_per_window(0.15, 20.0) == 3


def test_behavior_mean_inside_window_and_interpolation_between_samples():
    t = np.array([0.0, 0.01, 0.02, 0.1])
    v = np.array([1.0, 2.0, 3.0, 5.0])
    starts = np.array([0.0, 0.04, 0.2])
    out = behavior_per_window(t, v, starts, starts + 0.03)
    assert out[0] == 2.0  # mean of 1, 2, 3
    np.testing.assert_allclose(out[1], 3.0 + (0.055 - 0.02) / 0.08 * 2.0)  # interpolated at the centre
    assert np.isnan(out[2])  # beyond the last sample: never extrapolated


def test_behavior_does_not_interpolate_across_missing_samples():
    t = np.array([0.0, 0.05, 0.1, 0.15])
    v = np.array([1.0, np.nan, np.nan, 4.0])
    out = behavior_per_window(t, v, np.array([0.06, 0.0]), np.array([0.08, 0.03]))
    assert np.isnan(out[0]) and out[1] == 1.0


def test_sample_ring_keeps_only_samples_newer_than_everything_before_them():
    from rtdecode.rings import SampleRing

    ring = SampleRing(capacity=8)
    assert ring.push(np.array([5.0, 3.0, 4.0, np.nan, 6.0]), np.arange(5.0)) == 3  # 3, 4 (older than 5) and NaN
    times, values = ring.recent()
    np.testing.assert_array_equal(times, [5.0, 6.0])
    np.testing.assert_array_equal(values, [0.0, 4.0])
    assert ring.push(np.array([5.5, 7.0]), np.array([9.0, 10.0])) == 1
    assert ring.count_before(6.5) == (2, 0)  # (pushed before t, evicted)
    ring.push(np.arange(8.0, 16.0), np.zeros(8))
    assert ring.count_before(100.0) == (11, 3)
