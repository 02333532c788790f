"""Fine-tuning (freezing, label fractions), the generate command, and the few-shot tool on a tiny session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner

from rtdecode.cli import app
from rtdecode.io import load_session
from rtdecode.training.checkpoint import LoadedRun
from rtdecode.training.finetune import finetune
from rtdecode.training.train import train

QUIET = {"log": lambda _: None}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pretrained(tiny_session_path, tmp_path_factory):
    from conftest import tiny_config_dict

    from rtdecode.core.config import RunConfig

    cfg = RunConfig.from_dict(tiny_config_dict(max_steps=10, eval_every=10))
    out = tmp_path_factory.mktemp("runs") / "pre"
    train(cfg, tiny_session_path, out, **QUIET)
    return out


def test_backbone_freeze_changes_only_the_behavior_heads(pretrained, tiny_session_path, tmp_path):
    result = finetune(pretrained, tiny_session_path, tmp_path / "ft", fraction=0.5, freeze="backbone", steps=5, **QUIET)
    before = LoadedRun(pretrained).model.state_dict()
    after = LoadedRun(tmp_path / "ft").model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("behavior_heads.") for k in changed)
    assert np.isfinite(result.test["speed_r"])


def test_scratch_baseline_starts_from_random_weights(pretrained, tiny_session_path, tmp_path):
    finetune(pretrained, tiny_session_path, tmp_path / "scr", fraction=0.5, steps=2, from_scratch=True, **QUIET)
    before = LoadedRun(pretrained).model.state_dict()
    after = LoadedRun(tmp_path / "scr").model.state_dict()
    assert not torch.equal(before["id_emb.weight"], after["id_emb.weight"])


def test_label_fraction_trains_on_a_subset(pretrained, tiny_session_path, tmp_path):
    logs = []
    finetune(pretrained, tiny_session_path, tmp_path / "ft", fraction=0.1, steps=2, log=logs.append)
    assert any("labelled windows (10.0%)" in line for line in logs)
    with pytest.raises(ValueError, match="label_fraction"):
        finetune(pretrained, tiny_session_path, tmp_path / "bad", fraction=0.0, steps=2, **QUIET)


@pytest.mark.parametrize("history", ["true", "generated"])
def test_generate_cli_writes_a_session(pretrained, tiny_session_path, tmp_path, history):
    out = tmp_path / "gen.npz"
    r = CliRunner().invoke(
        app,
        [
            "generate",
            "--from",
            str(pretrained),
            "--data",
            str(tiny_session_path),
            "--out",
            str(out),
            "--history",
            history,
            "--max-windows",
            "6",
            "--seed",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    s = load_session(out)
    assert s.n_neurons == 60 and s.metadata["history"] == history
    assert s.duration == pytest.approx(6 * 0.05)
    assert (np.diff(s.spike_times) >= 0).all()


@pytest.mark.slow
def test_fewshot_tool_smoke(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        "[window]\nprev_window = 0.1\n"
        "[model]\nd_model = 32\nn_heads = 2\nfeature_layers = 1\nfused_layers = 1\n"
        '[[behavior]]\nname = "speed"\n[train]\nbatch_size = 8\nwarmup_steps = 1\nnum_threads = 1\n'
        "n_blocks = 6\neval_windows = 20\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "fewshot_curve.py"),
            "--duration",
            "20",
            "--config",
            str(cfg),
            "--pretrain-steps",
            "4",
            "--finetune-steps",
            "2",
            "--fractions",
            "0.5",
            "1.0",
            "--out",
            str(tmp_path / "fs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "fs" / "fewshot.png").stat().st_size > 1000
    assert "pretrained vs scratch" in r.stdout
