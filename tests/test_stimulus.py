"""Stimulus attention maps and their scoring: the spike-triggered average recovers a planted field, the energy
pooling matches the model's patch grid, and `rtdecode stimulus` maps a real (tiny) run against the truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from rtdecode.core.receptive_fields import patch_energy, score_maps, spike_triggered_average


def test_patch_energy_sums_squares_within_each_patch():
    fields = np.zeros((1, 4, 6))
    fields[0, 0, 0], fields[0, 3, 5] = 2.0, -3.0
    energy = patch_energy(fields, (2, 3))
    assert energy.shape == (1, 2, 2) and energy[0, 0, 0] == 4.0 and energy[0, 1, 1] == 9.0 and energy.sum() == 13.0


def test_the_spike_triggered_average_recovers_a_planted_field():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4000, 16, 32)).astype(np.uint8)
    field = np.zeros((16, 32))
    field[4:8, 20:28] = 1.0  # the neuron sees one patch-sized region
    drive = ((frames - frames.mean(axis=0)) * field).sum(axis=(1, 2))
    frame_times = np.arange(frames.shape[0]) * 0.05
    fires = np.flatnonzero(drive > np.quantile(drive, 0.8))
    spike_times = frame_times[fires] + 0.01
    sta, counts = spike_triggered_average(
        frames, frame_times, spike_times, np.zeros(fires.size, np.int64), np.array([0])
    )
    assert counts.tolist() == [fires.size]
    score = score_maps(patch_energy(sta, (4, 8)), patch_energy(field[None], (4, 8)))
    assert score["median_r"] > 0.9


def test_stimulus_command_maps_a_run_against_the_true_fields(tiny_run, tiny_session_path, tmp_path):
    pytest.importorskip("torch")
    from rtdecode.cli import app

    out = tmp_path / "stim"
    r = CliRunner().invoke(
        app,
        ["stimulus", "--from", str(tiny_run), "--data", str(tiny_session_path), "--out", str(out), "--windows", "60"],
    )
    assert r.exit_code == 0, r.output
    numbers = json.loads((out / "report.json").read_text())["stimulus"]
    assert set(numbers["scores"]) == {"attention", "spike-triggered average"}
    assert all(math.isfinite(s["median_r"]) for s in numbers["scores"].values())
    assert len(numbers["visual_neurons"]) == 10 and (out / "stimulus.png").stat().st_size > 1000
