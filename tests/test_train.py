"""Training end to end on a tiny simulated session: learning, checkpoints, exact resume, best tracking, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from typer.testing import CliRunner

from rtdecode.cli import app
from rtdecode.core.config import RunConfig
from rtdecode.training.checkpoint import LoadedRun, read_meta
from rtdecode.training.train import _update_best, train

QUIET = {"log": lambda _: None}

TINY_TOML = """
[window]
prev_window = 0.1

[model]
d_model = 32
n_heads = 2
feature_layers = 1
fused_layers = 1

[[behavior]]
name = "speed"

[train]
batch_size = 8
warmup_steps = 2
eval_windows = 40
num_threads = 1
n_blocks = 6
"""


def with_train(cfg: RunConfig, **kw) -> RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **kw))


class Killed(Exception):
    """Raised from the progress callback to simulate a run killed after a given step."""


def kill_after(n: int):
    def progress(step, total, scalars):
        if step > n:
            raise Killed

    return progress


def test_loss_decreases_within_seconds(tiny_session_path, tiny_config, tmp_path):
    cfg = with_train(tiny_config, max_steps=60, eval_every=60, lr=3e-3)
    seen = []
    train(cfg, tiny_session_path, tmp_path / "run", progress=lambda s, t, x: seen.append(x["total"]), **QUIET)
    assert np.mean(seen[-10:]) < 0.8 * np.mean(seen[:5])


def test_checkpoint_files_and_round_trip(tiny_session_path, tiny_config, tmp_path):
    result = train(tiny_config, tiny_session_path, tmp_path / "run", **QUIET)
    run = tmp_path / "run"
    for name in (
        "checkpoint.json",
        "model.safetensors",
        "train_state.safetensors",
        "train_state.json",
        "metrics.csv",
        "best-val_loss.safetensors",
    ):
        assert (run / name).exists(), name
    assert not list(run.glob(".*tmp*"))  # atomic writes leave no temporaries
    meta = read_meta(run)
    assert meta["step"] == 20 and meta["vocab"]["n_neurons"] == 60
    assert set(meta["normalisation"]["behavior"]) == {"speed", "phi", "theta"}
    assert "ridge_speed_r" in meta["baseline"] and "speed_r" in meta["test"]
    loaded = LoadedRun(run)
    assert loaded.config == tiny_config
    assert result.step == 20 and meta["metrics"]["loss_total"] == pytest.approx(result.val["loss_total"])


def test_resume_continues_exactly(tiny_session_path, tiny_config, tmp_path):
    cfg = with_train(tiny_config, max_steps=20, eval_every=10)
    train(cfg, tiny_session_path, tmp_path / "straight", **QUIET)
    with pytest.raises(Killed):
        train(cfg, tiny_session_path, tmp_path / "resumed", progress=kill_after(10), **QUIET)
    assert read_meta(tmp_path / "resumed")["step"] == 10
    train(cfg, tiny_session_path, tmp_path / "resumed", resume=True, **QUIET)
    a = LoadedRun(tmp_path / "straight").model.state_dict()
    b = LoadedRun(tmp_path / "resumed").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_resume_refuses_files_from_different_steps(tiny_session_path, tiny_config, tmp_path):
    from rtdecode.training.checkpoint import save_weights

    cfg = with_train(tiny_config, max_steps=10, eval_every=10)
    train(cfg, tiny_session_path, tmp_path / "run", **QUIET)
    save_weights(LoadedRun(tmp_path / "run").model, tmp_path / "run" / "model.safetensors", step=11)  # torn save
    with pytest.raises(ValueError, match="different steps"):
        train(with_train(cfg, max_steps=20), tiny_session_path, tmp_path / "run", resume=True, **QUIET)


def test_resume_refuses_a_different_config(tiny_session_path, tiny_config, tmp_path):
    train(with_train(tiny_config, max_steps=10), tiny_session_path, tmp_path / "run", **QUIET)
    with pytest.raises(ValueError, match="different config"):
        train(with_train(tiny_config, max_steps=10, lr=0.5), tiny_session_path, tmp_path / "run", resume=True, **QUIET)


def test_best_tracking_updates_on_every_improvement():
    best = {"val_loss": None, "behavior_r": None}
    assert _update_best(best, {"loss_total": 3.0, "behavior_r_mean": 0.2}, 10) == ["val_loss", "behavior_r"]
    assert _update_best(best, {"loss_total": 2.0, "behavior_r_mean": 0.1}, 20) == ["val_loss"]
    assert _update_best(best, {"loss_total": 2.5, "behavior_r_mean": 0.3}, 30) == ["behavior_r"]
    assert best["val_loss"]["step"] == 20 and best["behavior_r"]["step"] == 30


def test_train_cli_end_to_end(tiny_session_path, tmp_path):
    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(TINY_TOML)
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tiny_session_path),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(cfg_path),
            "--max-steps",
            "12",
            "--eval-every",
            "6",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "held-out test windows" in r.output and "ridge" in r.output
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("step,")


def test_train_cli_names_a_bad_config_key(tiny_session_path, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nwidth = 3\n")
    r = CliRunner().invoke(
        app, ["train", "--data", str(tiny_session_path), "--out", str(tmp_path / "r"), "--config", str(bad)]
    )
    assert r.exit_code == 2 and "allowed" in r.output
