"""Baselines every model figure is compared against, computed on the same windows and split (numpy only).

* Ridge regression of each behavior variable on binned spike counts: per neuron, the count in the current
  window and in its history window (the same information the model sees), z-scored; the ridge penalty is
  chosen on the validation windows.
* Per-neuron-rate set prediction: for a window with n spikes, predict the n neurons that fire most in training.

Circular (angle) targets, in radians: scored by the mean absolute angular error in degrees and by `circular_r`,
the mean Pearson r of the (cos, sin) components; the ridge baseline fits cos and sin separately on the same
features and decodes atan2 (`ridge_decode_angle`).
"""

from __future__ import annotations

import numpy as np

from rtdecode.data.tokenizer import TokenizedSession

__all__ = [
    "binned_counts",
    "ridge_decode",
    "ridge_decode_angle",
    "rate_baseline_f1",
    "pearson_r",
    "r_squared",
    "set_f1",
    "wrap_angle",
    "angle_of",
    "angular_error_deg",
    "circular_r",
]


def binned_counts(tokens: TokenizedSession, windows: np.ndarray) -> np.ndarray:
    """(W, 2N) float64: spikes per neuron in each window and in its history window."""
    n = tokens.vocab.n_neurons
    out = np.zeros((windows.size, 2 * n))
    for col, (lo, hi) in enumerate(
        (
            (tokens.window_ptr[windows], tokens.window_ptr[windows + 1]),
            (tokens.history_ptr[windows], tokens.window_ptr[windows]),
        )
    ):
        counts = hi - lo
        rows = np.repeat(np.arange(windows.size), counts)
        idx = np.arange(counts.sum()) + np.repeat(lo - (np.cumsum(counts) - counts), counts)
        np.add.at(out, (rows, col * n + tokens.neurons[idx]), 1.0)
    return out


