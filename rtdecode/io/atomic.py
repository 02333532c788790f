"""Atomic file writes: a reader (or a crash) never sees a half-written checkpoint, session or recording."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside `path`, fsynced and renamed over it on success; removed on failure.

    For writers that must open the file themselves (HDF5/NWB, ONNX); `atomic_write` hands out a file object.
    `suffix` lets the temporary keep an extension its writer insists on (pynwb warns about any but ".nwb").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory entry (best effort; some filesystems refuse)."""
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for writing; on success fsync it and rename it over `path`.

    The temporary lives in the same directory so `os.replace` is a same-filesystem rename (atomic on POSIX).
    On any exception the temporary is removed and `path` is untouched.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
