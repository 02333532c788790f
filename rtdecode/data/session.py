"""The one in-memory recording type every part of rtdecode reads and writes.

A `Session` holds spikes as two flat arrays (time, neuron index) rather than per-neuron trains, because the
tokenizer, the simulator and the live window all work on time-ordered event streams. Frames and behavior keep
their own clocks: nothing is resampled here, so no information is lost on the way in.

Validation is strict and happens at construction: a Session that exists is well formed. Loaders for formats
whose order is not guaranteed (NWB units, dense count matrices) sort before they construct.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Behavior", "Session", "SessionError"]


class SessionError(ValueError):
    """A session's arrays are inconsistent; the message says which array and how to fix it."""


@dataclass(frozen=True)
class Behavior:
    """One behavior variable sampled on its own clock.

    Args:
        times: (T,) float64 seconds, strictly increasing.
        values: (T,) float64, same length; NaN marks a missing sample (e.g. a lost eye-tracker frame).
        unit: free text for people and plots, e.g. "cm/s" or "deg".
    """

    times: np.ndarray
    values: np.ndarray
    unit: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "times", np.ascontiguousarray(self.times, dtype=np.float64))
        object.__setattr__(self, "values", np.ascontiguousarray(self.values, dtype=np.float64))


@dataclass(frozen=True)
class Session:
    """A recording (or simulation): spikes, and optionally video frames and behavior.

    Args:
        spike_times: (S,) float64 seconds, non-decreasing.
        spike_neurons: (S,) int32 neuron index in [0, n_neurons).
        n_neurons: number of neurons; indices are dense 0..n_neurons-1.
        start, stop: the recorded interval in seconds; every timestamp lies in [start, stop).
        neuron_ids: (n_neurons,) int64 original unit IDs from the acquisition system (default 0..N-1), kept so
            that checkpoints and the daemon can map a rig's unit numbers onto model indices.
        frames: (F, H, W) uint8 or float32 grayscale stimulus frames, or None.
        frame_times: (F,) float64 seconds, strictly increasing; required with frames.
        behavior: name -> Behavior, e.g. "speed", "phi", "theta".
        trials: (n_trials, 2) float64 [start, stop) intervals, or None; splits use them when present.
        truth: ground-truth arrays from a simulator (e.g. "W" target x source weights), saved with the data.
        metadata: JSON-serialisable description (source, seed, units...).
    """

    spike_times: np.ndarray
    spike_neurons: np.ndarray
    n_neurons: int
    start: float
    stop: float
    neuron_ids: np.ndarray | None = None  # None becomes 0..N-1 at construction
    frames: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    behavior: dict[str, Behavior] = field(default_factory=dict)
    trials: np.ndarray | None = None
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "spike_times", np.ascontiguousarray(self.spike_times, dtype=np.float64))
        neurons = np.asarray(self.spike_neurons)
        if neurons.size and not np.issubdtype(neurons.dtype, np.integer):
            if not np.all(np.mod(neurons, 1) == 0):
                raise SessionError("spike_neurons must be integer neuron indices; got non-integer values")
        set_(self, "spike_neurons", np.ascontiguousarray(neurons, dtype=np.int32))
        set_(self, "n_neurons", int(self.n_neurons))
        set_(self, "start", float(self.start))
        set_(self, "stop", float(self.stop))
        if self.neuron_ids is None:
            set_(self, "neuron_ids", np.arange(self.n_neurons, dtype=np.int64))
        else:
            set_(self, "neuron_ids", np.ascontiguousarray(self.neuron_ids, dtype=np.int64))
        if self.frame_times is not None:
            set_(self, "frame_times", np.ascontiguousarray(self.frame_times, dtype=np.float64))
        if self.frames is not None:
            frames = np.asarray(self.frames)
            if frames.dtype != np.uint8:
                frames = frames.astype(np.float32, copy=False)
            set_(self, "frames", np.ascontiguousarray(frames))
        if self.trials is not None:
            set_(self, "trials", np.ascontiguousarray(self.trials, dtype=np.float64).reshape(-1, 2))
        set_(self, "behavior", dict(self.behavior))
        set_(self, "truth", {k: np.asarray(v) for k, v in self.truth.items()})
        set_(self, "metadata", dict(self.metadata))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise SessionError on the first inconsistency found. Nothing is dropped or repaired silently."""
        t, n = self.spike_times, self.spike_neurons
        if t.ndim != 1 or n.ndim != 1:
            raise SessionError(f"spike_times and spike_neurons must be 1-D; got shapes {t.shape} and {n.shape}")
        if t.shape != n.shape:
            raise SessionError(
                f"spike_times ({t.size}) and spike_neurons ({n.size}) must have the same length: one neuron per spike"
            )
        if self.n_neurons <= 0:
            raise SessionError(f"n_neurons must be positive; got {self.n_neurons}")
        if not (np.isfinite(self.start) and np.isfinite(self.stop) and self.stop > self.start):
            raise SessionError(f"need finite start < stop; got start={self.start}, stop={self.stop}")
        _check_finite("spike_times", t)
        if t.size:
            bad = np.flatnonzero(np.diff(t) < 0)
            if bad.size:
                i = int(bad[0]) + 1
                raise SessionError(
                    f"spike_times are not sorted: spike {i} at {t[i]:.6f} s comes after {t[i - 1]:.6f} s. "
                    "Sort spikes by time (np.argsort(times, kind='stable')) before building a Session."
                )
            if t[0] < self.start or t[-1] >= self.stop:
                raise SessionError(
                    f"spike times span [{t[0]:.6f}, {t[-1]:.6f}] s, outside the session [{self.start}, {self.stop}) s"
                )
            lo, hi = int(n.min()), int(n.max())
            if lo < 0 or hi >= self.n_neurons:
                raise SessionError(
                    f"neuron index out of range: found {lo}..{hi} but n_neurons={self.n_neurons} "
                    f"(indices must be 0..{self.n_neurons - 1}; map unit IDs to indices via neuron_ids)"
                )
        ids = np.asarray(self.neuron_ids)
        if ids.shape != (self.n_neurons,):
            raise SessionError(f"neuron_ids must have shape ({self.n_neurons},); got {ids.shape}")
        if np.unique(ids).size != self.n_neurons:
            raise SessionError("neuron_ids must be unique: two neurons share an ID")
        self._validate_frames()
        for name, b in self.behavior.items():
            _validate_clock(f"behavior '{name}' times", b.times)
            if b.values.shape != b.times.shape:
                raise SessionError(
                    f"behavior '{name}': {b.values.size} values but {b.times.size} timestamps; they must match"
                )
        if self.trials is not None:
            _check_finite("trials", self.trials)
            if np.any(self.trials[:, 1] <= self.trials[:, 0]):
                raise SessionError("every trial must have start < stop")
            if np.any(self.trials[1:, 0] < self.trials[:-1, 1]):
                raise SessionError("trials must be sorted and non-overlapping")

    def _validate_frames(self) -> None:
        if self.frames is None and self.frame_times is None:
            return
        if self.frames is None:
            raise SessionError("frame_times given without frames")
        if self.frame_times is None:
            raise SessionError(
                "frames given without frame_times: every frame needs a timestamp (seconds, session clock), "
                "e.g. np.arange(n_frames) / fps + first_frame_time"
            )
        if self.frames.ndim != 3:
            raise SessionError(f"frames must be (n_frames, height, width) grayscale; got shape {self.frames.shape}")
        if self.frames.shape[0] != self.frame_times.shape[0]:
            raise SessionError(
                f"{self.frames.shape[0]} frames but {self.frame_times.shape[0]} frame_times; they must match"
            )
        _validate_clock("frame_times", self.frame_times)
        if self.frames.dtype != np.uint8:
            _check_finite("frames", self.frames)

    # ------------------------------------------------------------------ conveniences
    @property
    def duration(self) -> float:
        return self.stop - self.start

    @property
    def n_spikes(self) -> int:
        return int(self.spike_times.size)

    def firing_rates(self) -> np.ndarray:
        """(n_neurons,) float64 mean rate in Hz over the whole session."""
        return np.bincount(self.spike_neurons, minlength=self.n_neurons) / self.duration

    def modalities(self) -> list[str]:
        """Names of the streams present: 'spikes', then 'frames', then behavior names."""
        out = ["spikes"]
        if self.frames is not None:
            out.append("frames")
        out.extend(sorted(self.behavior))
        return out

    def slice_time(self, t0: float, t1: float) -> Session:
        """The part of the session in [t0, t1), every stream cut on its own clock (for held-out replay)."""
        t0, t1 = max(t0, self.start), min(t1, self.stop)
        lo, hi = np.searchsorted(self.spike_times, [t0, t1], side="left")
        frames = frame_times = None
        if self.frame_times is not None and self.frames is not None:
            flo, fhi = np.searchsorted(self.frame_times, [t0, t1], side="left")
            frames, frame_times = self.frames[flo:fhi], self.frame_times[flo:fhi]
        behavior = {}
        for name, b in self.behavior.items():
            blo, bhi = np.searchsorted(b.times, [t0, t1], side="left")
            behavior[name] = Behavior(b.times[blo:bhi], b.values[blo:bhi], b.unit)
        trials = None
        if self.trials is not None:
            keep = (self.trials[:, 0] >= t0) & (self.trials[:, 1] <= t1)
            trials = self.trials[keep]
        return Session(
            spike_times=self.spike_times[lo:hi],
            spike_neurons=self.spike_neurons[lo:hi],
            n_neurons=self.n_neurons,
            start=t0,
            stop=t1,
            neuron_ids=self.neuron_ids,
            frames=frames,
            frame_times=frame_times,
            behavior=behavior,
            trials=trials,
            truth=self.truth,
            metadata=self.metadata,
        )

    def metadata_json(self) -> str:
        """Metadata as JSON; fails early (at save time) if a value is not serialisable."""
        return json.dumps(self.metadata, sort_keys=True)


def _check_finite(name: str, a: np.ndarray) -> None:
    if a.size and not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(np.ravel(a)))[0])
        raise SessionError(f"{name} contains NaN or infinite values (first at flat index {bad})")


def _validate_clock(name: str, t: np.ndarray) -> None:
    if t.ndim != 1:
        raise SessionError(f"{name} must be 1-D; got shape {t.shape}")
    _check_finite(name, t)
    if t.size > 1 and np.any(np.diff(t) <= 0):
        i = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
        raise SessionError(f"{name} must be strictly increasing: sample {i} ({t[i]:.6f} s) <= sample {i - 1}")
