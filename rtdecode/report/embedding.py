"""What the embedding knows: a 3-D PCA projection of per-window latents, and how linearly speed can be read from it.

Decodability is a ridge regression from the latent to speed, fitted on the training windows (penalty chosen on
validation) and scored on the test windows: Pearson r and R^2. PCA is fitted on training windows only, so the
projection of the test windows is not shaped by them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.core.metrics import pearson_r, r_squared, ridge_decode
from rtdecode.io.atomic import atomic_write

__all__ = ["pca_projection", "linear_decodability", "save_latents"]


def pca_projection(fit: np.ndarray, apply: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Project `apply` on the top-k principal axes of `fit`; returns (projection (W, k), explained variance ratio (k,))."""
    mean = fit.mean(0)
    _, s, vt = np.linalg.svd(fit - mean, full_matrices=False)
    explained = (s**2) / max(float((s**2).sum()), 1e-12)
    k = min(k, vt.shape[0])
    return (apply - mean) @ vt[:k].T, explained[:k]


def linear_decodability(latents: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
    """Ridge latent -> target: fit on "train", choose the penalty on "val", score on "test"."""
    pred, alpha = ridge_decode(latents["train"], target["train"], latents["val"], target["val"], latents["test"])
    return {"r": pearson_r(target["test"], pred), "r2": r_squared(target["test"], pred), "alpha": alpha}


def save_latents(
    path: Path,
    windows: np.ndarray,
    window_starts: np.ndarray,
    latents: np.ndarray,
    kind: str,
    split: np.ndarray,
    behavior: dict[str, np.ndarray],
) -> None:
    """latents.npz: window index, start time (s), latent (W, dim), split label per window, behavior per window."""
    arrays: dict[str, Any] = {
        "window": windows,
        "window_start": window_starts,
        "latent": latents,
        "kind": np.array(kind),
        "split": split,
    }
    arrays.update({f"behavior_{k}": v for k, v in behavior.items()})
    with atomic_write(path) as f:
        np.savez(f, **arrays)
