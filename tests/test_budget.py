"""Token budgets: derived from the data so nothing is truncated, recorded in the run and the bundle, and a budget
that drops spikes refused unless the user says so."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from rtdecode.data.budget import KEEP_WINDOWS, MAX_DROPPED, MULTIPLE, TruncationError, budget_report, needed_slots
from rtdecode.data.tokenizer import WindowConfig, tokenize_session
from tests.conftest import tiny_config_dict


def test_needed_slots_keep_the_windows_whole_and_round_up():
    rng = np.random.default_rng(0)
    counts = rng.poisson(300, 5000)
    counts[:3] = 700  # a few bursts: above the quantile, and together under MAX_DROPPED of the spikes
    slots = needed_slots(counts, reserved=2)
    friendly = sorted({MULTIPLE * 2**k for k in range(12)} | {3 * MULTIPLE * 2**k // 2 for k in range(12)})
    assert slots in friendly
    assert np.mean(counts <= slots - 2) >= KEEP_WINDOWS
    smaller = friendly[friendly.index(slots) - 1]
    assert np.mean(counts <= smaller - 2) < KEEP_WINDOWS  # the smallest friendly size that does
    # bursts that are a large share of all spikes: the budget grows until at most MAX_DROPPED is dropped
    heavy = np.concatenate([np.full(999, 10), [100_000]])
    s = needed_slots(heavy)
    assert np.maximum(heavy - s, 0).sum() <= MAX_DROPPED * heavy.sum()
    assert needed_slots(np.zeros(0)) == MULTIPLE


def test_a_config_without_budgets_derives_them_from_the_training_windows(tiny_session):
    from rtdecode.core.config import RunConfig

    cfg = RunConfig.from_dict({"window": {"prev_window": 0.1}})
    assert cfg.window.block_size == 0 and cfg.window.prev_block_size == 0 and not cfg.window.has_budgets
    with pytest.raises(ValueError, match="derive"):
        _ = cfg.window.max_spikes
    s = tiny_session
    tokens = tokenize_session(s.spike_times, s.spike_neurons, s.n_neurons, s.start, s.stop, cfg.window)
    with pytest.raises(ValueError, match="derive"):
        tokens.current([0])
    windows = np.arange(tokens.n_windows)
    report = budget_report(tokens, windows, cfg.window)
    assert report.derived == ("block_size", "prev_block_size") and report.window.has_budgets
    assert report.windows_truncated <= (1 - KEEP_WINDOWS) * tokens.n_windows + 1
    assert report.dropped_fraction <= MAX_DROPPED and report.history_dropped_fraction <= MAX_DROPPED
    # an explicit budget is kept as it is, and its truncation reported exactly
    small = dataclasses.replace(cfg.window, block_size=12, prev_block_size=8)
    r = budget_report(tokens, windows, small)
    assert r.derived == () and r.window == small
    assert r.spikes_truncated == int(np.maximum(tokens.window_counts - 10, 0).sum())
    with pytest.raises(TruncationError, match="--allow-truncation"):
        r.check(allow_truncation=False)
    r.check(allow_truncation=True)
    assert "12 slots per window (from the config;" in r.describe()


def test_training_refuses_a_budget_that_drops_spikes(tiny_session_path, tmp_path):
    from rtdecode.core.config import RunConfig
    from rtdecode.training.train import train

    d = tiny_config_dict(max_steps=1, eval_every=1, eval_windows=8)
    d["window"] = {**d["window"], "block_size": 6}
    with pytest.raises(TruncationError, match="block_size = 0"):
        train(RunConfig.from_dict(d), tiny_session_path, tmp_path / "refused", log=lambda _: None)
    assert not (tmp_path / "refused" / "model.safetensors").exists()
    result = train(
        RunConfig.from_dict(d), tiny_session_path, tmp_path / "allowed", allow_truncation=True, log=lambda _: None
    )
    meta = json.loads((result.run_dir / "checkpoint.json").read_text())
    assert meta["token_budget"]["spikes_truncated"] > 0


def test_the_cli_refuses_with_an_error_that_says_what_to_change(tiny_session_path, tmp_path):
    from typer.testing import CliRunner

    from rtdecode.cli import app

    config = tmp_path / "truncating.toml"
    config.write_text("[window]\nblock_size = 6\n\n[train]\nmax_steps = 1\neval_every = 1\n")
    r = CliRunner().invoke(
        app, ["train", "--data", str(tiny_session_path), "--out", str(tmp_path / "run"), "--config", str(config)]
    )
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "drops" in text and "--allow-truncation" in text and "block_size = 0" in text


def test_derived_budgets_are_recorded_in_the_run_and_the_bundle(tiny_run, tiny_bundle):
    """The session's tiny run sets no budgets (conftest): training derives them, the bundle carries them."""
    from rtdecode.runtime import Bundle

    meta = json.loads((tiny_run / "checkpoint.json").read_text())
    window = WindowConfig.from_dict(meta["config"]["window"])
    assert window.has_budgets and window.block_size >= MULTIPLE
    assert meta["token_budget"]["derived"] == ["block_size", "prev_block_size"]
    assert meta["token_budget"]["spikes_truncated"] <= MAX_DROPPED * meta["token_budget"]["spikes"]
    assert Bundle.load(tiny_bundle).window == window
