"""Connectivity from attention: averaged causal self-attention from later spikes to earlier spikes, by neuron.

Two keyings of the same attention weights (averaged over heads and the feature-encoder layers), both target x
source matrices comparable with the simulator's W and scored by `rtdecode.core.connectivity`:
* by spike: for every pair of spikes where key k lies in an earlier time bin than query q, the weight of q on k is
  added to A[ids[q], ids[k]] (the later spike's neuron reads the earlier one's);
* by predicted neuron (the paper's reading): position q predicts the next token, so its weights on the keys in an
  earlier time bin than that next spike are added to A[ids[q + 1], ids[k]] (what the model reads to predict
  neuron i's spike).
Each sum is divided by how often its pair occurred (co-occurrence), so frequent pairs are not favoured.
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
)
from rtdecode.core.window_data import WindowData, evenly_spaced, make_split
from rtdecode.data.session import Session
from rtdecode.training.blocks import recording_attention
from rtdecode.training.data import to_torch
from rtdecode.training.model import Neuroformer

__all__ = ["attention_connectivity", "connectivity_matrices"]


@torch.no_grad()
def attention_connectivity(
    model: Neuroformer, data: WindowData, windows: np.ndarray, norm: Any, batch_size: int = 32
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keying ("spike", "predicted") -> (matrix (N, N) target x source, co-occurrence counts (N, N))."""
    model.eval()
    n = model.vocab.n_neurons
    sums = {k: (np.zeros((n, n)), np.zeros((n, n))) for k in ("spike", "predicted")}
    with recording_attention(model.feature) as blocks:
        for lo in range(0, windows.size, batch_size):
            batch = to_torch(data.batch(windows[lo : lo + batch_size], norm), "cpu")
            model.forward_tokens(batch["ids"], batch["dts"], model.encode_context(batch))
            weights = torch.stack([blk.attn.last_weights for blk in blocks]).mean(dim=(0, 2)).numpy()  # (B, T, T)
            ids, dts = batch["ids"].numpy(), batch["dts"].numpy()
            spike = ids < n
            # key strictly earlier in time than the spike: spikes of the same bin are ordered by neuron index in
            # the token stream, so counting them would only let higher indices "see" lower ones (an artefact)
            earlier = dts[:, None, :] < dts[:, :, None]
            _add(sums["spike"], spike[:, :, None] & spike[:, None, :] & earlier, ids, ids, weights)
            # position q predicts token q + 1: its row is that token's neuron, its keys those before that token's bin
            nxt_ids, nxt_earlier = ids[:, 1:], earlier[:, 1:, :-1]
            causal = np.tril(np.ones((ids.shape[1] - 1,) * 2, bool))  # keys up to q itself
            pair = (nxt_ids < n)[:, :, None] & spike[:, None, :-1] & nxt_earlier & causal
            _add(sums["predicted"], pair, nxt_ids, ids[:, :-1], weights[:, :-1, :-1])
    return {k: (total / np.maximum(count, 1.0), count) for k, (total, count) in sums.items()}


def _add(
    acc: tuple[np.ndarray, np.ndarray], pair: np.ndarray, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray
) -> None:
    """Add the weights of every (b, q, k) in `pair` at (rows[b, q], cols[b, k]) and count it."""
    b, q, k = np.nonzero(pair)
    np.add.at(acc[0], (rows[b, q], cols[b, k]), weights[b, q, k])
    np.add.at(acc[1], (rows[b, q], cols[b, k]), 1.0)


def connectivity_matrices(
    run: Any, session: Session, windows: int = 3000, bin_ms: float = 10.0
) -> dict[str, np.ndarray]:
    """Attention matrix of a LoadedRun over up to `windows` evenly spaced training windows, beside the
    correlation and lagged-correlation baselines from the whole session binned at `bin_ms`, and the 1-5 ms
    cross-correlogram at spike-time resolution."""
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
        "correlation": correlation_baseline(counts),
        "lagged correlation": lagged_correlation_baseline(counts),
        "cross-correlogram": cross_correlogram_baseline(
            session.spike_times, session.spike_neurons, session.n_neurons, session.stop - session.start
        ),
    }
