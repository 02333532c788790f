"""Reading and writing sessions: the native `.npz`, NWB (`[nwb]` extra) and the Neuroformer release's layout.

`load_session` / `save_session` pick the format from the file extension, so the CLI and tools accept any of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtdecode.data.session import Session, SessionError
from rtdecode.io.npz import load_npz, save_npz

__all__ = ["load_session", "save_session", "load_npz", "save_npz"]


def load_session(path: str | os.PathLike[str]) -> Session:
    """Load a session from `.npz` (native) or `.nwb` (needs `pip install rtdecode[nwb]`)."""
    suffix = Path(path).suffix.lower()
    if not Path(path).exists():
        raise FileNotFoundError(f"no such session file: {path}")
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".nwb":
        from rtdecode.io.nwb import load_nwb

        return load_nwb(path)
    raise SessionError(f"{path}: unknown session format '{suffix}'; use .npz (native) or .nwb")


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
