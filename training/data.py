"""numpy batches -> torch tensors. The batches themselves (`rtdecode.core.window_data.WindowData`) and the
train/validation/test split (`make_split`, there too) are numpy, shared with evaluation and serving."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_torch"]


def to_torch(batch: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    """numpy batch -> torch tensors on `device` (imported here so this module's numpy side stays torch-free)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}
