"""Several days of one circuit: the requested overlap, a sorter's unit IDs, a truth that maps units back to the
circuit, drift that grows with the knob, and `rtdecode simulate --days` writing the folder."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rtdecode.cli import app
from rtdecode.cli.data import _DAYS_DEFAULTS
from rtdecode.core.connectivity import hub_circuit
from rtdecode.io.npz import load_npz
from rtdecode.sim.days import simulate_days
from rtdecode.sim.simulator import SimulationConfig, simulate

CIRCUIT = SimulationConfig(n_neurons=80, duration=20.0, n_hubs=2, n_visual=12, n_speed=8, n_phi=8, n_theta=8, seed=5)


@pytest.fixture(scope="module")
def days():
    return simulate_days(CIRCUIT, days=3, overlap=0.7, recorded=40, drift=0.3)


def _units(s) -> np.ndarray:
    return s.truth["circuit_neuron"]


def test_same_arguments_give_identical_days(days):
    again = simulate_days(CIRCUIT, days=3, overlap=0.7, recorded=40, drift=0.3)
    for a, b in zip(days, again):
        assert np.array_equal(a.spike_times, b.spike_times) and np.array_equal(a.spike_neurons, b.spike_neurons)
        assert np.array_equal(a.neuron_ids, b.neuron_ids) and a.metadata == b.metadata
        assert a.truth.keys() == b.truth.keys() and all(np.array_equal(a.truth[k], b.truth[k]) for k in a.truth)
    # the first days of a longer run are the days of a shorter one
    (first,) = simulate_days(CIRCUIT, days=1, overlap=0.7, recorded=40, drift=0.3)
    assert np.array_equal(first.spike_times, days[0].spike_times) and np.array_equal(_units(first), _units(days[0]))


def test_consecutive_days_share_the_requested_fraction(days):
    for s in days:
        assert s.n_neurons == 40 and np.unique(_units(s)).size == 40 and _units(s).max() < CIRCUIT.n_neurons
    for a, b in zip(days, days[1:]):
        assert np.intersect1d(_units(a), _units(b)).size == round(0.7 * 40)
    assert not np.array_equal(np.sort(_units(days[0])), np.sort(_units(days[1])))
    fraction = simulate_days(CIRCUIT, days=2, overlap=0.5, recorded=0.5, drift=0.0)
    assert [s.n_neurons for s in fraction] == [40, 40]
    assert np.intersect1d(_units(fraction[0]), _units(fraction[1])).size == 20


def test_unit_ids_are_a_sorters_not_the_circuits(days):
    for s in days:
        ids = s.neuron_ids
        assert np.unique(ids).size == s.n_neurons and np.all(np.diff(ids) > 0)  # unique, numbered in unit order
        assert np.mean(ids == _units(s)) < 0.1  # equal to the circuit index only by chance
        assert not np.all(np.diff(_units(s)) > 0)  # unit order does not give the circuit order away
    a, b = days[0], days[1]
    shared, ia, ib = np.intersect1d(_units(a), _units(b), return_indices=True)
    assert shared.size and np.mean(a.neuron_ids[ia] == b.neuron_ids[ib]) < 0.2  # renumbered from day to day


def test_day0_is_the_single_session_recorded_through_a_subset(days):
    """Day 0 draws everything as simulate(config) does: its spikes are the circuit's, restricted and re-indexed."""
    circuit = simulate(CIRCUIT)
    units = _units(days[0])
    sel = np.isin(circuit.spike_neurons, units)
    assert np.array_equal(days[0].spike_times, circuit.spike_times[sel])
    assert np.array_equal(units[days[0].spike_neurons], circuit.spike_neurons[sel])
    assert np.array_equal(days[0].frames, circuit.frames)
    assert days[1].frames is not None and not np.array_equal(days[1].frames, circuit.frames)  # a new day's stimulus


def test_truth_is_the_circuits_restricted_to_the_recorded_units(days):
    tr0 = simulate(CIRCUIT).truth
    for day, s in enumerate(days):
        tr, units = s.truth, _units(s)
        assert np.array_equal(tr["W"], tr0["W"][np.ix_(units, units)])
        assert np.array_equal(tr["community"], tr0["community"][units])
        hubs = units[tr["hubs"]]
        assert set(hubs) == set(tr0["hubs"]) & set(units) and np.array_equal(hubs, np.sort(hubs))
        for name in ("visual", "speed", "phi", "theta"):
            rec = tr[f"{name}_neurons"]
            assert np.all(np.diff(rec) > 0)
            assert set(units[rec]) == set(tr0[f"{name}_neurons"]) & set(units)
        # gains: the circuit's, scaled by the day's drift, aligned with the index arrays
        for name in ("speed", "phi", "theta"):
            circuit_pos = np.searchsorted(tr0[f"{name}_neurons"], units[tr[f"{name}_neurons"]])
            expected = tr0[f"{name}_gain"][circuit_pos] * np.exp(tr["log_gain_offset"][tr[f"{name}_neurons"]])
            np.testing.assert_allclose(tr[f"{name}_gain"], expected)
        circuit_pos = np.searchsorted(tr0["visual_neurons"], units[tr["visual_neurons"]])
        assert np.array_equal(tr["receptive_fields"], tr0["receptive_fields"][circuit_pos])
        np.testing.assert_allclose(
            tr["visual_gain"], CIRCUIT.visual_gain * np.exp(tr["log_gain_offset"][tr["visual_neurons"]])
        )
        assert s.metadata["circuit_seed"] == CIRCUIT.seed and s.metadata["overlap"] == 0.7
        assert s.metadata["drift"] == 0.3 and s.metadata["day"] == day
    assert np.all(days[0].truth["log_rate_offset"] == 0)  # drift starts after day 0


