"""Reading and writing sessions: the native `.npz`, NWB (`[nwb]` extra), Kilosort/phy folders (read only) and the
Neuroformer release's layout.

`load_session` / `save_session` pick the format from the file extension (a folder is a spike sorter's output), so
the CLI and tools accept any of them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from rtdecode.data.session import Session, SessionError
from rtdecode.io.npz import load_npz, save_npz

__all__ = ["load_session", "save_session", "load_npz", "save_npz"]


def load_session(
    path: str | os.PathLike[str],
    *,
    units: str = "good",
    behavior: str | os.PathLike[str] | None = None,
    t0: float | None = None,
    t1: float | None = None,
    epoch: str | None = None,
    trials: str | None = None,
) -> Session:
    """Load a session from `.npz` (native), `.nwb` (needs `pip install rtdecode[nwb]`) or a Kilosort/phy output
    folder (`rtdecode.io.phy`: `units` picks good / mua / all units, `behavior` names a session file whose
    behavior, frames and trials join the spikes). `t0`/`t1` keep only [t0, t1) s of the recording.

    `epoch` (an epoch tag or intervals table) and `trials` ("COLUMN=VALUE") select parts of an NWB recording by
    name (`rtdecode.io.nwb_intervals`; of the behavior file for a phy folder): the session keeps the span from
    the first selected interval's start to the last one's stop, and the intervals become its trials, so the
    train/validation/test split cuts between them, never across. `t0`/`t1` then cut that span further."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such session file or folder: {path}")
    if behavior is not None and not p.is_dir():
        raise SessionError(f"{path}: a behavior file joins a spike-sorter folder only; {p.name} has its own behavior")
    if p.is_dir():
        from rtdecode.io.phy import load_phy

        if behavior is not None and Path(behavior).is_dir():
            raise SessionError(f"{behavior}: a behavior file is a session file (.npz or .nwb), not a folder")
        session = load_phy(p, units=units, behavior=None if behavior is None else load_session(behavior))
    elif p.suffix.lower() == ".npz":
        session = load_npz(p)
    elif p.suffix.lower() == ".nwb":
        from rtdecode.io.nwb import load_nwb

        session = load_nwb(p)
    else:
        raise SessionError(f"{path}: unknown session format '{p.suffix}'; use .npz (native), .nwb or a phy folder")
    if epoch is not None or trials is not None:
        session = _select_intervals(session, behavior if p.is_dir() else p, epoch, trials)
    if t0 is not None or t1 is not None:
        lo = session.start if t0 is None else t0
        hi = session.stop if t1 is None else t1
        if not session.start <= lo < hi <= session.stop:
            raise SessionError(
                f"{path}: --t0/--t1 [{lo}, {hi}) must lie inside the recording [{session.start}, {session.stop})"
            )
        session = session.slice_time(lo, hi)
    return session


def save_session(session: Session, path: str | os.PathLike[str]) -> None:
    """Save `session` atomically as `.npz` or `.nwb`, chosen by the extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        save_npz(session, path)
    elif suffix == ".nwb":
        from rtdecode.io.nwb import save_nwb

        save_nwb(session, path)
    else:
        raise SessionError(f"{path}: unknown session format '{suffix}'; use .npz (native) or .nwb")


def _select_intervals(
    session: Session, nwb_path: str | os.PathLike[str] | None, epoch: str | None, trials: str | None
) -> Session:
    """The span of the named NWB intervals, with those intervals as its trials."""
    if nwb_path is None or Path(nwb_path).suffix.lower() != ".nwb":
        raise SessionError(
            "--epoch and --trials select parts of an NWB recording by name; "
            f"{nwb_path or 'a phy folder without --behavior'} is not an .nwb file (use --t0/--t1)"
        )
    from rtdecode.io.nwb_intervals import merged, nwb_intervals

    intervals = merged(np.clip(nwb_intervals(nwb_path, epoch=epoch, trials=trials), session.start, session.stop))
    if not intervals.size:
        raise SessionError(
            f"{nwb_path}: the selected intervals lie outside the recording [{session.start}, {session.stop})"
        )
    lo, hi = float(intervals[0, 0]), float(intervals[-1, 1])
    return dataclasses.replace(session.slice_time(lo, hi), trials=intervals)
