"""Training batches: the train/validation/test split of a session's windows and numpy batches -> torch tensors.

The per-window inputs themselves (`rtdecode.core.window_data.WindowData`) are numpy and shared with serving.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtdecode.core.config import RunConfig
from rtdecode.core.window_data import WindowData
from rtdecode.data.splits import Split, split_blocks

__all__ = ["make_split", "to_torch"]


def to_torch(batch: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    """numpy batch -> torch tensors on `device` (imported here so this module's numpy side stays torch-free)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}


def make_split(data: WindowData, cfg: RunConfig) -> Split:
    """Contiguous time blocks, guard gap = history + window, seeded by the config."""
    w = cfg.window
    return split_blocks(
        data.tokens.window_starts(),
        w.window,
        n_blocks=cfg.train.n_blocks,
        fractions=cfg.train.split,
        gap=w.prev_window + w.window,
        seed=cfg.train.seed,
    )
