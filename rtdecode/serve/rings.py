"""Fixed-size rings of recent frames and behavior samples, aligned to windows by timestamp.

The daemon keeps the last few seconds of each stream and asks, at each window close, for exactly what training
gave the model for that window, through the same functions (`frame_stack_indices`, `behavior_input_samples`).
Memory is allocated once; a push never allocates (beyond numpy's scalar conversions).
"""

from __future__ import annotations

import numpy as np

from rtdecode.data.alignment import EDGE_TOLERANCE, frame_stack_indices

__all__ = ["FrameRing", "SampleRing"]


class FrameRing:
    """The last `capacity` frames (uint8 H x W) with their times; frame times must increase."""

    def __init__(self, height: int, width: int, capacity: int = 64) -> None:
        self.shape = (height, width)
        self.pixels = np.zeros((capacity, height, width), np.uint8)
        self.times = np.full(capacity, -np.inf)
        self.count = 0  # frames ever pushed

    def push(self, t: float, pixels: np.ndarray) -> bool:
        """Store a frame; False (not stored) when it is not newer than the last one."""
        if self.count and t <= self.times[(self.count - 1) % self.times.size]:
            return False
        i = self.count % self.times.size
        self.pixels[i] = pixels
        self.times[i] = t
        self.count += 1
        return True

    def window_key(self, end: float, n_frames: int) -> tuple[int, int]:
        """Which stored frames a window ending at `end` reads (`stack`): the push numbers of the first and one past
        the last. Frames are immutable and arrive only newer, so the key changes exactly when
        the window's frame input can: a frame before the cut arrives, or the ring evicts one the window reads.
        A frame for a later window, or evicting one the window no longer reads, leaves it alone."""
        (hi,) = _stored_before(self.times, self.count, end - EDGE_TOLERANCE)  # as frame_stack_indices cuts
        return max(self.count - self.times.size, hi - n_frames, 0), hi

    def stack(self, window_end: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_frames, H, W) frames shown before `window_end`, oldest first, and their validity (n_frames,) bool."""
        k = min(self.count, self.times.size)
        order = np.arange(self.count - k, self.count) % self.times.size  # chronological slots
        idx = frame_stack_indices(self.times[order], np.array([window_end]), n_frames)[0]
        valid = idx >= 0
        frames = self.pixels[order[np.maximum(idx, 0)]] if k else np.zeros((n_frames, *self.shape), np.uint8)
        return frames, valid


class SampleRing:
    """The last `capacity` samples of one behavior variable; sample times must increase."""

    def __init__(self, capacity: int = 4096) -> None:
        self.times = np.zeros(capacity)
        self.values = np.zeros(capacity)
        self.count = 0

    def push(self, times: np.ndarray, values: np.ndarray) -> int:
        """Append samples newer than the last stored one; returns how many were out of order (dropped)."""
        last = self.times[(self.count - 1) % self.times.size] if self.count else -np.inf
        # newer than the stored samples and than every earlier sample of the batch ([5, 3, 4] keeps 5 only); NaN
        # times are dropped and never become the reference (fmax ignores them)
        before = np.fmax.accumulate(np.concatenate(([last], times[:-1]))) if times.size else times
        keep = np.isfinite(times) & (times > before)
        t, v = times[keep][-self.times.size :], values[keep][-self.times.size :]
        slots = (self.count + np.arange(t.size)) % self.times.size
        self.times[slots], self.values[slots] = t, v
        self.count += t.size
        return int((~keep).sum())

    def window_key(self, end: float, input_window: float) -> tuple[int, int]:
        """Which stored samples a window ending at `end` reads (`behavior_input_samples`'s range, cut with the
        same float expressions): push numbers of the first and one past the last; see FrameRing.window_key."""
        lo, hi = _stored_before(self.times, self.count, end - input_window - EDGE_TOLERANCE, end - EDGE_TOLERANCE)
        return lo, hi

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) in chronological order."""
        k = min(self.count, self.times.size)
        order = np.arange(self.count - k, self.count) % self.times.size
        return self.times[order], self.values[order]


def _stored_before(times: np.ndarray, count: int, *cuts: float) -> tuple[int, ...]:
    """Per cut t, the push number of the first stored entry at or after t (`count` when none): entries evicted
    count as before t, so the stored entries before t are exactly those numbered from the oldest stored one up to
    this. The ring is put in time order once for all cuts."""
    k = min(count, times.size)
    chronological = times[np.arange(count - k, count) % times.size]
    return tuple(count - k + int(i) for i in np.searchsorted(chronological, cuts, side="left"))
