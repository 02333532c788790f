"""Few-shot fine-tuning: start from a pretrained run and fit behavior decoding on a small labelled fraction.

The paper's claim: a model pretrained on spikes alone (next-spike prediction,
plus contrastive alignment with the video) decodes behavior after fine-tuning on 1-10% of labelled windows far
better than the same model trained from scratch on those windows. `finetune` runs one side of that comparison;
`tools/fewshot_curve.py` runs both across fractions and draws the curve.

Fine-tuning optimises the behavior losses only (token and contrastive weights set to 0); the run's config is
otherwise the pretrained run's, so the weights load one to one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtdecode.core.config import RunConfig
from rtdecode.training.checkpoint import read_meta
from rtdecode.training.train import TrainResult, train

__all__ = ["finetune", "finetune_config"]


def finetune_config(cfg: RunConfig, *, steps: int, lr: float, batch_size: int | None = None) -> RunConfig:
    """The pretrained config with behavior-only losses (each target weight >= 1) and a short schedule."""
    behavior = tuple(dataclasses.replace(b, weight=b.weight or 1.0) if b.role == "target" else b for b in cfg.behavior)
    train_cfg = dataclasses.replace(
        cfg.train,
        id_weight=0.0,
        dt_weight=0.0,
        max_steps=steps,
        lr=lr,
        warmup_steps=min(50, steps // 10),
        max_minutes=0.0,
        eval_every=max(1, steps),
        batch_size=batch_size or cfg.train.batch_size,
    )
    return dataclasses.replace(
        cfg, behavior=behavior, train=train_cfg, contrastive=dataclasses.replace(cfg.contrastive, weight=0.0)
    )


def finetune(
    from_run: str | Path,
    session_path: str | Path,
    out: str | Path,
    *,
    fraction: float,
    freeze: str = "backbone",
    steps: int = 300,
    lr: float = 1e-3,
    from_scratch: bool = False,
    weights: str = "model",
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Fine-tune the behavior decoding of `from_run` on `fraction` of the training windows.

    `from_scratch=True` trains the same architecture from random weights on the same windows (freeze ignored):
    the baseline the pretrained model must beat.
    """
    meta = read_meta(Path(from_run))
    cfg = RunConfig.from_saved(meta["config"])
    if not cfg.targets:
        raise ValueError(
            f"{from_run}: the pretrained config declares no behavior targets to fine-tune; add "
            "[[behavior]] tables (weight = 0 keeps them out of pretraining)"
        )
    cfg = finetune_config(cfg, steps=steps, lr=lr)
    init = None if from_scratch else Path(from_run) / f"{weights}.safetensors"
    return train(
        cfg,
        session_path,
        out,
        init_from=init,
        label_fraction=fraction,
        freeze="none" if from_scratch else freeze,
        log=log,
        progress=progress,
        **kwargs,
    )
