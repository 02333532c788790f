"""Behavior decoding on held-out windows: the served model against baselines fitted in the same run, same split.

Methods per regression target (all scored on the test windows, in the data's units):
* model   — the exported bundle's decode (what the daemon would publish for these windows);
* ridge   — ridge on binned counts of the window and its history (penalty chosen on validation);
* mlp     — a one-hidden-layer MLP on the same features (`rtdecode.report.mlp`);
* shuffle — the ridge fitted on training labels rolled in time by a random offset (keeps each signal's
            autocorrelation, breaks its relation to the spikes): the chance level of this pipeline.

Circular targets (radians) are fitted as two columns, cos and sin (ridge: each its own penalty; the MLP: two of
its outputs), decoded as atan2, and scored by r of cos/sin (`circular_r`) and the mean absolute angular error in
degrees, in place of r and R^2.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from rtdecode.core.metrics import (
    angle_of,
    angular_error_deg,
    binned_counts,
    circular_r,
    pearson_r,
    r_squared,
    ridge_decode,
    ridge_decode_angle,
)
from rtdecode.report.mlp import fit_mlp

__all__ = ["decoding_scores", "METHODS"]

METHODS = ("model", "ridge", "mlp", "shuffle")


def decoding_scores(
    tokens: Any,
    targets: dict[str, np.ndarray],
    split: Any,
    model_pred: dict[str, np.ndarray],
    seed: int = 0,
    circular: Collection[str] = (),
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, np.ndarray]]]:
    """Returns (scores name -> method -> {r, r2}, or {r, mae_deg} for the `circular` names, test predictions
    name -> method -> (W_test,), circular ones in radians)."""
    x = {k: binned_counts(tokens, getattr(split, k)) for k in ("train", "val", "test")}
    names = list(model_pred)
    y = {k: {n: targets[n][getattr(split, k)] for n in names} for k in ("train", "val", "test")}
    columns = {n: [np.cos, np.sin] if n in circular else [np.asarray] for n in names}  # what the MLP fits
    stacked = {k: np.stack([f(y[k][n]) for n in names for f in columns[n]], 1) for k in ("train", "val")}
    mlp = fit_mlp(x["train"], stacked["train"], x["val"], stacked["val"], x["test"], seed=seed)
    rng = np.random.default_rng(seed)
    n_train = stacked["train"].shape[0]
    shift = int(rng.integers(n_train // 4, 3 * n_train // 4)) if n_train > 8 else 1
    scores: dict[str, dict[str, dict[str, float]]] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    col = 0
    for name in names:
        fit = ridge_decode_angle if name in circular else _ridge
        train, val = y["train"][name], y["val"][name]
        mlp_cols = mlp[:, col : col + len(columns[name])]
        col += len(columns[name])
        preds[name] = {
            "model": np.asarray(model_pred[name], np.float64),
            "ridge": fit(x["train"], train, x["val"], val, x["test"]),
            "mlp": angle_of(mlp_cols[:, 0], mlp_cols[:, 1]) if name in circular else mlp_cols[:, 0],
            "shuffle": fit(x["train"], np.roll(train, shift), x["val"], val, x["test"]),
        }
        truth = y["test"][name]
        if name in circular:
            scores[name] = {
                m: {"r": circular_r(truth, p), "mae_deg": angular_error_deg(truth, p)} for m, p in preds[name].items()
            }
        else:
            scores[name] = {m: {"r": pearson_r(truth, p), "r2": r_squared(truth, p)} for m, p in preds[name].items()}
    return scores, preds


def _ridge(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray
) -> np.ndarray:
    return ridge_decode(x_train, y_train, x_val, y_val, x_test)[0]
