"""NWB (Neurodata Without Borders) as the interchange format: read other labs' recordings, hand ours to their tools.

Needs the `[nwb]` extra; pynwb is imported inside the functions so that `import rtdecode.io` stays cheap and works
without it. NWB is HDF5, so reading a file from someone else never unpickles anything.

What maps to what (reading and writing):

| Session field            | NWB object                                                                          |
|--------------------------|-------------------------------------------------------------------------------------|
| spikes, `neuron_ids`     | Units table: one row per neuron (row order = neuron index), `spike_times`, row ids   |
| `start`, `stop`          | Units `obs_intervals` (one [start, stop] per unit) when present; else inferred      |
| `behavior[name]`         | TimeSeries `name` in processing module "behavior" (timestamps, unit)                |
| `frames`, `frame_times`  | ImageSeries "stimulus_frames" in `stimulus`, data (F, H, W), timestamps             |
| `trials`                 | the trials table (`start_time`, `stop_time`)                                        |
| `truth[name]`            | ScratchData `truth_<name>` in `scratch` (NWB has no standard home for ground truth) |
| `metadata`               | `identifier`, `session_description`, `session_start_time` + JSON in scratch        |

NWB has no `GrayscaleImageSeries` type; a plain ImageSeries with 3-D data (frames, rows, columns) is the standard
way to store grayscale video, so that is what is written and what is looked for.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.data.session import Behavior, Session, SessionError
from rtdecode.io.atomic import atomic_path

__all__ = ["load_nwb", "save_nwb"]

BEHAVIOR_MODULE = "behavior"
FRAMES_NAME = "stimulus_frames"
TRUTH_PREFIX = "truth_"
TRUTH_DESCRIPTION = "rtdecode ground truth (simulator) array"
METADATA_NAME = "rtdecode_metadata"
METADATA_DESCRIPTION = "rtdecode Session.metadata as a JSON object"
# Session start is unknown for simulations; the Unix epoch says "unknown" more honestly than the time of saving.
DEFAULT_START_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _pynwb() -> Any:
    try:
        import pynwb
    except ImportError as e:
        raise ImportError("NWB support needs pynwb, which is not installed: pip install 'rtdecode[nwb]'") from e
    return pynwb


# ---------------------------------------------------------------------------------------------------- reading
def load_nwb(
    path: str | os.PathLike[str],
    *,
    units_table: str = "units",
    behavior_names: Sequence[str] | None = None,
    stimulus_name: str | None = None,
) -> Session:
    """Read a Session from an NWB file, whoever wrote it.

    Spikes come from the Units table: row i is neuron i, `neuron_ids` are the table's ids, and all units' spike
    times are merged and stably sorted by time (so simultaneous spikes end up in neuron-index order).

    Behavior is every TimeSeries in processing module "behavior" (also inside containers such as
    BehavioralTimeSeries, Position, EyeTracking or CompassDirection) and every plain TimeSeries/SpatialSeries in
    `acquisition` (ElectricalSeries, ImageSeries and other bulk types there are not behavior and are skipped). 2-D
    data with k > 1 columns becomes k variables `<name>_0 .. <name>_{k-1}`. `data * conversion + offset` is applied,
    so values are in the series' `unit`. A series in a CompassDirection (head direction and other angles) is read in
    radians: NWB allows radians or degrees there, and degrees are converted, so it can be a `kind = "circular"`
    target as is. If two series resolve to the same name, the first found wins and a warning names the other.

    The stimulus video is the first 3-D ImageSeries (F, H, W) found in `stimulus`, then `stimulus_template`, then
    `acquisition` (its `conversion` is not applied: frames stay raw intensities, uint8 stays uint8).

    `start`/`stop` come from the Units `obs_intervals` when present (widened to cover every timestamp); otherwise
    start = min(0, earliest timestamp) and stop = just after the latest timestamp or trial end (np.nextafter).

    Args:
        path: the `.nwb` file.
        units_table: "units" for the file's main Units table, or the name of a Units/DynamicTable with a
            `spike_times` column inside a processing module (e.g. "units" under "ecephys" in some pipelines).
        behavior_names: load only these variables (rtdecode names such as "speed" or "pos_0", or an NWB series
            name to take all its columns); None loads all behavior found.
        stimulus_name: the ImageSeries to use as the stimulus video; None picks as described above.

    Returns:
        A validated Session. `metadata` holds `identifier`, `session_description`, `session_start_time` (ISO 8601)
        and `source_path`, plus whatever rtdecode saved there.

    Raises:
        ImportError: pynwb is missing (`pip install 'rtdecode[nwb]'`).
        SessionError: no units table / no `spike_times`, a requested behavior or stimulus is missing, or the arrays
            are inconsistent (e.g. timestamps that are not strictly increasing).
    """
    pynwb = _pynwb()
    with pynwb.NWBHDF5IO(str(path), mode="r", load_namespaces=True) as io:
        nwb = io.read()
        times, neurons, neuron_ids, obs = _read_units(nwb, units_table, path)
        behavior = _read_behavior(nwb, behavior_names, path)
        frames, frame_times = _read_frames(nwb, stimulus_name, path)
        trials = None
        if nwb.trials is not None and len(nwb.trials) > 0:
            trials = np.column_stack(
                [np.asarray(nwb.trials["start_time"].data[:]), np.asarray(nwb.trials["stop_time"].data[:])]
            ).astype(np.float64)
        truth, stored_meta = _read_scratch(nwb)
        metadata = dict(stored_meta)
        metadata.update(
            identifier=str(nwb.identifier),
            session_description=str(nwb.session_description),
            session_start_time=nwb.session_start_time.isoformat(),
            source_path=str(Path(path)),
        )

    # The session interval must contain every timestamp; obs_intervals (what rtdecode writes) give it exactly.
    stamps: list[np.ndarray] = [
        s for s in (times, frame_times, *(b.times for b in behavior.values())) if s is not None and s.size
    ]
    lows = [float(s.min()) for s in stamps] + ([float(trials[:, 0].min())] if trials is not None else [])
    start = min([float(obs[:, 0].min())] + lows) if obs is not None else min([0.0] + lows)
    ends = [np.nextafter(start, np.inf)] + [np.nextafter(float(s.max()), np.inf) for s in stamps]
    if trials is not None:
        ends.append(float(trials[:, 1].max()))
    if obs is not None:
        ends.append(float(obs[:, 1].max()))
    return Session(
        spike_times=times,
        spike_neurons=neurons,
        n_neurons=neuron_ids.size,
        start=start,
        stop=float(max(ends)),
        neuron_ids=neuron_ids,
        frames=frames,
        frame_times=frame_times,
        behavior=behavior,
        trials=trials,
        truth=truth,
        metadata=metadata,
    )


def _find_units(nwb: Any, name: str, path: object) -> Any:
    if name == "units":
        if nwb.units is not None:
            return nwb.units
    for module in nwb.processing.values():
        if name in module.data_interfaces:
            return module.data_interfaces[name]
    found = (["units"] if nwb.units is not None else []) + [
        f"{m.name}/{k}" for m in nwb.processing.values() for k, v in m.data_interfaces.items() if _has_spike_times(v)
    ]
    raise SessionError(
        f"{path}: no units table named {name!r}; rtdecode needs sorted spikes (a Units table with spike_times). "
        + (f"Tables with spike_times found: {found}; pass units_table=" if found else "This file has none.")
    )


def _has_spike_times(table: Any) -> bool:
    return "spike_times" in getattr(table, "colnames", ())


def _read_units(nwb: Any, name: str, path: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Flat (times, neuron index) sorted by time, the unit ids, and the (n, 2) obs_intervals if any."""
    from hdmf.common import VectorIndex

    table = _find_units(nwb, name, path)
    if not _has_spike_times(table):
        raise SessionError(f"{path}: units table {table.name!r} has no spike_times column; cannot read spikes")
    n_units = len(table)
    if n_units == 0:
        raise SessionError(f"{path}: units table {table.name!r} is empty (no neurons)")
    col = table["spike_times"]
    if not isinstance(col, VectorIndex):
        raise SessionError(f"{path}: spike_times in {table.name!r} is not a ragged (per-unit) column")
    ends = np.asarray(col.data[:], dtype=np.int64)  # (N,) end offset of each unit's spikes in the flat array
    flat = np.asarray(col.target.data[:], dtype=np.float64)
    neurons = np.repeat(np.arange(n_units, dtype=np.int32), np.diff(ends, prepend=0))
    order = np.argsort(flat, kind="stable")  # stable: ties keep row (= neuron index) order
    ids = np.asarray(table.id.data[:], dtype=np.int64)
    obs = None
    if "obs_intervals" in table.colnames:
        o = table["obs_intervals"]
        o = o.target.data[:] if isinstance(o, VectorIndex) else o.data[:]
        o = np.asarray(o, dtype=np.float64).reshape(-1, 2)
        o = o[np.all(np.isfinite(o), axis=1)]
        obs = o if o.size else None
    return flat[order], neurons[order], ids, obs


