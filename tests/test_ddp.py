"""DDP: `rtdecode train` under torchrun with 2 CPU processes (gloo); both ranks must end with identical weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")

TOML = """
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
batch_size = 4
max_steps = 6
eval_every = 3
eval_windows = 16
warmup_steps = 1
num_threads = 1
n_blocks = 6
"""


@pytest.mark.slow
def test_two_gloo_ranks_agree_on_weights(tiny_session_path, tmp_path):
    rtdecode_cli = shutil.which("rtdecode")
    assert rtdecode_cli, "the rtdecode console script must be installed (pip install -e .)"
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(TOML)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--no-python",
        rtdecode_cli,
        "train",
        "--data",
        str(tiny_session_path),
        "--out",
        str(tmp_path / "run"),
        "--config",
        str(cfg),
        "--device",
        "cpu",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["ddp"]["world_size"] == 2
    assert meta["ddp"]["weights_agree"], meta["ddp"]["digests"]
    assert meta["step"] == 6
