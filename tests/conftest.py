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


@pytest.fixture(scope="session")
def tiny_run(tiny_session_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 10 steps on the tiny session (with frames, a behavior input, two targets)."""
    pytest.importorskip("torch")
    from rtdecode.core.config import RunConfig
    from rtdecode.training.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(
        RunConfig.from_dict(tiny_config_dict(max_steps=10, eval_every=10)), tiny_session_path, out, log=lambda _: None
    )
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path, tiny_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported to a bundle, parity-checked on 6 held-out windows."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rtdecode.core.window_data import WindowData, make_split
    from rtdecode.export.onnx import export_bundle
    from rtdecode.training.checkpoint import LoadedRun

    run = LoadedRun(tiny_run)
    data = WindowData(tiny_session, run.config)
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(tiny_run, out, data=data, windows=make_split(data, run.config).test[:6], log=lambda _: None)
    return out