def _series_in(container: Any, depth: int = 0) -> Iterator[Any]:
    """TimeSeries in `container`, looking inside data-interface containers (Position, BehavioralTimeSeries...)."""
    from pynwb import TimeSeries

    if isinstance(container, TimeSeries):
        yield container
    elif depth < 3:
        for child in getattr(container, "children", ()):
            yield from _series_in(child, depth + 1)


def _read_behavior(nwb: Any, names: Sequence[str] | None, path: object) -> dict[str, Behavior]:
    from pynwb import TimeSeries
    from pynwb.behavior import SpatialSeries
    from pynwb.image import ImageSeries

    candidates: list[Any] = []
    if BEHAVIOR_MODULE in nwb.processing:
        for obj in nwb.processing[BEHAVIOR_MODULE].data_interfaces.values():
            candidates.extend(s for s in _series_in(obj) if not isinstance(s, ImageSeries))
    for obj in nwb.acquisition.values():
        # Only plain behavior-like series: acquisition also holds raw ephys / imaging, which is not behavior.
        candidates.extend(s for s in _series_in(obj) if type(s) in (TimeSeries, SpatialSeries))

    wanted = None if names is None else set(names)
    out: dict[str, Behavior] = {}
    available: list[str] = []
    for ts in candidates:
        columns = _series_columns(ts, path)
        for col_name, values in columns:
            available.append(col_name)
            if wanted is not None and col_name not in wanted and ts.name not in wanted:
                continue
            if col_name in out:
                warnings.warn(
                    f"{path}: two behavior series are named {col_name!r}; keeping the first, skipping "
                    f"{ts.__class__.__name__} {ts.name!r}",
                    stacklevel=3,
                )
                continue
            out[col_name] = Behavior(_timestamps(ts, values.shape[0]), *_in_radians_if_angle(ts, values))
    if wanted is not None:
        got = set(out) | {ts.name for ts in candidates}
        missing = sorted(wanted - got)
        if missing:
            raise SessionError(f"{path}: behavior {missing} not found; available: {sorted(set(available))}")
    return out


