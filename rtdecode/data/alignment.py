"""Cutting video frames and behavior per window, with no look-ahead past the window end.

Offline training and the live daemon both call these functions (the daemon on its ring buffers), so a window
sees the same frames and behavior in both. Frames are selected by timestamp: a frame belongs to a window's frame
context if it was shown before the window ended, i.e. ``end - frame_window <= t_frame < end``. Using frames
with ``t_frame >= end`` would let the model see the future (a defect of the reference release).
"""

from __future__ import annotations

import numpy as np

from rtdecode.data.vocab import QUANTUM_TOLERANCE

# Frame and window times come from different float computations (i / fps vs origin + k * window), so two
# instants that are equal on paper can differ in the last bits. Timestamps within this many seconds of a window
# edge count as on the edge: a frame shown 1 us before a window ends is treated as shown at its end (excluded:
# no look-ahead), and one at exactly end - frame_window is included.
EDGE_TOLERANCE = 1e-6

__all__ = [
    "behavior_input_samples",
    "behavior_per_window",
    "frame_ranges",
    "frame_stack_indices",
    "frames_per_window",
    "normalise_frames",
]


def frame_ranges(
    frame_times: np.ndarray, window_ends: np.ndarray, frame_window: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index ranges [lo, hi) of the frames shown in [end - frame_window, end) for each window end.

    Args:
        frame_times: (F,) float64 s, strictly increasing.
        window_ends: (W,) float64 s.
        frame_window: s of video before each window end.
    Returns:
        lo, hi: (W,) int64.
    """
    hi = np.searchsorted(frame_times, window_ends - EDGE_TOLERANCE, side="left")
    lo = np.searchsorted(frame_times, window_ends - frame_window - EDGE_TOLERANCE, side="left")
    return lo.astype(np.int64), hi.astype(np.int64)


def frames_per_window(frame_window: float, frame_rate: float) -> int:
    """Frames a model takes per window: round(frame_window * frame_rate), at least 1."""
    return max(1, int(round(frame_window * frame_rate)))


def frame_stack_indices(frame_times: np.ndarray, window_ends: np.ndarray, n_frames: int) -> np.ndarray:
    """(W, n_frames) int64 indices of the last `n_frames` frames shown before each window end, oldest first.

    A fixed count (rather than a time range) gives the model a fixed-size input. Where fewer frames exist (start
    of a recording) the earliest available frame is repeated; -1 marks windows with no frame at all yet.
    """
    hi = np.searchsorted(frame_times, window_ends - EDGE_TOLERANCE, side="left")  # frames [0, hi) shown before the end
    idx = hi[:, None] - n_frames + np.arange(n_frames)[None, :]
    idx = np.maximum(idx, 0)
    idx[hi == 0] = -1
    return idx.astype(np.int64)


def behavior_per_window(
    times: np.ndarray, values: np.ndarray, window_starts: np.ndarray, window_ends: np.ndarray
) -> np.ndarray:
    """(W,) float64 behavior value of each window: the mean of samples in [start, end), vectorised.

    Windows with no sample inside (a window shorter than the sampling interval) get the linear interpolation at
    the window centre; windows outside the sampled span or next to missing (NaN) samples get NaN, which training
    masks out. Never extrapolates.
    """
    ok = np.isfinite(values)
    t, v = times[ok], values[ok]
    out = np.full(window_starts.shape, np.nan, dtype=np.float64)
    if t.size == 0:
        return out
    csum = np.concatenate(([0.0], np.cumsum(v)))
    lo = np.searchsorted(t, window_starts, side="left")
    hi = np.searchsorted(t, window_ends, side="left")
    n = hi - lo
    has = n > 0
    out[has] = (csum[hi[has]] - csum[lo[has]]) / n[has]
    centre = 0.5 * (window_starts + window_ends)
    inside = ~has & (centre >= t[0]) & (centre <= t[-1])
    out[inside] = np.interp(centre[inside], t, v)
    # a gap of missing samples around the window: do not interpolate across it
    if not ok.all() and inside.any():
        gap = np.searchsorted(times, centre[inside], side="left")
        prev_ok = ok[np.clip(gap - 1, 0, ok.size - 1)]
        next_ok = ok[np.clip(gap, 0, ok.size - 1)]
        idx = np.flatnonzero(inside)
        out[idx[~(prev_ok & next_ok)]] = np.nan
    return out


def behavior_input_samples(
    times: np.ndarray, values: np.ndarray, window_ends: np.ndarray, input_window: float, dt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples of an input behavior variable shown to the model for each window: those in [end - input_window, end).

    Args:
        times, values: (S,) the variable's samples (s, units); NaN values are treated as missing.
        window_ends: (W,) s.
        input_window: s of samples before each window end.
        dt: the tokenizer's quantum; a sample's age is floor((end - t) / dt), with the tokenizer's tolerance
            (`QUANTUM_TOLERANCE`: a sample 100 ms old is 20 quanta of 5 ms old, although 0.1 / 0.005 is
            19.999999999999996 in float64), clipped to the input window.
    Returns:
        values (W, K) float64 (0 where invalid), ages (W, K) int64, valid (W, K) bool, K = the most samples any of
        these windows has (>= 1). Training batches and the live daemon both call this, so a window's behavior
        tokens are identical offline and live.
    """
    lo = np.searchsorted(times, window_ends - input_window - EDGE_TOLERANCE, side="left")
    hi = np.searchsorted(times, window_ends - EDGE_TOLERANCE, side="left")
    K = max(1, int((hi - lo).max(initial=0)))
    idx = lo[:, None] + np.arange(K)[None, :]
    valid = idx < hi[:, None]
    idx = np.minimum(idx, max(times.size - 1, 0))
    if times.size == 0:
        z = np.zeros((window_ends.size, K))
        return z, z.astype(np.int64), np.zeros((window_ends.size, K), bool)
    vals = values[idx]
    valid &= np.isfinite(vals)
    slots = max(1, int(round(input_window / dt)))
    ages = np.floor((window_ends[:, None] - times[idx]) / dt + QUANTUM_TOLERANCE)
    ages = np.clip(ages, 0, slots - 1).astype(np.int64)
    return np.where(valid, vals, 0.0), np.where(valid, ages, 0), valid


def normalise_frames(frames: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (or 0-255 float) frames -> float32 model input: (x / 255 - mean) / std, the training statistics."""
    return ((np.asarray(frames, np.float32) / 255.0 - mean) / std).astype(np.float32)
