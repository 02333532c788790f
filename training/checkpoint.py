"""Checkpoints: safetensors weights + JSON, written atomically; nothing is ever unpickled.

A run directory holds:

    checkpoint.json          format, version, config, vocab (with neuron IDs), normalisation, step, metrics, best
    model.safetensors        the latest weights
    best-<objective>.safetensors   the weights that scored best on each objective (val_loss, behavior_r)
    train_state.safetensors  optimizer moments and torch RNG state (for --resume)
    train_state.json         optimizer hyper-parameters, scheduler and sampler state, step, best-so-far

Every file is replaced atomically (temp file + fsync + rename), so a crash never leaves a torn file. A crash
between two renames can leave files from different steps; each save stamps its step into model.safetensors'
metadata and train_state.json, and --resume refuses files whose steps disagree instead of continuing inexactly.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import rtdecode
from rtdecode.core.config import RunConfig
from rtdecode.core.normalisation import Normalisation
from rtdecode.data.tokenizer import Vocab
from rtdecode.io.atomic import atomic_path, atomic_write

FORMAT = "rtdecode-checkpoint"
FORMAT_VERSION = 1

__all__ = [
    "save_weights",
    "weights_step",
    "load_weights",
    "write_meta",
    "read_meta",
    "save_train_state",
    "load_train_state",
    "LoadedRun",
]


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path, suffix=".tmp.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)


def save_weights(model: torch.nn.Module, path: Path, step: int | None = None) -> None:
    """Model parameters and buffers as safetensors (unwrapping DDP), stamped with the training step."""
    module = getattr(model, "module", model)
    meta = {"format": FORMAT} if step is None else {"format": FORMAT, "step": str(step)}
    _save_tensors(module.state_dict(), path, meta)


def weights_step(path: Path) -> int | None:
    """The training step stamped into a weights file, if any."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        step = (f.metadata() or {}).get("step")
    return int(step) if step is not None else None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights; every key must match (a mismatch names the missing/unexpected keys)."""
    state = load_file(str(path))
    module = getattr(model, "module", model)
    _widen_count_head(state, module)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit this model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def _widen_count_head(state: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    """A count head saved before its linear path read the behavior inputs has only the history-count weights:
    give the behavior terms weight zero, so the checkpoint loads and predicts exactly what it did."""
    key = "count_head.linear.weight"
    want = module.state_dict().get(key)
    have = state.get(key)
    if want is not None and have is not None and have.shape[0] == want.shape[0] and have.shape[1] < want.shape[1]:
        state[key] = torch.cat([have, have.new_zeros(have.shape[0], want.shape[1] - have.shape[1])], dim=1)


def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{rtdecode.__version__}+{sha}" if sha else rtdecode.__version__


def write_meta(
    run_dir: Path,
    cfg: RunConfig,
    vocab: Vocab,
    norm: Normalisation,
    step: int,
    metrics: dict[str, Any],
    best: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "config": cfg.to_dict(),
        "vocab": json.loads(vocab.to_json()),
        "normalisation": norm.to_dict(),
        "step": step,
        "metrics": metrics,
        "best": best,
        **(extra or {}),
    }
    with atomic_write(run_dir / "checkpoint.json") as f:
        f.write(json.dumps(meta, indent=2, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "checkpoint.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no checkpoint.json (is this a run directory written by `rtdecode train`?)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an rtdecode checkpoint")
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta['format_version']} is newer than this rtdecode; upgrade")
    return meta


class LoadedRun:
    """A run directory opened for inference: config, vocab, normalisation and a model with its weights."""

    def __init__(self, run_dir: str | os.PathLike[str], weights: str = "model", device: str = "cpu") -> None:
        from rtdecode.training.model import Neuroformer

        self.dir = Path(run_dir)
        self.meta = read_meta(self.dir)
        self.config = RunConfig.from_saved(self.meta["config"])
        self.vocab = Vocab.from_json(json.dumps(self.meta["vocab"]))
        self.norm = Normalisation.from_dict(self.meta["normalisation"])
        self.model = Neuroformer(self.config, self.vocab).to(device)
        path = self.dir / f"{weights}.safetensors"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found; available: {sorted(p.stem for p in self.dir.glob('*.safetensors'))}"
            )
        load_weights(self.model, path)
        self.model.eval()


def save_train_state(run_dir: Path, optimizer: torch.optim.Optimizer, scheduler: Any, extra: dict[str, Any]) -> None:
    """Everything --resume needs beyond the weights, without pickle: tensors to safetensors, the rest to JSON."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"torch_rng": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    meta = {
        "param_groups": sd["param_groups"],
        "state_scalars": scalars,
        "scheduler": scheduler.state_dict(),
        **extra,
    }
    _save_tensors(tensors, run_dir / "train_state.safetensors")
    with atomic_write(run_dir / "train_state.json") as f:
        f.write(json.dumps(meta, indent=2, default=_json_default).encode())


def load_train_state(run_dir: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore optimizer, scheduler and the torch RNG; return the extra JSON fields (step, best, sampler, ...).

    Host-side sampling needs no saved generator: the batch sampler is a pure function of (seed, epoch, cursor).
    """
    tensors = load_file(str(run_dir / "train_state.safetensors"))
    meta = json.loads((run_dir / "train_state.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, scalars in meta["state_scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    return meta
