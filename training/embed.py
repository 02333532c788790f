"""Per-window latents of a trained model: the contrastive spike embedding (L2-normalised projection of the pooled
window representation) when the model was trained with a contrastive loss, else the pooled representation itself.
"""

from __future__ import annotations

import numpy as np
import torch

from rtdecode.core.normalisation import Normalisation
from rtdecode.core.window_data import WindowData
from rtdecode.training.data import to_torch
from rtdecode.training.model import Neuroformer

__all__ = ["window_latents"]


@torch.no_grad()
def window_latents(
    model: Neuroformer, data: WindowData, windows: np.ndarray, norm: Normalisation, batch_size: int = 128
) -> tuple[np.ndarray, str]:
    """Returns ((W, dim) float32 latents, kind: "contrastive" or "pooled")."""
    model.eval()
    use_contrastive = "spikes" in model.contrastive_proj if model.contrastive_proj else False
    parts = []
    for lo in range(0, windows.size, batch_size):
        out = model(to_torch(data.batch(windows[lo : lo + batch_size], norm), "cpu"))
        parts.append((out.contrastive["spikes"] if use_contrastive else out.pooled).float().numpy())
    dim = parts[0].shape[1] if parts else 0
    return (np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)), (
        "contrastive" if use_contrastive else "pooled"
    )
