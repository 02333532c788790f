"""Several recording days of one ground-truth circuit: units come and go, rates and tuning drift, IDs change.

A chronic rig does not see the same units every day: the spike sorter loses some, finds new ones and numbers them
afresh, and the units it keeps drift in rate and tuning. `simulate_days` makes that on a circuit whose truth is
known, so multi-session training and adaptation can be scored against it:

- structure: one circuit (W, hubs, communities, receptive fields, behavior-coupled sets) from `config.seed`;
- recording: day k simulates the whole circuit with its own stimulus, behavior, community schedule and spikes
  (day 0 draws them exactly as `simulate(config)` does; day k > 0 from SeedSequence([seed, k])) and keeps a
  subset of `recorded` neurons; consecutive days share `round(overlap * recorded)` of them;
- drift: each neuron's log base rate and log tuning gain (visual or behavior) take a Gaussian random walk, `drift`
  SD per day from day 0 (so day k is off by drift * sqrt(k) SD);
- unit IDs: each day numbers its units like a sorter (sorted random cluster IDs, unrelated to the circuit index and
  to other days' IDs); the truth keeps the circuit index of every unit (`truth["circuit_neuron"]`).

Every random draw is keyed by (seed, day), so the first days of a longer run are the same as those of a shorter one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.data.session import Session
from rtdecode.io.atomic import atomic_write
from rtdecode.io.npz import save_npz
from rtdecode.sim.config import BEHAVIORS, SimulationConfig
from rtdecode.sim.simulator import DriveOffsets, simulate

__all__ = ["check_days", "recorded_count", "save_days", "simulate_days"]

_DRIFT, _UNITS = 1, 2  # tags of the per-day streams drawn here (SeedSequence([seed, day, tag]))
_ID_SPAN = 1.5  # cluster IDs are drawn from [0, 1.5 x units): a sorter's numbering has gaps


def recorded_count(recorded: float, n_neurons: int) -> int:
    """Units recorded per day: `recorded` is a count (an integer >= 1) or a fraction of the circuit (in (0, 1)).

    Raises:
        ValueError: a non-integer count, a non-positive value, or more units than the circuit has.
    """
    if not (isinstance(recorded, (int, float)) and math.isfinite(recorded) and recorded > 0):
        raise ValueError(f"recorded must be a count >= 1 or a fraction in (0, 1); got {recorded!r}")
    if recorded < 1:
        count = int(round(recorded * n_neurons))
    elif float(recorded).is_integer():
        count = int(recorded)
    else:
        raise ValueError(f"recorded={recorded} is neither a fraction in (0, 1) nor a whole count of units")
    if not 1 <= count <= n_neurons:
        raise ValueError(
            f"recorded={recorded} asks for {count} units but the circuit has n_neurons={n_neurons}; "
            "record fewer units or raise n_neurons"
        )
    return count


def check_days(config: SimulationConfig, days: int, overlap: float, recorded: float, drift: float) -> tuple[int, int]:
    """Validate simulate_days' arguments; returns (units recorded per day, units kept from one day to the next).

    Raises:
        ValueError: days < 1, overlap outside (0, 1], drift < 0, or a circuit too small for the request; the
            message says what to change.
    """
    c = config
    if not (isinstance(days, (int, np.integer)) and not isinstance(days, bool) and days >= 1):
        raise ValueError(f"days must be an int >= 1; got {days!r}")
    if not (isinstance(overlap, (int, float)) and 0 < overlap <= 1):
        raise ValueError(f"overlap must be a fraction in (0, 1] (e.g. 0.7 = 70% of units kept); got {overlap!r}")
    if not (isinstance(drift, (int, float)) and math.isfinite(drift) and drift >= 0):
        raise ValueError(f"drift must be a finite number >= 0 (log-rate SD per day); got {drift!r}")
    n_rec = recorded_count(recorded, c.n_neurons)
    keep = int(round(overlap * n_rec))
    if days > 1 and c.n_neurons - n_rec < n_rec - keep:
        need = 2 * n_rec - keep
        raise ValueError(
            f"recording {n_rec} units a day with overlap={overlap} needs {n_rec - keep} new units each day, but a "
            f"circuit of n_neurons={c.n_neurons} has only {c.n_neurons - n_rec} unrecorded ones; raise n_neurons "
            f"to >= {need}, lower recorded or raise overlap"
        )
    return n_rec, keep


def simulate_days(
    config: SimulationConfig,
    days: int = 3,
    overlap: float = 0.7,
    recorded: float = 0.75,
    drift: float = 0.1,
    progress: Callable[[float], None] | None = None,
) -> list[Session]:
    """Simulate `days` recordings of the circuit `config` (config.n_neurons is the whole circuit).

    Args:
        config: the circuit and the length of each day (duration); see SimulationConfig.
        days: number of recording days K >= 1.
        overlap: fraction in (0, 1] of a day's units that the next day records again.
        recorded: units per day, a count (>= 1) or a fraction of config.n_neurons (< 1).
        drift: SD per day of the random walk of every neuron's log base rate and log tuning gain (0 = none;
            0.1 moves a rate by ~10% a day).
        progress: optional callback, called with the fraction of all days done (0, 1].

    Returns:
        K Sessions, each with the units of that day only: spikes re-indexed to 0..n-1, `neuron_ids` the day's
        unit IDs, and `truth` restricted to the recorded units (see `_restrict`), plus "circuit_neuron" (n,)
        int64, the circuit index of each unit. `metadata` has day, days, circuit_seed, overlap, recorded, drift.

    Raises:
        ValueError: days < 1, overlap outside (0, 1], drift < 0, or a circuit too small for the request.
    """
    c = config
    n_rec, keep = check_days(c, days, overlap, recorded, drift)
    recordings = _recordings(c, days, n_rec, keep)
    sessions = []
    log_rate, log_gain = np.zeros(c.n_neurons), np.zeros(c.n_neurons)
    for day in range(days):
        if day:
            rng = _rng(c, day, _DRIFT)
            log_rate = log_rate + drift * rng.standard_normal(c.n_neurons)
            log_gain = log_gain + drift * rng.standard_normal(c.n_neurons)

        def day_progress(frac: float, day: int = day) -> None:
            if progress is not None:
                progress((day + frac) / days)

        circuit = simulate(
            c, day_progress, day_seed=day or None, offsets=DriveOffsets(log_rate.copy(), log_gain.copy())
        )
        meta = {
            "source": "rtdecode.sim.days",
            "config": dataclasses.asdict(c),
            "day": day,
            "days": days,
            "circuit_seed": c.seed,
            "overlap": overlap,
            "recorded": n_rec,
            "drift": drift,
        }
        sessions.append(_restrict(circuit, *recordings[day], meta))
    return sessions


def save_days(sessions: list[Session], folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Write `simulate_days`' sessions as folder/day0.npz ... and folder/days.json (created; files atomic).

    Returns:
        The days.json content: format "rtdecode-days" version 1, "circuit" (the SimulationConfig), "days",
        "overlap", "recorded" (units per day), "drift", and "sessions": per day its "day", "file", "units",
        "spikes" and "shared_with_previous_day" (circuit neurons also recorded the day before; None on day 0).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for day, s in enumerate(sessions):
        save_npz(s, folder / f"day{day}.npz")
        previous = sessions[day - 1].truth["circuit_neuron"] if day else None
        shared = None if previous is None else int(np.intersect1d(s.truth["circuit_neuron"], previous).size)
        entries.append(
            {
                "day": day,
                "file": f"day{day}.npz",
                "units": s.n_neurons,
                "spikes": s.n_spikes,
                "shared_with_previous_day": shared,
            }
        )
    meta = sessions[0].metadata
    description = {
        "format": "rtdecode-days",
        "format_version": 1,
        "circuit": meta["config"],
        **{k: meta[k] for k in ("days", "overlap", "recorded", "drift")},
        "sessions": entries,
    }
    with atomic_write(folder / "days.json") as f:
        f.write(json.dumps(description, indent=2).encode())
    return description


def _rng(c: SimulationConfig, day: int, tag: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([c.seed, day, tag])))


def _recordings(c: SimulationConfig, days: int, n_rec: int, keep: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each day's units: (n_rec,) int64 circuit indices in unit order and (n_rec,) int64 unit IDs (ascending).

    Day k keeps `keep` of day k-1's neurons and adds new ones from those day k-1 did not record.
    """
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for day in range(days):
        rng = _rng(c, day, _UNITS)
        if day == 0:
            chosen = rng.choice(c.n_neurons, n_rec, replace=False)
        else:
            prev = np.sort(out[-1][0])
            kept = rng.choice(prev, keep, replace=False)
            new = rng.choice(np.setdiff1d(np.arange(c.n_neurons), prev), n_rec - keep, replace=False)
            chosen = np.concatenate([kept, new])
        units = rng.permutation(chosen).astype(np.int64)  # a sorter's order says nothing about the circuit
        ids = np.sort(rng.choice(int(_ID_SPAN * n_rec) + 1, n_rec, replace=False)).astype(np.int64)
        out.append((units, ids))
    return out