def _in_radians_if_angle(ts: Any, values: np.ndarray) -> tuple[np.ndarray, str]:
    """(values, unit): a CompassDirection series' angles in radians (NWB says its unit is radians or degrees, so
    any unit but degrees is taken as radians); any other series as stored."""
    from pynwb.behavior import CompassDirection

    if not isinstance(getattr(ts, "parent", None), CompassDirection):
        return values, str(ts.unit)
    if str(ts.unit).strip().lower() in ("degrees", "degree", "deg"):
        return np.deg2rad(values), "radians"
    return values, "radians"


def _series_columns(ts: Any, path: object) -> list[tuple[str, np.ndarray]]:
    """[(name, (T,) float64 values)] for one TimeSeries: 1-D -> one, (T, k) -> k columns named `<name>_<i>`."""
    data = np.asarray(ts.data[:], dtype=np.float64)
    if ts.conversion != 1.0 or getattr(ts, "offset", 0.0) != 0.0:
        data = data * ts.conversion + getattr(ts, "offset", 0.0)
    if data.ndim == 2 and data.shape[1] == 1:
        data = data[:, 0]
    if data.ndim == 1:
        return [(ts.name, data)]
    if data.ndim == 2:
        return [(f"{ts.name}_{i}", np.ascontiguousarray(data[:, i])) for i in range(data.shape[1])]
    warnings.warn(f"{path}: skipping behavior series {ts.name!r}: data has shape {data.shape}", stacklevel=4)
    return []


