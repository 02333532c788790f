"""Frames and behavior per window: no look-ahead, fixed-size stacks, means and gaps."""

from __future__ import annotations

import numpy as np

from rtdecode.data.alignment import behavior_per_window, frame_ranges, frame_stack_indices, frames_per_window


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
    from rtdecode.serve.rings import SampleRing

    ring = SampleRing(capacity=8)
    assert ring.push(np.array([5.0, 3.0, 4.0, np.nan, 6.0]), np.arange(5.0)) == 3  # 3, 4 (older than 5) and NaN
    times, values = ring.recent()
    np.testing.assert_array_equal(times, [5.0, 6.0])
    np.testing.assert_array_equal(values, [0.0, 4.0])
    assert ring.push(np.array([5.5, 7.0]), np.array([9.0, 10.0])) == 1
    assert ring.window_key(6.5, 2.0) == (0, 2)  # push numbers of the samples in [4.5, 6.5): 5.0 and 6.0
    ring.push(np.arange(8.0, 16.0), np.zeros(8))  # 11 pushed, the 3 oldest evicted
    assert ring.window_key(100.0, 200.0) == (3, 11)
    assert ring.window_key(9.5, 3.0) == (3, 5)  # wants 7.0 (push 2, evicted), 8.0, 9.0: only 8.0 and 9.0 are stored


def test_ring_window_keys_change_exactly_when_what_a_window_reads_does():
    """Streaming decode's context key: a frame or sample for a later window, or evicting one the window no longer
    reads, must leave a window's key alone (else every window falls back once the ring is full); a new entry
    before its end, or evicting one it reads, must change it."""
    from rtdecode.serve.rings import FrameRing, SampleRing

    frames = FrameRing(2, 2, capacity=4)
    for t in range(4):
        frames.push(float(t), np.zeros((2, 2), np.uint8))
    key = frames.window_key(3.5, n_frames=2)  # reads frames 2 and 3
    assert key == (2, 4)
    frames.push(4.0, np.zeros((2, 2), np.uint8))  # for a later window; evicts frame 0, which it does not read
    assert frames.window_key(3.5, 2) == key
    before = frames.window_key(3.5, 4)
    frames.push(5.0, np.zeros((2, 2), np.uint8))  # evicts frame 1, which a 4-frame window reads
    assert frames.window_key(3.5, 4) != before and frames.window_key(3.5, 2) == key
    assert frames.window_key(5.5, 2) == (4, 6)  # a frame before the end arrived

    samples = SampleRing(capacity=4)
    samples.push(np.arange(4.0), np.zeros(4))
    key = samples.window_key(3.5, 1.6)  # reads 2.0, 3.0
    samples.push(np.array([4.0, 5.0]), np.zeros(2))  # later samples evict 0.0 and 1.0: not read
    assert samples.window_key(3.5, 1.6) == key
    samples.push(np.array([6.0]), np.zeros(1))  # evicts 2.0, which it reads
    assert samples.window_key(3.5, 1.6) != key