def _restrict(s: Session, units: np.ndarray, unit_ids: np.ndarray, metadata: dict) -> Session:
    """The circuit session `s` as recorded through `units` (n,) circuit indices, unit i named unit_ids[i].

    Truth, in recorded indices: "W" (n, n) among recorded units; "community" (n,) circuit community labels (as in
    "active_community"); "hubs" the recorded hubs, in community order; "visual_neurons" and "<behavior>_neurons"
    the recorded members, sorted, with "receptive_fields", "visual_gain" and "<behavior>_gain" aligned; the drift
    "log_rate_offset"/"log_gain_offset" (n,); "circuit_neuron" (n,) and the schedule unchanged.
    """
    n_circuit = s.n_neurons
    index = np.full(n_circuit, -1, dtype=np.int64)  # circuit index -> recorded index, -1 = not recorded
    index[units] = np.arange(units.size)
    keep = index[s.spike_neurons] >= 0
    tr = s.truth

    def members(circuit_set: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Recorded indices of the recorded members of a set (sorted), and their positions in the set."""
        pos = np.flatnonzero(index[circuit_set] >= 0)
        rec = index[circuit_set[pos]]
        order = np.argsort(rec)
        return rec[order], pos[order]

    hubs = index[tr["hubs"]]
    truth: dict[str, np.ndarray] = {
        "circuit_neuron": units.copy(),
        "W": tr["W"][np.ix_(units, units)],
        "hubs": hubs[hubs >= 0],
        "community": tr["community"][units],
        "community_times": tr["community_times"],
        "active_community": tr["active_community"],
        "log_rate_offset": tr["log_rate_offset"][units],
        "log_gain_offset": tr["log_gain_offset"][units],
    }
    rec, pos = members(tr["visual_neurons"])
    gain = metadata["config"]["visual_gain"] * np.exp(tr["log_gain_offset"][tr["visual_neurons"]])
    truth["visual_neurons"], truth["receptive_fields"], truth["visual_gain"] = (
        rec,
        tr["receptive_fields"][pos],
        gain[pos],
    )
    for name in BEHAVIORS:
        rec, pos = members(tr[f"{name}_neurons"])
        truth[f"{name}_neurons"], truth[f"{name}_gain"] = rec, tr[f"{name}_gain"][pos]
    return Session(
        spike_times=s.spike_times[keep],
        spike_neurons=index[s.spike_neurons[keep]],
        n_neurons=units.size,
        start=s.start,
        stop=s.stop,
        neuron_ids=unit_ids,
        frames=s.frames,
        frame_times=s.frame_times,
        behavior=s.behavior,
        truth=truth,
        metadata=metadata,
    )
