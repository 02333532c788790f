"""The published Neuroformer release's session layout: a dict of dense arrays, converted to and from a Session.

The release keeps a session as
- `spikes`: (N, T) spike counts per neuron per time bin of width `dt` (e.g. 0.01 s);
- `stimulus`: grayscale video, (F, H, W) or (H, W, F);
- behavior such as `speed`, `phi` (eye azimuth) and `th` (eye elevation), each (T_b,) on its own sample interval.

Counts become spike events at bin centres, t0 + (j + 0.5) * dt, so binning the Session again at the same dt with
floor((t - t0) / dt) puts every spike back into bin j: dict -> Session -> dict reproduces the count matrix exactly.
(Placing spikes at bin edges would be fragile: floating-point error can push t0 + j*dt just below the edge.)

The release ships pickles. Pickles are never read here: unpickling runs arbitrary code from the file. Convert a
pickle you trust once (see `load_neuroformer`) and use the `.npz`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rtdecode.data.session import Behavior, Session, SessionError

__all__ = ["RELEASE_TO_RTDECODE", "from_neuroformer_dict", "load_neuroformer", "to_neuroformer_dict"]

# Release key -> rtdecode behavior name; keys not listed keep their name.
RELEASE_TO_RTDECODE: dict[str, str] = {"speed": "speed", "phi": "phi", "th": "theta"}
RTDECODE_TO_RELEASE: dict[str, str] = {v: k for k, v in RELEASE_TO_RTDECODE.items()}

_PICKLE_SUFFIXES = {".pkl", ".pickle", ".pk", ".p", ".pt", ".pth", ".joblib"}


def from_neuroformer_dict(
    d: Mapping[str, np.ndarray],
    *,
    dt: float,
    frame_rate: float | None,
    behavior_dt: float | None,
    behavior_keys: Sequence[str] = ("speed", "phi", "th"),
    t0: float = 0.0,
    frame_axis: int = 0,
) -> Session:
    """Build a Session from the release's dict of arrays.

    Args:
        d: must hold `spikes` (N, T) counts; may hold `stimulus` and the `behavior_keys`.
        dt: spike bin width in seconds; a count c in bin j becomes c spikes at t0 + (j + 0.5) * dt.
        frame_rate: stimulus frames per second (frame i at t0 + i / frame_rate); required if `stimulus` is present.
        behavior_dt: behavior sample interval in seconds (sample i at t0 + i * behavior_dt); required if any of
            `behavior_keys` is present. Keys that are absent are skipped.
        behavior_keys: release keys to read as behavior; `th` is stored as `theta` (see RELEASE_TO_RTDECODE).
        t0: session start in seconds.
        frame_axis: which axis of `stimulus` counts frames: 0 for (F, H, W) (default), 2 or -1 for (H, W, F).

    Returns:
        A Session over [t0, max(t0 + T * dt, just after the last frame/behavior sample)), spikes sorted by time then
        neuron, neurons numbered by row; metadata records the conversion parameters.

    Raises:
        SessionError: `spikes` missing or not 2-D, counts negative, non-integer or non-finite, a rate missing or
            not positive, or a behavior array that is not 1-D.
    """
    if "spikes" not in d:
        raise SessionError(f"no 'spikes' array (N neurons x T bins) in the Neuroformer dict; keys: {sorted(d)}")
    _positive("dt", dt)
    counts = _counts(np.asarray(_dense(d["spikes"])))
    n_neurons, n_bins = counts.shape
    # nonzero on the (T, N) view walks bins in order and neurons within a bin: time-then-neuron sorted for free.
    bins, neurons = np.nonzero(counts.T)
    reps = counts.T[bins, neurons]
    spike_bins = np.repeat(bins, reps)
    spike_times = t0 + (spike_bins + 0.5) * dt
    spike_neurons = np.repeat(neurons, reps).astype(np.int32)

    stop = t0 + n_bins * dt
    frames = frame_times = None
    if "stimulus" in d:
        if frame_rate is None:
            raise SessionError("the dict has a 'stimulus' video: pass frame_rate (frames per second)")
        _positive("frame_rate", frame_rate)
        frames = np.moveaxis(np.asarray(d["stimulus"]), frame_axis, 0)
        if frames.ndim != 3:
            raise SessionError(f"'stimulus' must be a 3-D grayscale video; got shape {np.shape(d['stimulus'])}")
        frame_times = t0 + np.arange(frames.shape[0], dtype=np.float64) / frame_rate
        if frame_times.size:
            stop = max(stop, np.nextafter(frame_times[-1], np.inf))

    behavior: dict[str, Behavior] = {}
    for key in behavior_keys:
        if key not in d:
            continue
        if behavior_dt is None:
            raise SessionError(f"the dict has behavior {key!r}: pass behavior_dt (seconds between samples)")
        _positive("behavior_dt", behavior_dt)
        values = np.asarray(d[key], dtype=np.float64)
        if values.ndim == 2 and 1 in values.shape:  # MATLAB stores vectors as (1, T) or (T, 1)
            values = values.ravel()
        if values.ndim != 1:
            raise SessionError(f"behavior {key!r} must be 1-D (one value per sample); got shape {values.shape}")
        times = t0 + np.arange(values.size, dtype=np.float64) * behavior_dt
        if times.size:
            stop = max(stop, np.nextafter(times[-1], np.inf))
        behavior[RELEASE_TO_RTDECODE.get(key, key)] = Behavior(times, values)

    return Session(
        spike_times=spike_times,
        spike_neurons=spike_neurons,
        n_neurons=n_neurons,
        start=t0,
        stop=max(stop, np.nextafter(t0, np.inf)),
        frames=frames,
        frame_times=frame_times,
        behavior=behavior,
        metadata={"source": "neuroformer", "dt": dt, "frame_rate": frame_rate, "behavior_dt": behavior_dt},
    )


def to_neuroformer_dict(
    session: Session, *, dt: float, n_bins: int | None = None, frame_axis: int = 0
) -> dict[str, np.ndarray]:
    """The release's layout from a Session (the inverse of `from_neuroformer_dict`).

    Args:
        session: any Session.
        dt: bin width in seconds; spike at t goes to bin floor((t - session.start) / dt).
        n_bins: number of bins T; default ceil(duration / dt) (exact multiples are not rounded up). Pass it when
            frames or behavior made the session longer than the original spike matrix.
        frame_axis: where the frame axis goes in `stimulus` (0: (F, H, W), as stored).

    Returns:
        `spikes` (N, T) int32 counts; `stimulus` and `stimulus_times` if the session has frames; for each
        behavior variable its values under the release name (`theta` -> `th`) and its timestamps under
        `<name>_times`. Behavior is not resampled.

    Raises:
        SessionError: a spike falls outside the requested `n_bins`.
    """
    _positive("dt", dt)
    if n_bins is None:
        ratio = session.duration / dt
        n_bins = int(round(ratio)) if np.isclose(ratio, round(ratio), rtol=1e-9, atol=1e-9) else int(np.ceil(ratio))
        n_bins = max(n_bins, 1)
    bins = np.floor((session.spike_times - session.start) / dt).astype(np.int64)
    if bins.size and (bins.min() < 0 or bins.max() >= n_bins):
        raise SessionError(f"spikes fall in bins {bins.min()}..{bins.max()}, outside 0..{n_bins - 1}; raise n_bins")
    # Fill only the non-zero cells: a dense int64 bincount would need 8 bytes x N x T of scratch (~0.5 GB for the
    # release's 25-minute, 386-neuron session at 10 ms).
    flat = session.spike_neurons.astype(np.int64) * n_bins + bins
    cells, counts = np.unique(flat, return_counts=True)
    spikes = np.zeros(session.n_neurons * n_bins, dtype=np.int32)
    spikes[cells] = counts
    out: dict[str, np.ndarray] = {"spikes": spikes.reshape(session.n_neurons, n_bins)}  # (N, T)
    if session.frames is not None and session.frame_times is not None:
        out["stimulus"] = np.moveaxis(session.frames, 0, frame_axis)
        out["stimulus_times"] = session.frame_times
    for name, b in session.behavior.items():
        key = RTDECODE_TO_RELEASE.get(name, name)
        if key in out:
            raise SessionError(f"behavior {name!r} and another variable both map to release key {key!r}")
        out[key] = b.values
        out[f"{key}_times"] = b.times
    return out


def load_neuroformer(path: str | os.PathLike[str], **kwargs: object) -> Session:
    """Read a release-layout dict from `.npz` or MATLAB `.mat` and convert it with `from_neuroformer_dict`.

    Pickles (`.pkl`, the release's own format) are refused: unpickling a file runs whatever code it contains.
    Convert a pickle you trust once, in a Python session you trust:

        import pickle, numpy as np
        with open("session.pkl", "rb") as f:
            d = pickle.load(f)
        keep = ("spikes", "stimulus", "speed", "phi", "th")
        np.savez("session.npz", **{k: np.asarray(v) for k, v in d.items() if k in keep})

    Args:
        path: `.npz` (read with allow_pickle=False) or `.mat` (v5 via scipy.io.loadmat; v7.3 is HDF5 and is read
            with h5py, transposing MATLAB's column-major arrays).
        **kwargs: passed to `from_neuroformer_dict` (dt, frame_rate, behavior_dt, ...).

    Raises:
        SessionError: a pickle or unknown suffix, an unreadable file, or object arrays inside an `.npz`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise SessionError(
            f"{path}: refusing to read a pickle (unpickling runs code from the file). If you trust it, convert it "
            "once: `d = pickle.load(open(path, 'rb')); np.savez('session.npz', **{k: np.asarray(v) for k, v in "
            "d.items()})`, then load the .npz"
        )
    if suffix == ".npz":
        d = _read_npz(path)
    elif suffix == ".mat":
        d = _read_mat(path)
    else:
        raise SessionError(f"{path}: unknown suffix {suffix!r}; Neuroformer dicts are read from .npz or .mat")
    return from_neuroformer_dict(d, **kwargs)  # type: ignore[arg-type]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise SessionError(
            f"{path}: holds object arrays, which need pickle to read and are refused; save plain numeric arrays ({e})"
        ) from e
    except OSError as e:
        raise SessionError(f"{path}: not a readable .npz ({e})") from e


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    try:
        import scipy.io
    except ImportError as e:
        raise ImportError("reading .mat files needs scipy: pip install scipy") from e
    try:
        raw = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3: an HDF5 file
        return _read_mat73(path)
    return {k: _dense(v) for k, v in raw.items() if not k.startswith("__")}


def _read_mat73(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        for k, v in f.items():
            if isinstance(v, h5py.Dataset) and not k.startswith("#"):
                out[k] = np.asarray(v[()]).T  # MATLAB is column-major: h5py sees every array transposed
    return out


def _dense(a: object) -> np.ndarray:
    """scipy.sparse (loadmat returns sparse MATLAB matrices as such) -> ndarray; anything else as an array."""
    toarray = getattr(a, "toarray", None)
    return np.asarray(toarray() if callable(toarray) else a)


def _counts(a: np.ndarray) -> np.ndarray:
    """(N, T) int64 counts, or SessionError if the matrix is not non-negative whole numbers."""
    if a.ndim != 2:
        raise SessionError(f"'spikes' must be (N neurons, T bins); got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.number):
        raise SessionError(f"'spikes' must hold numbers; got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)):
            raise SessionError("'spikes' contains NaN or infinite counts")
        if not np.all(a == np.round(a)):
            r, c = np.argwhere(a != np.round(a))[0]
            raise SessionError(
                f"'spikes' must be whole spike counts; neuron {r}, bin {c} holds {a[r, c]!r}. "
                "Rates or smoothed traces cannot be turned into spike times."
            )
    if a.size and a.min() < 0:
        r, c = np.argwhere(a < 0)[0]
        raise SessionError(f"'spikes' counts must be >= 0; neuron {r}, bin {c} holds {a[r, c]!r}")
    return a.astype(np.int64)


def _positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise SessionError(f"{name} must be a positive number of seconds/Hz; got {value!r}")