def _timestamps(ts: Any, n: int) -> np.ndarray:
    """(n,) float64 seconds: stored timestamps, or starting_time + i / rate."""
    if ts.timestamps is not None:
        return np.asarray(ts.timestamps[:], dtype=np.float64)
    if ts.rate is None:
        raise SessionError(f"TimeSeries {ts.name!r} has neither timestamps nor a sampling rate")
    start = float(ts.starting_time) if ts.starting_time is not None else 0.0
    return start + np.arange(n, dtype=np.float64) / float(ts.rate)


def _read_frames(nwb: Any, name: str | None, path: object) -> tuple[np.ndarray | None, np.ndarray | None]:
    from pynwb.image import ImageSeries, OpticalSeries

    usable: list[Any] = []
    for group in (nwb.stimulus, nwb.stimulus_template, nwb.acquisition):
        for obj in group.values():
            if not isinstance(obj, ImageSeries) or (name is not None and obj.name != name):
                continue
            # In acquisition, ImageSeries subclasses are recordings (two-photon movies...), not the stimulus.
            if group is nwb.acquisition and type(obj) not in (ImageSeries, OpticalSeries) and name is None:
                continue
            shape = obj.data.shape
            has_clock = obj.timestamps is not None or obj.rate is not None
            if len(shape) == 3 and shape[0] > 0 and has_clock:
                usable.append(obj)
            elif name is not None or obj.name == FRAMES_NAME:
                warnings.warn(
                    f"{path}: ImageSeries {obj.name!r} is not usable as a stimulus: need in-file (F, H, W) "
                    f"grayscale data and a clock; got data shape {shape}",
                    stacklevel=3,
                )
    if not usable:
        if name is not None:
            raise SessionError(f"{path}: no usable ImageSeries {name!r} in stimulus, stimulus_template or acquisition")
        return None, None
    chosen = usable[0]
    if len(usable) > 1:
        warnings.warn(
            f"{path}: several ImageSeries found ({[s.name for s in usable]}); using {chosen.name!r}. "
            "Pass stimulus_name= to choose another.",
            stacklevel=3,
        )
    frames = np.asarray(chosen.data[:])
    return frames, _timestamps(chosen, frames.shape[0])


