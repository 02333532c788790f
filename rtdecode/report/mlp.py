"""A small MLP regressor in numpy: the nonlinear baseline beside ridge in the decoding section.

One hidden ReLU layer on z-scored binned counts (the ridge's features), all regression targets at once (z-scored),
Adam on mini-batches, early stopping on the validation windows. Numpy keeps the report runnable on a serve-only
install (no torch); at 2N = 600 inputs and 64 hidden units it trains in seconds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_mlp"]


def fit_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    *,
    hidden: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch: int = 256,
    epochs: int = 200,
    patience: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Fit on (x_train, y_train (W, K)); returns predictions for x_test (W', K) from the best-validation epoch.

    Rows with a non-finite target are left out of training and validation.
    """
    rng = np.random.default_rng(seed)
    ok_train = np.isfinite(y_train).all(1)
    ok_val = np.isfinite(y_val).all(1)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    ym, ys = np.nanmean(y_train, 0), np.nanstd(y_train, 0) + 1e-9
    xt, yt = ((x_train - mu) / sd)[ok_train], ((y_train - ym) / ys)[ok_train]
    xv, yv = ((x_val - mu) / sd)[ok_val], ((y_val - ym) / ys)[ok_val]
    params = [
        rng.normal(0, np.sqrt(2 / xt.shape[1]), (xt.shape[1], hidden)),
        np.zeros(hidden),
        rng.normal(0, np.sqrt(1 / hidden), (hidden, yt.shape[1])),
        np.zeros(yt.shape[1]),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    best, best_params, bad, step = np.inf, [p.copy() for p in params], 0, 0
    for _ in range(epochs):
        order = rng.permutation(xt.shape[0])
        for lo in range(0, order.size, batch):
            idx = order[lo : lo + batch]
            grads = _grads(params, xt[idx], yt[idx], weight_decay)
            step += 1
            for p, g, mm, vv in zip(params, grads, m, v):  # Adam, in place
                mm *= 0.9
                mm += 0.1 * g
                vv *= 0.999
                vv += 0.001 * g * g
                p -= lr * (mm / (1 - 0.9**step)) / (np.sqrt(vv / (1 - 0.999**step)) + 1e-8)
        loss = float(np.mean((_forward(params, xv)[0] - yv) ** 2)) if xv.size else 0.0
        if loss < best - 1e-5:
            best, best_params, bad = loss, [p.copy() for p in params], 0
        else:
            bad += 1
            if bad >= patience:
                break
    return _forward(best_params, (x_test - mu) / sd)[0] * ys + ym


def _forward(params: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1 + b1, 0.0)  # (B, hidden)
    return h @ w2 + b2, h  # (B, K)


def _grads(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, weight_decay: float) -> list[np.ndarray]:
    w1, _, w2, _ = params
    out, h = _forward(params, x)
    d_out = 2.0 * (out - y) / y.size  # d mean-squared-error
    d_h = (d_out @ w2.T) * (h > 0)
    return [x.T @ d_h + weight_decay * w1, d_h.sum(0), h.T @ d_out + weight_decay * w2, d_out.sum(0)]