def pearson_r(y: np.ndarray, p: np.ndarray) -> float:
    ok = np.isfinite(y) & np.isfinite(p)
    if ok.sum() < 3 or np.std(y[ok]) == 0 or np.std(p[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(y[ok], p[ok])[0, 1])


def r_squared(y: np.ndarray, p: np.ndarray) -> float:
    ok = np.isfinite(y) & np.isfinite(p)
    ss = np.sum((y[ok] - y[ok].mean()) ** 2)
    return float(1.0 - np.sum((y[ok] - p[ok]) ** 2) / ss) if ss > 0 else float("nan")


def ridge_decode(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
) -> tuple[np.ndarray, float]:
    """Fit ridge on train (penalty chosen by validation r), predict test. Returns (test predictions, alpha)."""
    ok = np.isfinite(y_train)
    mu, sd = x_train[ok].mean(0), x_train[ok].std(0) + 1e-6
    xt = (x_train[ok] - mu) / sd
    ym = y_train[ok].mean()
    gram = xt.T @ xt
    rhs = xt.T @ (y_train[ok] - ym)
    best: tuple[float, float, np.ndarray | None] = (-np.inf, alphas[0], None)
    for a in alphas:
        w = np.linalg.solve(gram + a * np.eye(gram.shape[0]), rhs)
        r = pearson_r(y_val, (x_val - mu) / sd @ w + ym)
        if np.isfinite(r) and r > best[0]:
            best = (r, a, w)
    w = best[2] if best[2] is not None else np.zeros(xt.shape[1])
    return (x_test - mu) / sd @ w + ym, float(best[1])


def ridge_decode_angle(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray
) -> np.ndarray:
    """Ridge for an angle (radians): cos and sin fitted separately (`ridge_decode`, each its own penalty),
    decoded as atan2. Returns the test angles in (-pi, pi]."""
    c, _ = ridge_decode(x_train, np.cos(y_train), x_val, np.cos(y_val), x_test)
    s, _ = ridge_decode(x_train, np.sin(y_train), x_val, np.sin(y_val), x_test)
    return angle_of(c, s)


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles (radians) wrapped into (-pi, pi]; NaN stays NaN."""
    w = np.mod(np.asarray(a, np.float64) + np.pi, 2 * np.pi) - np.pi  # [-pi, pi)
    return np.where(w <= -np.pi, w + 2 * np.pi, w)


def angle_of(cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """The angle of the vector (cos, sin), any length, in (-pi, pi] (atan2; -pi, from a sin of -0.0, becomes pi)."""
    a = np.arctan2(np.asarray(sin, np.float64), np.asarray(cos, np.float64))
    return np.where(a <= -np.pi, a + 2 * np.pi, a)


def angular_error_deg(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute angular difference between angles y and p (radians), in degrees (0..180); NaN pairs skipped."""
    ok = np.isfinite(y) & np.isfinite(p)
    if not ok.any():
        return float("nan")
    return float(np.degrees(np.abs(wrap_angle(p[ok] - y[ok]))).mean())


def circular_r(y: np.ndarray, p: np.ndarray) -> float:
    """Mean of the Pearson r of cos and of sin between angles y and p (radians).

    Chosen over the Jammalamadaka-SenGupta circular correlation because that one centres on each variable's
    circular mean, which is ill-determined when the angle covers the circle (head direction, orientations),
    while the components are then well spread; and because it is a Pearson r like every regression target's,
    so it averages into `behavior_r_mean`. A component that does not vary (an angle that barely moves) is left
    out; NaN if neither varies."""
    rs = [pearson_r(f(y), f(p)) for f in (np.cos, np.sin)]
    finite = [r for r in rs if np.isfinite(r)]
    return float(np.mean(finite)) if finite else float("nan")


def set_f1(pred: list[set[int]], true: list[set[int]]) -> dict[str, float]:
    """Mean per-window precision, recall and F1 of predicted vs true neuron sets (empty/empty counts as 1)."""
    p, r, f = [], [], []
    for a, b in zip(pred, true):
        tp = len(a & b)
        prec = tp / len(a) if a else float(not b)
        rec = tp / len(b) if b else float(not a)
        p.append(prec)
        r.append(rec)
        f.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return {"precision": float(np.mean(p)), "recall": float(np.mean(r)), "f1": float(np.mean(f))}


def rate_baseline_sets(tokens: TokenizedSession, train: np.ndarray, test: np.ndarray, oracle_n: bool) -> list[set[int]]:
    """The per-neuron-rate baseline's predicted set of firing neurons for each test window.

    oracle_n: the n most active training neurons, n = the window's true spike count (as the teacher-forced model
    metric `set_f1` is scored); else, without that oracle, the neurons expected to fire at least 0.5 times in a
    window at their training rates (as `set_f1_threshold`)."""
    counts = binned_counts(tokens, train)[:, : tokens.vocab.n_neurons].sum(0)
    if not oracle_n:
        expected = counts / max(train.size, 1)
        return [set(np.flatnonzero(expected >= 0.5).tolist()) for _ in test]
    ranking = np.argsort(-counts, kind="stable")
    n_spikes = np.diff(tokens.window_ptr)[test]
    return [set(ranking[: min(n, tokens.config.max_spikes)].tolist()) for n in n_spikes]


def rate_baseline_f1(tokens: TokenizedSession, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Set F1 of the per-neuron-rate baseline, with the oracle spike count (`f1`, ...) and without
    (`f1_threshold`, ...): see `rate_baseline_sets`."""
    true = [set(tokens.neurons[tokens.window_ptr[w] : tokens.window_ptr[w + 1]].tolist()) for w in test]
    out = set_f1(rate_baseline_sets(tokens, train, test, oracle_n=True), true)
    threshold = set_f1(rate_baseline_sets(tokens, train, test, oracle_n=False), true)
    return {**out, **{f"{k}_threshold": v for k, v in threshold.items()}}