def test_hub_circuit_of_a_day_is_the_circuits_among_its_units():
    """A day may miss a hub: the hub circuit goes by community labels, not by a hub's position in "hubs"."""
    circuit = dataclasses.replace(CIRCUIT, seed=7, duration=5.0)  # days record hub 1 only, both hubs, hub 0 only
    sessions = simulate_days(circuit, days=3, overlap=0.7, recorded=40, drift=0.3)
    assert [list(s.truth["community"][s.truth["hubs"]]) for s in sessions] == [[1], [0, 1], [0]]
    full = hub_circuit(simulate(circuit).truth)
    for s in sessions:
        units = _units(s)
        assert np.count_nonzero(hub_circuit(s.truth)) > 0
        assert np.array_equal(hub_circuit(s.truth), full[np.ix_(units, units)])


def _shared_log_rate_change(sessions) -> float:
    """Mean |change| of log rate, first to last day, over the neurons both days record."""
    a, b = sessions[0], sessions[-1]
    _, ia, ib = np.intersect1d(_units(a), _units(b), return_indices=True)
    ra, rb = a.firing_rates()[ia], b.firing_rates()[ib]
    return float(np.mean(np.abs(np.log(rb + 0.5) - np.log(ra + 0.5))))


def test_drift_is_visible_and_grows_with_the_knob():
    kwargs = {"days": 3, "overlap": 0.9, "recorded": 40}
    changes = [_shared_log_rate_change(simulate_days(CIRCUIT, drift=d, **kwargs)) for d in (0.0, 0.3, 0.6)]
    assert changes[0] < changes[1] < changes[2], changes
    steady = simulate_days(CIRCUIT, drift=0.0, **kwargs)
    assert all(np.all(s.truth["log_rate_offset"] == 0) for s in steady)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"days": 0}, "days"),
        ({"overlap": 0.0}, "overlap"),
        ({"overlap": 1.2}, "overlap"),
        ({"recorded": 81}, "n_neurons=80"),
        ({"recorded": 2.5}, "whole count"),
        ({"recorded": 60, "overlap": 0.5}, "raise n_neurons"),
        ({"drift": -0.1}, "drift"),
    ],
)
def test_bad_requests_say_what_to_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_days(CIRCUIT, **{"days": 2, **kwargs})


SMALL = ["--n-neurons", "80", "--n-hubs", "2", "--n-visual", "12", "--n-speed", "8", "--n-phi", "8",
         "--n-theta", "8", "--duration", "5"]  # fmt: skip


def test_cli_writes_the_days_and_their_description(tmp_path):
    out = tmp_path / "days"
    result = CliRunner().invoke(app, ["simulate", *SMALL, "--days", "2", "--recorded", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    description = json.loads((out / "days.json").read_text())
    assert description["format"] == "rtdecode-days" and description["days"] == 2
    assert description["circuit"]["n_neurons"] == 80 and description["recorded"] == 40
    assert [e["file"] for e in description["sessions"]] == ["day0.npz", "day1.npz"]
    assert description["sessions"][1]["shared_with_previous_day"] == 28
    day1 = load_npz(out / "day1.npz")
    assert day1.n_neurons == 40 and day1.truth["circuit_neuron"].shape == (40,) and day1.metadata["day"] == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--days", "0"], "days must be"),
        (["--days", "2", "--overlap", "1.5"], "overlap"),
        (["--days", "2", "--recorded", "100"], "n_neurons=80"),
        (["--drift", "0.2"], "--days"),
    ],
)
def test_cli_errors(tmp_path, args, match):
    result = CliRunner().invoke(app, ["simulate", *SMALL, *args, "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and match in " ".join(result.output.split())
    assert not (tmp_path / "d").exists()


def test_cli_refuses_a_file_as_the_days_folder(tmp_path):
    file = tmp_path / "s.npz"
    file.write_bytes(b"")
    result = CliRunner().invoke(app, ["simulate", *SMALL, "--days", "2", "--out", str(file)])
    assert result.exit_code == 2 and "is a file" in result.output


def test_cli_defaults_are_simulate_days_defaults():
    params = inspect.signature(simulate_days).parameters
    assert _DAYS_DEFAULTS == {k: params[k].default for k in _DAYS_DEFAULTS}
