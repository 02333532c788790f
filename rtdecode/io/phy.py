"""Kilosort / phy output folders: sorted units as a `Session`.

A folder holds `spike_times.npy` (sample index of every spike), `spike_clusters.npy` (its unit after curation;
Kilosort without phy leaves only `spike_templates.npy`, used then), `params.py` (`sample_rate`) and the unit
labels: `cluster_group.tsv` (phy's curation) over `cluster_KSLabel.tsv` (Kilosort's own), per unit. Which units
become neurons (`units`):
* "good": units labelled good;
* "mua": good and multi-unit (everything but noise and unlabelled);
* "all": every unit with spikes.
A neuron's ID is its cluster ID, so a rig sending phy's unit numbers reaches the right neuron.

A sorter records no behavior: `behavior` is a session (from a `.npz` or `.nwb` file, `rtdecode.io.load_session`)
whose behavior, frames and trials join the spikes. Both are taken to be on one clock, the recording's, starting at 0 with the first sample
(`spike_times / sample_rate`); put a behavior file on that clock before joining.
`params.py` is read as data (literal assignments), never executed.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np

from rtdecode.data.session import Session, SessionError

__all__ = ["UNIT_SELECTIONS", "is_phy_folder", "load_phy"]

UNIT_SELECTIONS = {"good": {"good"}, "mua": {"good", "mua"}, "all": None}
KNOWN_LABELS = {"good", "mua", "noise", "unsorted"}


def is_phy_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "spike_times.npy").is_file()


def load_phy(folder: str | Path, units: str = "good", behavior: Session | None = None) -> Session:
    """The spikes of the selected `units` of a Kilosort/phy `folder`, with `behavior`'s streams if given."""
    folder = Path(folder)
    if units not in UNIT_SELECTIONS:
        raise SessionError(f"unknown unit selection {units!r}: use one of {', '.join(UNIT_SELECTIONS)}")
    if not is_phy_folder(folder):
        raise SessionError(f"{folder}: not a Kilosort/phy output folder (no spike_times.npy)")
    rate = _sample_rate(folder / "params.py")
    samples = _vector(folder / "spike_times.npy")
    clusters_path = folder / "spike_clusters.npy"
    if not clusters_path.is_file():
        clusters_path = folder / "spike_templates.npy"
        if not clusters_path.is_file():
            raise SessionError(f"{folder}: neither spike_clusters.npy (phy) nor spike_templates.npy (Kilosort)")
    clusters = _vector(clusters_path).astype(np.int64)
    if clusters.size != samples.size:
        raise SessionError(
            f"{folder}: spike_times.npy has {samples.size} spikes but {clusters_path.name} has {clusters.size}; "
            "they must come from the same sorting"
        )
    labels = _labels(folder)
    present = np.unique(clusters)
    wanted = UNIT_SELECTIONS[units]
    chosen = present if wanted is None else present[[labels.get(int(c), "unsorted") in wanted for c in present]]
    if chosen.size == 0:
        counts = {lab: sum(labels.get(int(c), "unsorted") == lab for c in present) for lab in sorted(KNOWN_LABELS)}
        raise SessionError(
            f"{folder}: no {units} units among {present.size} (labels: {counts}); try --units mua or all"
        )
    keep = np.isin(clusters, chosen)
    times = samples[keep].astype(np.float64) / rate
    order = np.argsort(times, kind="stable")
    times, neurons = times[order], np.searchsorted(chosen, clusters[keep][order]).astype(np.int32)
    extra = behavior
    stop = float(times[-1]) + 1.0 / rate if times.size else 1.0 / rate
    start = 0.0
    if extra is not None:
        start, stop = min(start, extra.start), max(stop, extra.stop)
    metadata = {"source": "phy", "folder": str(folder), "units": units, "sample_rate": rate}
    return Session(
        spike_times=times,
        spike_neurons=neurons,
        n_neurons=int(chosen.size),
        start=start,
        stop=stop,
        neuron_ids=chosen,
        frames=None if extra is None else extra.frames,
        frame_times=None if extra is None else extra.frame_times,
        behavior={} if extra is None else dict(extra.behavior),
        trials=None if extra is None else extra.trials,
        metadata=metadata,
    )


def _sample_rate(path: Path) -> float:
    if not path.is_file():
        raise SessionError(f"{path.parent}: no params.py, so no sample_rate to turn spike samples into seconds")
    try:
        tree = ast.parse(path.read_text())
    except SyntaxError as e:
        raise SessionError(f"{path}: not readable as phy params ({e})") from e
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "sample_rate" for t in node.targets
        ):
            try:
                rate = float(ast.literal_eval(node.value))
            except (ValueError, TypeError) as e:
                raise SessionError(f"{path}: sample_rate must be a number") from e
            if not np.isfinite(rate) or rate <= 0:
                raise SessionError(f"{path}: sample_rate must be positive, got {rate}")
            return rate
    raise SessionError(f"{path}: no sample_rate = ... line")


def _vector(path: Path) -> np.ndarray:
    a = np.load(path, allow_pickle=False)
    if a.ndim == 2 and 1 in a.shape:
        a = a.ravel()
    if a.ndim != 1:
        raise SessionError(f"{path}: expected one value per spike, got shape {a.shape}")
    return a


def _labels(folder: Path) -> dict[int, str]:
    """cluster ID -> label: Kilosort's, overridden by phy's curation where it has one."""
    labels: dict[int, str] = {}
    for name, column in (("cluster_KSLabel.tsv", "KSLabel"), ("cluster_group.tsv", "group")):
        path = folder / name
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows and ("cluster_id" not in rows[0] or column not in rows[0]):
            raise SessionError(f"{path}: expected the columns cluster_id and {column}, got {list(rows[0])}")
        for row in rows:
            label = (row[column] or "unsorted").strip().lower()
            if label not in KNOWN_LABELS:
                raise SessionError(
                    f"{path}: unknown label {row[column]!r} for cluster {row['cluster_id']}; "
                    f"known: {', '.join(sorted(KNOWN_LABELS))}"
                )
            labels[int(row["cluster_id"])] = label
    return labels
