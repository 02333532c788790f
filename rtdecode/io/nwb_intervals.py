"""Parts of an NWB recording chosen by name: epochs by tag, intervals tables, trials by a column's value.

Labs mark what happened when in NWB's interval tables (epochs with `tags`, trials with condition columns,
custom tables such as running bouts); `rtdecode info/prepare/train --epoch/--trials` read them here so that a
user selects "the gratings epochs" or "trials with contrast 0.8" without converting times by hand.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rtdecode.data.session import SessionError
from rtdecode.io.nwb import _pynwb

__all__ = ["merged", "nwb_intervals"]


def nwb_intervals(path: str | os.PathLike[str], epoch: str | None = None, trials: str | None = None) -> np.ndarray:
    """The [start, stop) intervals, s, that `epoch` and `trials` name in an NWB file, sorted: (k, 2) float64.

    `epoch` is a tag of rows of the epochs table (NWB's `tags` column, e.g. "gratings") or the name of an
    intervals table (`nwb.intervals`, e.g. "running_bouts"), whose rows are then all taken. `trials` is
    "COLUMN=VALUE": the rows of the trials table whose COLUMN reads VALUE (compared as text: "contrast=0.8",
    "stimulus=grating"). With both, the intervals are those of the trials that lie inside a selected epoch.

    Raises:
        SessionError: nothing matches, or the table or column does not exist; the message lists what does.
    """
    pynwb = _pynwb()
    with pynwb.NWBHDF5IO(str(path), mode="r", load_namespaces=True) as io:
        nwb = io.read()
        picked = _epoch_intervals(nwb, epoch, path) if epoch is not None else None
        if trials is not None:
            rows = _trial_intervals(nwb, trials, path)
            if picked is not None:
                inside = [(a <= rows[:, 0]) & (rows[:, 1] <= b) for a, b in picked]
                rows = rows[np.logical_or.reduce(inside)]
                if not rows.size:
                    raise SessionError(f"{path}: no trial with {trials} lies inside epoch {epoch!r}")
            picked = rows
    if picked is None:
        raise SessionError("nwb_intervals needs an epoch or a trials selection")
    return merged(picked)


def merged(intervals: np.ndarray) -> np.ndarray:
    """The union of [start, stop) intervals as sorted, disjoint intervals; empty ones dropped. Epochs of one tag
    may overlap or touch (a tag on nested epochs): a session's trials may not."""
    keep = intervals[intervals[:, 1] > intervals[:, 0]]
    keep = keep[np.argsort(keep[:, 0], kind="stable")]
    out: list[list[float]] = []
    for start, stop in keep:
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([float(start), float(stop)])
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def _table_intervals(table: Any, rows: np.ndarray | None = None) -> np.ndarray:
    start, stop = np.asarray(table["start_time"].data[:], float), np.asarray(table["stop_time"].data[:], float)
    out = np.column_stack([start, stop])
    return out if rows is None else out[rows]


def _epoch_intervals(nwb: Any, name: str, path: object) -> np.ndarray:
    """Epochs tagged `name`; failing that, the intervals table of that name. Tags first: they are NWB's way to
    name epochs, and a lab that also keeps a table of the same name would mean the same periods."""
    tags: set[str] = set()
    if nwb.epochs is not None and len(nwb.epochs) > 0 and "tags" in nwb.epochs.colnames:
        row_tags = [list(t) for t in nwb.epochs["tags"][:]]
        tags = {str(t) for ts in row_tags for t in ts}
        rows = np.array([name in [str(t) for t in ts] for ts in row_tags])
        if rows.any():
            return _table_intervals(nwb.epochs, rows)
    tables = {k: v for k, v in nwb.intervals.items() if k not in ("epochs", "trials")} if nwb.intervals else {}
    if name in tables and len(tables[name]) > 0:
        return _table_intervals(tables[name])
    raise SessionError(
        f"{path}: no epoch tagged {name!r} and no intervals table of that name "
        f"(epoch tags: {sorted(tags) or 'none'}; intervals tables: {sorted(tables) or 'none'})"
    )


def _trial_intervals(nwb: Any, where: str, path: object) -> np.ndarray:
    """Trials whose `column` reads `value`, compared as text: the command line gives text, and trial columns
    hold strings, numbers or bytes depending on the pipeline that wrote them."""
    column, sep, value = where.partition("=")
    if not sep or not column:
        raise SessionError(f"--trials takes COLUMN=VALUE (e.g. stimulus=grating); got {where!r}")
    if nwb.trials is None or len(nwb.trials) == 0:
        raise SessionError(f"{path}: the file has no trials table")
    if column not in nwb.trials.colnames:
        raise SessionError(f"{path}: the trials table has no column {column!r} (columns: {list(nwb.trials.colnames)})")
    # table[column][:] resolves a ragged (indexed) column to its rows; `.data` would give the index offsets
    values = [str(v.decode() if isinstance(v, bytes) else v) for v in nwb.trials[column][:]]
    rows = np.array([v == value for v in values])
    if not rows.any():
        shown = sorted(set(values))[:10]
        raise SessionError(f"{path}: no trial has {column} = {value!r} (values: {shown})")
    return _table_intervals(nwb.trials, rows)