def _read_scratch(nwb: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Ground truth and metadata that rtdecode itself stored in `scratch` (other scratch entries are ignored)."""
    truth: dict[str, np.ndarray] = {}
    metadata: dict[str, Any] = {}
    for key, item in nwb.scratch.items():
        description = getattr(item, "description", None)
        if description == TRUTH_DESCRIPTION and key.startswith(TRUTH_PREFIX):
            truth[key[len(TRUTH_PREFIX) :]] = np.array(item.data)
        elif description == METADATA_DESCRIPTION and key == METADATA_NAME:
            raw = item.data
            raw = raw.decode() if isinstance(raw, bytes) else str(raw)
            with contextlib.suppress(json.JSONDecodeError):
                loaded = json.loads(raw)
                if isinstance(loaded, dict):
                    metadata = loaded
    return truth, metadata


# ---------------------------------------------------------------------------------------------------- writing
def save_nwb(session: Session, path: str | os.PathLike[str]) -> None:
    """Write `session` as a valid NWB 2.x file, atomically (temp file beside `path`, then `os.replace`).

    Layout is in the module docstring. Things to know:
    - `identifier`, `session_description` and `session_start_time` (ISO 8601, timezone-aware) are taken from
      `session.metadata` when present; otherwise a fresh UUID, "rtdecode session" and 1970-01-01 UTC ("unknown").
    - `start`/`stop` are written as every unit's `obs_intervals` ([start, stop]), so `load_nwb` restores them.
    - Ground truth (`session.truth`) has no standard NWB home; it goes to `scratch` as `truth_<name>` (valid NWB,
      read back by `load_nwb`, but other tools will not know what it means). The full metadata dict is stored as
      JSON in scratch too.
    - Spikes at exactly the same time come back in neuron-index order (NWB stores spikes per unit).

    Raises:
        ImportError: pynwb is missing (`pip install 'rtdecode[nwb]'`).
        SessionError: a behavior or truth name contains '/', or metadata is not JSON-serialisable.
    """
    pynwb = _pynwb()
    from pynwb import TimeSeries
    from pynwb.image import ImageSeries

    _check_names("behavior", session.behavior)
    _check_names("truth", session.truth)
    meta = session.metadata
    nwb = pynwb.NWBFile(
        session_description=str(meta.get("session_description") or "rtdecode session"),
        identifier=str(meta.get("identifier") or uuid.uuid4()),
        session_start_time=_start_time(meta.get("session_start_time")),
    )

    # Per-unit spike trains: split the time-sorted flat stream by neuron, keeping time order within each unit.
    order = np.argsort(session.spike_neurons, kind="stable")
    bounds = np.searchsorted(session.spike_neurons[order], np.arange(session.n_neurons + 1))
    sorted_times = session.spike_times[order]
    interval = [[session.start, session.stop]]
    for i in range(session.n_neurons):
        nwb.add_unit(
            spike_times=sorted_times[bounds[i] : bounds[i + 1]],
            obs_intervals=interval,
            id=int(np.asarray(session.neuron_ids)[i]),
        )

    if session.behavior:
        module = nwb.create_processing_module(BEHAVIOR_MODULE, "behavior variables, each on its own clock")
        for name, b in session.behavior.items():
            module.add(TimeSeries(name=name, data=b.values, timestamps=b.times, unit=b.unit))
    if session.frames is not None:
        nwb.add_stimulus(
            ImageSeries(
                name=FRAMES_NAME,
                data=session.frames,
                timestamps=session.frame_times,
                unit="grayscale intensity",
                format="raw",
                description="stimulus video, data (frames, rows, columns)",
            )
        )
    if session.trials is not None:
        for t0, t1 in session.trials:
            nwb.add_trial(start_time=float(t0), stop_time=float(t1))
    for name, a in session.truth.items():
        nwb.add_scratch(np.asarray(a), name=f"{TRUTH_PREFIX}{name}", description=TRUTH_DESCRIPTION)
    nwb.add_scratch(session.metadata_json(), name=METADATA_NAME, description=METADATA_DESCRIPTION)

    with atomic_path(path, suffix=".tmp.nwb") as tmp, pynwb.NWBHDF5IO(tmp, mode="w") as io:
        io.write(nwb)


def _check_names(kind: str, names: Iterable[str]) -> None:
    for name in names:
        if not name or "/" in name:
            raise SessionError(f"{kind} name {name!r} cannot be an NWB object name (must be non-empty, no '/')")


def _start_time(value: object) -> datetime:
    if value is None:
        return DEFAULT_START_TIME
    try:
        t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError as e:
        raise SessionError(f"metadata['session_start_time'] must be ISO 8601 with a timezone; got {value!r}") from e
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)
