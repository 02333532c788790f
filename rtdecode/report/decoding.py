"""Behavior decoding on held-out windows: the served model against baselines fitted in the same run, same split.

Methods per regression target (all scored on the test windows, in the data's units):
* model   — the exported bundle's decode (what the daemon would publish for these windows);
* ridge   — ridge on binned counts of the window and its history (penalty chosen on validation);
* mlp     — a one-hidden-layer MLP on the same features (`rtdecode.report.mlp`);
* shuffle — the ridge fitted on training labels rolled in time by a random offset (keeps each signal's
            autocorrelation, breaks its relation to the spikes): the chance level of this pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtdecode.core.metrics import binned_counts, pearson_r, r_squared, ridge_decode
from rtdecode.report.mlp import fit_mlp

__all__ = ["decoding_scores", "METHODS"]

METHODS = ("model", "ridge", "mlp", "shuffle")


def decoding_scores(
    tokens: Any, targets: dict[str, np.ndarray], split: Any, model_pred: dict[str, np.ndarray], seed: int = 0
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, np.ndarray]]]:
    """Returns (scores name -> method -> {r, r2}, test predictions name -> method -> (W_test,))."""
    x = {k: binned_counts(tokens, getattr(split, k)) for k in ("train", "val", "test")}
    names = list(model_pred)
    y = {k: np.stack([targets[n][getattr(split, k)] for n in names], 1) for k in ("train", "val", "test")}
    mlp = fit_mlp(x["train"], y["train"], x["val"], y["val"], x["test"], seed=seed)
    rng = np.random.default_rng(seed)
    n_train = y["train"].shape[0]
    shift = int(rng.integers(n_train // 4, 3 * n_train // 4)) if n_train > 8 else 1
    scores: dict[str, dict[str, dict[str, float]]] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for j, name in enumerate(names):
        ridge, _ = ridge_decode(x["train"], y["train"][:, j], x["val"], y["val"][:, j], x["test"])
        shuffled, _ = ridge_decode(x["train"], np.roll(y["train"][:, j], shift), x["val"], y["val"][:, j], x["test"])
        preds[name] = {
            "model": np.asarray(model_pred[name], np.float64),
            "ridge": ridge,
            "mlp": mlp[:, j],
            "shuffle": shuffled,
        }
        truth = y["test"][:, j]
        scores[name] = {m: {"r": pearson_r(truth, p), "r2": r_squared(truth, p)} for m, p in preds[name].items()}
    return scores, preds
