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
    assert set(numbers["scores"]) == {
        "gradient-weighted attention",
        "attention",
        "spike-triggered average",
        "input gradient (not attention)",
    }
    assert all(math.isfinite(s["median_r"]) for s in numbers["scores"].values())
    assert len(numbers["visual_neurons"]) == 10 and (out / "stimulus.png").stat().st_size > 1000


def test_gradient_weighting_finds_patches_that_uniform_attention_cannot(tiny_run, tiny_session):
    """With the frame cross-attention's queries zeroed, every position reads every patch equally: raw attention
    maps are flat and say nothing. Gradient-weighted maps still differ between patches (what each patch's value
    does to the predictions) and between neurons."""
    torch = pytest.importorskip("torch")
    from rtdecode.core.window_data import WindowData
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.stimulus import stimulus_attention

    run = LoadedRun(tiny_run)
    with torch.no_grad():
        for blk in run.model.frame_cross:
            blk.attn.q.weight.zero_()
            blk.attn.q.bias.zero_()
    data = WindowData(tiny_session, run.config)
    windows = np.arange(5, 45)
    raw, counts = stimulus_attention(run.model, data, windows, run.norm, method="attention")
    grad, grad_counts = stimulus_attention(run.model, data, windows, run.norm, method="gradient")
    fired = counts > 0
    assert fired.sum() > 5 and np.array_equal(counts, grad_counts)
    np.testing.assert_allclose(raw[fired], 1.0 / raw[0].size, rtol=1e-5)  # flat: sums to 1 over the grid
    assert np.isfinite(grad).all() and (grad >= 0).all() and not grad[~fired].any()
    spread = grad[fired].reshape(int(fired.sum()), -1)
    # patches differ: every map's spread is 1000 times the raw maps' (flat to 1e-5)
    assert (spread.std(axis=1) > 0.01 * spread.mean(axis=1)).all()
    assert np.abs(np.corrcoef(spread)[np.triu_indices(spread.shape[0], 1)]).min() < 0.99  # neurons differ
    with pytest.raises(ValueError, match="unknown stimulus map method"):
        stimulus_attention(run.model, data, windows, run.norm, method="rollout")


def test_input_gradient_maps_follow_what_the_model_reads(tiny_run, tiny_session):
    """The input-gradient map of a neuron sums over windows in which it fires; one that fires in none gets an
    empty map. With the frame pathway cut (frame cross-attention outputs zeroed), no pixel moves any prediction:
    every map is zero. So a map that is not zero is the model's own use of the frames."""
    torch = pytest.importorskip("torch")
    from rtdecode.core.window_data import WindowData
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.stimulus import input_gradient_maps

    run = LoadedRun(tiny_run)
    data = WindowData(tiny_session, run.config)
    windows = np.arange(5, 45)
    fired = np.unique(data.tokens.neurons[data.tokens.window_ptr[5] : data.tokens.window_ptr[45]])
    silent = np.setdiff1d(np.arange(data.tokens.vocab.n_neurons), fired)
    neurons = np.concatenate([fired[:3], silent[:1]])
    maps, counts = input_gradient_maps(run.model, data, windows, run.norm, neurons, per_neuron=8)
    grid = (
        run.config.frames.height // run.config.model.frame_patch[1],
        run.config.frames.width // run.config.model.frame_patch[2],
    )
    assert maps.shape == (neurons.size, *grid) and np.isfinite(maps).all() and (maps >= 0).all()
    assert (counts[:3] >= 1).all() and (counts[:3] <= 8).all() and (maps[:3].sum(axis=(1, 2)) > 0).all()
    if silent.size:
        assert counts[3] == 0 and not maps[3].any()
    with torch.no_grad():
        for blk in run.model.frame_cross:
            blk.attn.proj.weight.zero_()
            blk.attn.proj.bias.zero_()
    cut, _ = input_gradient_maps(run.model, data, windows, run.norm, neurons[:3], per_neuron=8)
    assert not cut.any()
