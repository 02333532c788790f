"""The native session format: one uncompressed `.npz` (a zip of `.npy` arrays), readable without rtdecode.

Layout, format version 1 (every key is a plain array; nothing is pickled, so files from others are safe to open):

| key                          | dtype / shape          | meaning                                            |
|------------------------------|------------------------|----------------------------------------------------|
| `format`                     | str scalar             | always "rtdecode-session"                          |
| `format_version`             | int scalar             | 1                                                  |
| `spike_times`                | float64 (S,)           | seconds, non-decreasing                            |
| `spike_neurons`              | int32 (S,)             | neuron index 0..N-1                                |
| `n_neurons`, `start`, `stop` | scalars                | N and the recorded interval [start, stop) seconds  |
| `neuron_ids`                 | int64 (N,)             | acquisition-system unit IDs                        |
| `frames`, `frame_times`      | uint8/float32 (F,H,W), float64 (F,) | optional stimulus video               |
| `behavior/<name>/times`      | float64 (T,)           | optional, one pair per behavior variable           |
| `behavior/<name>/values`     | float64 (T,)           |                                                    |
| `behavior/<name>/unit`       | str scalar             |                                                    |
| `trials`                     | float64 (n, 2)         | optional trial intervals                           |
| `truth/<name>`               | any numeric            | optional simulator ground truth (e.g. `truth/W`)   |
| `metadata_json`              | str scalar             | JSON object                                        |
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from rtdecode.data.session import Behavior, Session, SessionError
from rtdecode.io.atomic import atomic_write

FORMAT = "rtdecode-session"
FORMAT_VERSION = 1


def save_npz(session: Session, path: str | os.PathLike[str]) -> None:
    """Write `session` to `path` atomically (temp file + rename)."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "spike_times": session.spike_times,
        "spike_neurons": session.spike_neurons,
        "n_neurons": np.array(session.n_neurons),
        "start": np.array(session.start),
        "stop": np.array(session.stop),
        "neuron_ids": np.asarray(session.neuron_ids),
        "metadata_json": np.array(session.metadata_json()),
    }
    if session.frames is not None and session.frame_times is not None:
        arrays["frames"] = session.frames
        arrays["frame_times"] = session.frame_times
    for name, b in session.behavior.items():
        if "/" in name:
            raise SessionError(f"behavior name {name!r} must not contain '/'")
        arrays[f"behavior/{name}/times"] = b.times
        arrays[f"behavior/{name}/values"] = b.values
        arrays[f"behavior/{name}/unit"] = np.array(b.unit)
    if session.trials is not None:
        arrays["trials"] = session.trials
    for name, a in session.truth.items():
        arrays[f"truth/{name}"] = np.asarray(a)
    with atomic_write(path) as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stubs type **kwds as allow_pickle


def load_npz(path: str | os.PathLike[str]) -> Session:
    """Read a session written by `save_npz`. Raises SessionError naming what is missing or wrong."""
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise SessionError(f"{path}: not a readable .npz session ({e})") from e
    with z:
        try:
            return _session_from_npz(z, path)
        except ValueError as e:  # e.g. an object array: numpy refuses it (allow_pickle=False) only when read
            if isinstance(e, SessionError):
                raise
            raise SessionError(f"{path}: unreadable session array ({e})") from e


def _session_from_npz(z: Any, path: str | os.PathLike[str]) -> Session:
    """Build the Session from an open NpzFile (arrays are read, and validated, here)."""
    keys = set(z.files)
    if "format" not in keys or str(z["format"]) != FORMAT:
        raise SessionError(f"{path}: not an rtdecode session file (missing format='{FORMAT}')")
    version = int(z["format_version"])
    if version > FORMAT_VERSION:
        raise SessionError(
            f"{path}: session format version {version} is newer than this rtdecode reads ({FORMAT_VERSION}); "
            "upgrade rtdecode"
        )
    missing = {"spike_times", "spike_neurons", "n_neurons", "start", "stop"} - keys
    if missing:
        raise SessionError(f"{path}: missing arrays {sorted(missing)}")
    behavior = {}
    for k in sorted(keys):
        if k.startswith("behavior/") and k.endswith("/times"):
            name = k[len("behavior/") : -len("/times")]
            unit = str(z[f"behavior/{name}/unit"]) if f"behavior/{name}/unit" in keys else ""
            behavior[name] = Behavior(z[k], z[f"behavior/{name}/values"], unit)
    truth = {k[len("truth/") :]: z[k] for k in keys if k.startswith("truth/")}
    return Session(
        spike_times=z["spike_times"],
        spike_neurons=z["spike_neurons"],
        n_neurons=int(z["n_neurons"]),
        start=float(z["start"]),
        stop=float(z["stop"]),
        neuron_ids=z["neuron_ids"] if "neuron_ids" in keys else None,
        frames=z["frames"] if "frames" in keys else None,
        frame_times=z["frame_times"] if "frame_times" in keys else None,
        behavior=behavior,
        trials=z["trials"] if "trials" in keys else None,
        truth=truth,
        metadata=json.loads(str(z["metadata_json"])) if "metadata_json" in keys else {},
    )
