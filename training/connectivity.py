"""Connectivity from attention: averaged causal self-attention from later spikes to earlier spikes, by neuron.

Two keyings of the same attention weights (averaged over heads and the feature-encoder layers), both target x
source matrices comparable with the simulator's W and scored by `rtdecode.core.connectivity`:
* by spike: for every pair of spikes where key k lies in an earlier time bin than query q, the weight of q on k is
  added to A[ids[q], ids[k]] (the later spike's neuron reads the earlier one's);
* by predicted neuron (the paper's reading): position q predicts the next token, so its weights on the keys in an
  earlier time bin than that next spike are added to A[ids[q + 1], ids[k]] (what the model reads to predict
  neuron i's spike).
Each sum is divided by how often its pair occurred (co-occurrence), so frequent pairs are not favoured.
A third reading, the lag contrast, keys by spike and takes the attention to keys exactly one bin earlier less that
to keys further back (clipped at zero): what drives two neurons together on slow time scales (the hubs' active
periods, the stimulus) draws attention at every lag and in both directions, a synapse mostly at the first.
A fourth, the gradient-weighted reading, keys by predicted neuron like the second but weights each attention weight
by the gradient of the window's next-spike log-likelihood with respect to it, positive part only
(`rtdecode.training.attribution`): it counts the attention the prediction rests on. Attention to a spike that
only says "the hub's community is active", which the rest of the history says as well, moves the prediction
little; attention to a spike that raises the probability of the next one beyond that, as a synapse does, moves it
most.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rtdecode.core.connectivity import (
    binned,
    correlation_baseline,
    cross_correlogram_baseline,
    lagged_correlation_baseline,
    slow_corrected_cross_correlogram,
)
from rtdecode.core.window_data import WindowData, evenly_spaced, make_split
from rtdecode.data.session import Session
from rtdecode.training.attribution import gradient_weighted
from rtdecode.training.blocks import recording_attention
from rtdecode.training.data import to_torch
from rtdecode.training.model import Neuroformer

__all__ = ["attention_connectivity", "connectivity_matrices"]


def attention_connectivity(
    model: Neuroformer, data: WindowData, windows: np.ndarray, norm: Any, batch_size: int = 32
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reading ("spike", "predicted", "lag contrast", "gradient-weighted") -> (matrix (N, N) target x source,
    co-occurrence counts (N, N); for "lag contrast", those of the first-bin pairs)."""
    model.eval()
    n = model.vocab.n_neurons
    # per reading, (sums, counts) of the pairs one bin apart and of those further apart
    keyings = ("spike", "predicted", "gradient-weighted")
    near = {k: (np.zeros((n, n)), np.zeros((n, n))) for k in keyings}
    far = {k: (np.zeros((n, n)), np.zeros((n, n))) for k in keyings}
    with recording_attention(model.feature, keep_graph=True) as blocks:
        for lo in range(0, windows.size, batch_size):
            batch = to_torch(data.batch(windows[lo : lo + batch_size], norm), "cpu")
            with torch.enable_grad():
                hidden = model.forward_tokens(batch["ids"], batch["dts"], model.encode_context(batch))
                recorded = [blk.attn.last_weights for blk in blocks]
                attributed = gradient_weighted(model, hidden, batch["ids"], recorded)
            weights = torch.stack([w.detach() for w in recorded]).mean(dim=(0, 2)).numpy()  # (B, T, T)
            weighted = torch.stack(attributed).mean(dim=(0, 2)).numpy()  # (B, T, T)
            ids, dts = batch["ids"].numpy(), batch["dts"].numpy()
            spike = ids < n
            # key strictly earlier in time than the spike: spikes of the same bin are ordered by neuron index in
            # the token stream, so counting them would only let higher indices "see" lower ones (an artefact)
            lag = dts[:, :, None] - dts[:, None, :]  # (B, query, key) in bins
            _add_by_lag(near["spike"], far["spike"], spike[:, :, None] & spike[:, None, :], lag, ids, ids, weights)
            # position q predicts token q + 1: its row is that token's neuron, its keys those before that token's bin
            nxt_ids = ids[:, 1:]
            causal = np.tril(np.ones((ids.shape[1] - 1,) * 2, bool))  # keys up to q itself
            pair = (nxt_ids < n)[:, :, None] & spike[:, None, :-1] & causal
            for reading, w in (("predicted", weights), ("gradient-weighted", weighted)):
                _add_by_lag(near[reading], far[reading], pair, lag[:, 1:, :-1], nxt_ids, ids[:, :-1], w[:, :-1, :-1])
    out = {}
    for k in keyings:
        total, count = near[k][0] + far[k][0], near[k][1] + far[k][1]
        out[k] = (total / np.maximum(count, 1.0), count)
    (s1, c1), (s2, c2) = near["spike"], far["spike"]
    # the first bin's attention less the later bins': a synapse acts within a bin or two, what drives a pair
    # together slowly draws attention at every lag (the correlogram's shift-predictor idea, within a window)
    contrast = np.where((c1 > 0) & (c2 > 0), s1 / np.maximum(c1, 1.0) - s2 / np.maximum(c2, 1.0), 0.0)
    out["lag contrast"] = (np.clip(contrast, 0.0, None), c1)
    return out


def _add_by_lag(
    near: tuple[np.ndarray, np.ndarray],
    far: tuple[np.ndarray, np.ndarray],
    pair: np.ndarray,
    lag: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    weights: np.ndarray,
) -> None:
    """Add the weights of every (b, q, k) in `pair` whose key lies an earlier bin at (rows[b, q], cols[b, k]) and
    count it: in `near` for a lag of one bin, in `far` for more."""
    for acc, keep in ((near, pair & (lag == 1)), (far, pair & (lag > 1))):
        b, q, k = np.nonzero(keep)
        np.add.at(acc[0], (rows[b, q], cols[b, k]), weights[b, q, k])
        np.add.at(acc[1], (rows[b, q], cols[b, k]), 1.0)


def connectivity_matrices(
    run: Any, session: Session, windows: int = 3000, bin_ms: float = 10.0
) -> dict[str, np.ndarray]:
    """Attention matrices of a LoadedRun over up to `windows` evenly spaced training windows, beside the
    correlation and lagged-correlation baselines from the whole session binned at `bin_ms`, and the 1-5 ms
    cross-correlogram at spike-time resolution, plain and slow-corrected."""
    data = WindowData(session, run.config)
    train = make_split(data, run.config).train
    pick = evenly_spaced(train, windows)
    keyed = attention_connectivity(run.model, data, pick, run.norm)
    counts = binned(
        session.spike_times, session.spike_neurons, session.n_neurons, session.start, session.stop, bin_ms / 1e3
    )
    return {
        "attention": keyed["spike"][0],
        "attention (predicted)": keyed["predicted"][0],
        "attention (lag contrast)": keyed["lag contrast"][0],
        "attention (gradient-weighted)": keyed["gradient-weighted"][0],
        "correlation": correlation_baseline(counts),
        "lagged correlation": lagged_correlation_baseline(counts),
        "cross-correlogram": cross_correlogram_baseline(
            session.spike_times, session.spike_neurons, session.n_neurons, session.stop - session.start
        ),
        "cross-correlogram (slow-corrected)": slow_corrected_cross_correlogram(
            session.spike_times, session.spike_neurons, session.n_neurons, session.stop - session.start
        ),
    }
