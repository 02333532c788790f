"""Scoring an inferred connectivity matrix against the simulator's ground truth, and the baselines to beat.

Matrices are target x source (M[i, j] = influence of neuron j on neuron i), like the simulator's W. Scores:
* AUROC / AUPRC of |M| for the true edges (W[i, j] != 0, i != j) against all other off-diagonal pairs;
* hub recovery: whether the k largest column sums (total outgoing influence) are the true hubs;
* direction index: mean M along true edges (i <- j) over mean M against them (j <- i), for edges whose reverse is
  not itself an edge; > 1 means the matrix gets the direction right.
Two sets of true edges are scored: the hub circuit (each hub -> its community's targets: the network the default
simulation is built around, as in the Neuroformer paper's hub experiment) and all non-zero weights (the hub circuit
plus the sparse random background of weak +/- weights, mostly below any method's detection limit in 10 minutes).
Two bars are judged on the hub circuit; both edge sets are always reported. Each bar judges the matrix named by
its `method` argument ("attention" unless given; the report and `rtdecode connectivity` pass JUDGED_READING).
`meets_bar` (AUROC): AUROC >= 0.85, hubs found, direction index > 1 and a higher AUROC than every baseline. AUROC saturates on hub networks (every
method scores ~0.98-1.0), so `meets_auprc_bar` asks what separates methods there: an AUPRC within 0.05 of the best
directed baseline's and a direction index at least that baseline's.
Baselines: the correlation of binned counts (symmetric, so it carries no direction), the lagged cross-correlation
corr(x_i(t), x_j(t - lag)) of binned counts, a cross-correlogram at spike-time resolution (target spikes 1-5 ms
after each source spike, as a z-score against independent firing) and the same correlogram with its pair's slow
co-modulation (its count 15-30 ms later, a shift predictor) subtracted. Numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtdecode.data.tokenizer import concat_ranges

__all__ = [
    "auroc",
    "auprc",
    "hub_recovery",
    "direction_index",
    "score_matrix",
    "hub_circuit",
    "score_against_truth",
    "meets_auprc_bar",
    "DIRECTED_BASELINES",
    "JUDGED_READING",
    "UNCORRECTED_BASELINES",
    "meets_bar",
    "meets_stimulus_bar",
    "cross_correlogram_baseline",
    "slow_corrected_cross_correlogram",
    "lagged_pair_counts",
    "binned",
    "correlation_baseline",
    "lagged_correlation_baseline",
]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (rank formulation, ties averaged)."""
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = scores[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (area under precision-recall, step-wise)."""
    labels = labels.astype(bool)
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].mean())


def _off_diagonal(n: int) -> np.ndarray:
    return ~np.eye(n, dtype=bool)


def hub_recovery(matrix: np.ndarray, hubs: np.ndarray) -> dict[str, Any]:
    """Are the len(hubs) largest column sums (outgoing influence, diagonal excluded) the true hubs?"""
    m = np.where(_off_diagonal(matrix.shape[0]), np.abs(matrix), 0.0)
    top = np.argsort(-m.sum(0), kind="stable")[: len(hubs)]
    found = len(set(top.tolist()) & set(np.asarray(hubs).tolist()))
    return {"hubs_found": found, "hubs_total": len(hubs), "all_found": found == len(hubs), "top_columns": top.tolist()}


def direction_index(matrix: np.ndarray, w: np.ndarray, pairs: np.ndarray | None = None) -> float:
    """Mean matrix value along true edges over the mean against them (edges without a reverse edge only; within
    `pairs`, a boolean target x source mask, when given)."""
    edges = (w != 0) & (_off_diagonal(w.shape[0]) if pairs is None else pairs) & (w.T == 0)
    if not edges.any():
        return float("nan")
    along, against = float(matrix[edges].mean()), float(matrix.T[edges].mean())
    if against == 0:
        return float("inf") if along > 0 else float("nan")
    return along / against


def score_matrix(
    matrix: np.ndarray, w: np.ndarray, hubs: np.ndarray, pairs: np.ndarray | None = None
) -> dict[str, Any]:
    """Every score of one inferred matrix against the truth, over the off-diagonal pairs or over `pairs` (a boolean
    target x source mask, diagonal excluded)."""
    off = _off_diagonal(w.shape[0]) if pairs is None else pairs & _off_diagonal(w.shape[0])
    labels = (w != 0)[off]
    scores = np.abs(matrix)[off]
    return {
        "auroc": auroc(scores, labels),
        "auprc": auprc(scores, labels),
        "edge_fraction": float(labels.mean()),
        **hub_recovery(matrix, hubs),
        "direction_index": direction_index(matrix, w, off),
    }


def hub_circuit(truth: dict[str, np.ndarray]) -> np.ndarray:
    """W restricted to the hub -> community-target edges (simulator truth: W, hubs, community)."""
    w, hubs, community = truth["W"], np.asarray(truth["hubs"]), np.asarray(truth["community"])
    keep = np.zeros(w.shape, dtype=bool)
    for h in hubs:  # a hub's community is its own label (a day of rtdecode.sim.days may miss some hubs)
        targets = np.flatnonzero(community == community[h])
        keep[targets[targets != h], h] = True
    return np.where(keep, w, 0.0)


def score_against_truth(matrix: np.ndarray, truth: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Scores on the hub circuit, on all non-zero weights and, where the truth names visual neurons, on the
    weights into them ("visual": every source -> each visual neuron; one stimulus drives the visual neurons
    together, so they co-fire without an edge between them, beside their true hub and background inputs)."""
    out = {
        "hub_circuit": score_matrix(matrix, hub_circuit(truth), truth["hubs"]),
        "all_weights": score_matrix(matrix, truth["W"], truth["hubs"]),
    }
    visual = np.asarray(truth.get("visual_neurons", ()), dtype=np.int64)
    if visual.size:
        into_visual = np.zeros(truth["W"].shape, dtype=bool)
        into_visual[visual] = True
        out["visual"] = score_matrix(matrix, truth["W"], truth["hubs"], into_visual)
    return out


def _baselines(scores: dict[str, Any]) -> list[str]:
    """The baseline methods in `scores`: every method but the readings of attention ("attention", "attention (...)")."""
    return [m for m in scores if not m.startswith("attention")]


def meets_bar(
    scores: dict[str, dict[str, dict[str, Any]]], method: str = "attention", min_auroc: float = 0.85
) -> dict[str, bool]:
    """The AUROC bar on the hub circuit: AUROC >= min_auroc, all hubs found, direction index > 1, and a higher
    AUROC than every baseline in `scores` (method -> score_against_truth result; the other attention readings are
    not baselines)."""
    mine = scores[method]["hub_circuit"]
    others = [scores[m]["hub_circuit"]["auroc"] for m in _baselines(scores)]
    checks = {
        "auroc": mine["auroc"] >= min_auroc,
        "hubs": bool(mine["all_found"]),
        "direction": mine["direction_index"] > 1,
        "beats_baselines": all(mine["auroc"] > o for o in others),
    }
    return {**checks, "met": all(checks.values())}


def binned(
    spike_times: np.ndarray, spike_neurons: np.ndarray, n_neurons: int, start: float, stop: float, bin_s: float
) -> np.ndarray:
    """(T, N) spike counts in bins of `bin_s` seconds."""
    n_bins = int(np.floor((stop - start) / bin_s))
    b = np.floor((spike_times - start) / bin_s).astype(np.int64)
    keep = (b >= 0) & (b < n_bins)
    counts = np.zeros((n_bins, n_neurons))
    np.add.at(counts, (b[keep], spike_neurons[keep]), 1.0)
    return counts


def correlation_baseline(counts: np.ndarray) -> np.ndarray:
    """Zero-lag Pearson correlation of binned counts (symmetric: no direction)."""
    c = np.corrcoef(counts.T)
    return np.nan_to_num(c)


def lagged_correlation_baseline(counts: np.ndarray, lag: int = 1) -> np.ndarray:
    """M[i, j] = corr(x_i(t), x_j(t - lag)): source j leading target i by `lag` bins."""
    x = counts - counts.mean(0)
    x /= x.std(0) + 1e-12
    later, earlier = x[lag:], x[:-lag]
    return (later.T @ earlier) / later.shape[0]


def cross_correlogram_baseline(
    spike_times: np.ndarray,
    spike_neurons: np.ndarray,
    n_neurons: int,
    duration: float,
    lags: tuple[float, float] = (0.001, 0.005),
    chunk: int = 200_000,
) -> np.ndarray:
    """M[i, j]: spikes of i within `lags` s after a spike of j, as a z-score against independent firing.

    Spike times are used as they are (no binning: the resolution is the data's). The expected count of an
    independent pair is n_i * n_j * (lag span) / duration; M = (count - expected) / sqrt(expected)."""
    counts = lagged_pair_counts(spike_times, spike_neurons, n_neurons, lags, chunk)
    expected = _independent_counts(spike_neurons, n_neurons, lags, duration)
    return (counts - expected) / np.sqrt(expected + 1e-12)


def slow_corrected_cross_correlogram(
    spike_times: np.ndarray,
    spike_neurons: np.ndarray,
    n_neurons: int,
    duration: float,
    near: tuple[float, float] = (0.001, 0.005),
    shifts: tuple[float, ...] = (0.015, 0.020, 0.025, 0.030),
    chunk: int = 200_000,
) -> np.ndarray:
    """The `near`-lag cross-correlogram with the pair's slow co-modulation subtracted, as a z-score.

    Whatever drives two neurons together on slow time scales (a shared stimulus, behavior, a hub's active
    periods) adds target spikes at every lag after a source spike, also against the direction of the edge;
    a synapse adds them only within its few milliseconds. The mean count in the `near` window moved later by each
    of `shifts` estimates the slow part (the idea of a shift predictor; the same span, so spike times on a grid
    count alike); M = (near count - that estimate) / sqrt(expected near count under independent firing)."""
    near_counts = lagged_pair_counts(spike_times, spike_neurons, n_neurons, near, chunk)
    slow = np.mean(
        [lagged_pair_counts(spike_times, spike_neurons, n_neurons, (near[0] + d, near[1] + d), chunk) for d in shifts],
        axis=0,
    )
    expected = _independent_counts(spike_neurons, n_neurons, near, duration)
    return (near_counts - slow) / np.sqrt(expected + 1e-12)


def lagged_pair_counts(
    spike_times: np.ndarray,
    spike_neurons: np.ndarray,
    n_neurons: int,
    lags: tuple[float, float],
    chunk: int = 200_000,
) -> np.ndarray:
    """C[i, j]: spikes of i within `lags` s (both ends included) after a spike of j. Source spikes are processed
    `chunk` at a time, so memory stays bounded for long sessions."""
    order = np.argsort(spike_times, kind="stable")
    t, nn = spike_times[order], spike_neurons[order].astype(np.int64)
    eps = 1e-9  # spike times on a grid: a lag of exactly 1 ms or 5 ms counts
    lo = np.searchsorted(t, t + lags[0] - eps, side="left")
    hi = np.searchsorted(t, t + lags[1] + eps, side="right")
    flat = np.zeros(n_neurons * n_neurons)
    for c0 in range(0, t.size, chunk):
        c_lo, c_hi, src = lo[c0 : c0 + chunk], hi[c0 : c0 + chunk], nn[c0 : c0 + chunk]
        n = c_hi - c_lo
        tgt = nn[concat_ranges(c_lo, n)]
        flat += np.bincount(tgt * n_neurons + np.repeat(src, n), minlength=n_neurons * n_neurons)
    return flat.reshape(n_neurons, n_neurons)


def _independent_counts(
    spike_neurons: np.ndarray, n_neurons: int, lags: tuple[float, float], duration: float
) -> np.ndarray:
    """Expected lagged_pair_counts of independent Poisson neurons at the session's rates."""
    rates = np.bincount(spike_neurons.astype(np.int64), minlength=n_neurons).astype(np.float64)
    return np.outer(rates, rates) * (lags[1] - lags[0]) / max(duration, 1e-12)


UNCORRECTED_BASELINES = ("lagged correlation", "cross-correlogram")
DIRECTED_BASELINES = (*UNCORRECTED_BASELINES, "cross-correlogram (slow-corrected)")
# The attention reading the bars judge: the one that counts the attention the model's predictions rest on
# (training/connectivity.py); the others are reported beside it.
JUDGED_READING = "attention (gradient-weighted)"


def meets_auprc_bar(
    scores: dict[str, dict[str, dict[str, Any]]],
    method: str = "attention",
    tolerance: float = 0.05,
    baselines: tuple[str, ...] = DIRECTED_BASELINES,
) -> dict[str, Any]:
    """On the hub circuit: `method`'s AUPRC within `tolerance` of the best of `baselines` present in `scores` (the
    one with the highest AUPRC) and a direction index at least that baseline's."""
    mine = scores[method]["hub_circuit"]
    present = [b for b in baselines if b in scores]
    if not present:
        raise ValueError(f"no directed baseline among {sorted(scores)}; expected one of {baselines}")
    best = max(present, key=lambda b: scores[b]["hub_circuit"]["auprc"])
    ref = scores[best]["hub_circuit"]
    checks = {
        "auprc": bool(mine["auprc"] >= ref["auprc"] - tolerance),
        "direction": bool(mine["direction_index"] >= ref["direction_index"]),
    }
    return {**checks, "best_baseline": best, "met": all(checks.values())}


def meets_stimulus_bar(
    scores: dict[str, dict[str, dict[str, Any]]],
    method: str = "attention",
    baselines: tuple[str, ...] | None = None,
) -> dict[str, Any] | None:
    """On the weights into the visual neurons (a shared stimulus drives them): `method`'s AUPRC above that of every
    baseline (of `baselines` where given, else of every method in `scores` that is no attention reading): the
    stimulus makes correlation-based baselines see edges that do not exist; a model that sees the frames can
    explain that drive away. None where the truth has no visual edge set."""
    if "visual" not in scores[method]:
        return None
    names = _baselines(scores) if baselines is None else [b for b in baselines if b in scores]
    if not names:
        wanted = "a method that is no attention reading" if baselines is None else f"one of {baselines}"
        raise ValueError(f"no baseline among {sorted(scores)}; expected {wanted}")
    auprcs = {m: scores[m]["visual"]["auprc"] for m in names}
    best = max(auprcs, key=lambda m: auprcs[m])
    mine = scores[method]["visual"]["auprc"]
    return {"auprc": mine, "best_baseline": best, "best_auprc": auprcs[best], "met": bool(mine > auprcs[best])}
