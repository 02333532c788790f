"""Shared fixtures: a tiny simulated session (real simulator, real files) and a tiny run config."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtdecode.data.session import Session
from rtdecode.io import save_session
from rtdecode.sim.simulator import SimulationConfig, simulate

TINY_SIM = SimulationConfig(n_neurons=60, duration=30.0, n_visual=10, n_speed=8, n_phi=8, n_theta=8, seed=1)


@pytest.fixture(scope="session")
def tiny_session() -> Session:
    return simulate(TINY_SIM)


@pytest.fixture(scope="session")
def tiny_session_path(tiny_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sessions") / "tiny.npz"
    save_session(tiny_session, path)
    return path


def tiny_config_dict(**train: object) -> dict:
    """A model small enough to train for a few steps in about a second on one CPU core."""
    return {
        "window": {"prev_window": 0.1},  # token budgets derived from the data
        "model": {
            "d_model": 32,
            "n_heads": 2,
            "dropout": 0.0,
            "feature_layers": 1,
            "frame_layers": 1,
            "history_layers": 1,
            "frame_cross_layers": 1,
            "behavior_cross_layers": 1,
            "fused_layers": 1,
        },
        "frames": {"enabled": True},
        "behavior": [
            {"name": "speed"},
            {"name": "phi", "kind": "classification", "bins": [-5.0, 0.0, 5.0]},
            {"name": "theta", "role": "input"},
        ],
        "contrastive": {"enabled": True, "pairs": [["spikes", "frames"], ["spikes", "speed"]]},
        "train": {
            "batch_size": 8,
            "max_steps": 20,
            "warmup_steps": 2,
            "eval_every": 10,
            "eval_windows": 40,
            "num_threads": 1,
            "n_blocks": 6,
            **train,
        },
    }


@pytest.fixture()
def tiny_config():
    """The tiny config with the token budgets training derives for the tiny session written out (64/64), so a model
    can be built from it directly."""
    from rtdecode.core.config import RunConfig

    d = tiny_config_dict()
    d["window"] = {**d["window"], "block_size": 64, "prev_block_size": 64}
    return RunConfig.from_dict(d)


def _train_tiny(session_path: Path, out: Path, **window: object) -> Path:
    pytest.importorskip("torch")
    from rtdecode.core.config import RunConfig
    from rtdecode.training.train import train

    d = tiny_config_dict(max_steps=10, eval_every=10)
    d["window"] = {**d["window"], **window}
    train(RunConfig.from_dict(d), session_path, out, log=lambda _: None)
    return out


def _export_tiny(run_dir: Path, session: Session, out: Path) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rtdecode.core.window_data import WindowData, make_split
    from rtdecode.export.onnx import export_bundle
    from rtdecode.training.checkpoint import LoadedRun

    run = LoadedRun(run_dir)
    data = WindowData(session, run.config)
    export_bundle(run_dir, out, data=data, windows=make_split(data, run.config).test[:6], log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_session_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 10 steps on the tiny session (with frames, a behavior input, two targets)."""
    return _train_tiny(tiny_session_path, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path, tiny_session_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported by `rtdecode export` as a user would, parity-checked on 6 held-out windows: the
    command's export of a model that decodes is checked here, once, for every test that uses the bundle (an
    export is most of a test's time)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from typer.testing import CliRunner

    from rtdecode.cli import app

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    args = ["export", "--from", str(tiny_run), "--out", str(out), "--data", str(tiny_session_path)]
    r = CliRunner().invoke(app, [*args, "--parity-windows", "6"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # rich wraps long lines at the runner's 80 columns
    assert "bundle written" in text and "parity on 6 windows: decode" in text and "identical: True" in text
    return out


@pytest.fixture(scope="session")
def tiny_bundle_by_time(
    tiny_session_path: Path, tiny_session: Session, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """As `tiny_bundle`, with a window's tokens in spike-time order (`token_order = "time"`)."""
    run = _train_tiny(tiny_session_path, tmp_path_factory.mktemp("runs") / "tiny-by-time", token_order="time")
    return _export_tiny(run, tiny_session, tmp_path_factory.mktemp("bundles") / "tiny-by-time")
