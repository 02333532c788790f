"""Receptive fields on the frame-patch grid: the model's stimulus attention and a spike-triggered average, each
scored against the simulator's true fields (numpy only; the attention itself comes from `training.stimulus`).

Both maps and the truth are compared as energy on the model's patch grid: attention weights are non-negative
and one per patch, so the true field (a signed Gabor) and the spike-triggered average (signed pixels) are
squared and summed within each patch before the correlation. The score of a neuron is the Pearson r between its
map and its true field's energy map over the patches; the summary is the median over visual neurons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtdecode.core.metrics import pearson_r

__all__ = ["patch_energy", "score_maps", "spike_triggered_average"]


def patch_energy(fields: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """(K, H, W) signed fields -> (K, H / ph, W / pw) energy (sum of squares) per patch."""
    k, h, w = fields.shape
    ph, pw = patch
    return (fields.astype(np.float64) ** 2).reshape(k, h // ph, ph, w // pw, pw).sum(axis=(2, 4))


def spike_triggered_average(
    frames: np.ndarray,
    frame_times: np.ndarray,
    spike_times: np.ndarray,
    spike_neurons: np.ndarray,
    neurons: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean mean-subtracted frame shown at each spike of each of `neurons`.

    Args:
        frames: (F, H, W) uint8 video; frame_times: (F,) s, increasing.
        spike_times, spike_neurons: (S,) the spikes to average over (e.g. those of the analysed windows).
        neurons: (K,) neuron indices to average for.
    Returns:
        (K, H, W) float64 averages (zero for a neuron without spikes) and (K,) spike counts.
    """
    mean = frames.mean(axis=0, dtype=np.float64)
    shown = np.searchsorted(frame_times, spike_times, side="right") - 1  # the frame on screen at each spike
    ok = shown >= 0
    out = np.zeros((neurons.size, *frames.shape[1:]))
    counts = np.zeros(neurons.size, np.int64)
    for i, n in enumerate(neurons):
        idx = shown[ok & (spike_neurons == n)]
        counts[i] = idx.size
        if idx.size:
            # frames shown several times are summed once per spike, without a (spikes, H, W) copy
            uniq, mult = np.unique(idx, return_counts=True)
            out[i] = np.tensordot(mult, frames[uniq].astype(np.float64), axes=1) / idx.size - mean
    return out, counts


def score_maps(maps: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Per-neuron r between (K, h, w) maps and (K, h, w) true energy maps, and their median over neurons."""
    r = np.array([pearson_r(t.ravel(), m.ravel()) for m, t in zip(maps, truth, strict=True)])
    finite = r[np.isfinite(r)]
    return {"r": r.tolist(), "median_r": float(np.median(finite)) if finite.size else float("nan")}
