"""Connectivity from attention: averaged causal self-attention from later spikes to earlier spikes, by neuron.

For every window and every pair of spikes where key k lies in an earlier time bin than query q, the attention
weight of q (neuron i = ids[q], the later spike) on k (neuron j = ids[k], the earlier spike), averaged over heads and the
feature-encoder layers, is added to A[i, j]; C[i, j] counts how often the pair occurred. A / C is a target x
source matrix, comparable with the simulator's W and scored by `rtdecode.core.connectivity`.
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
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (matrix (N, N) target x source, co-occurrence counts (N, N))."""
    model.eval()
    n = model.vocab.n_neurons
    total = np.zeros((n, n))
    count = np.zeros((n, n))
    with recording_attention(model.feature) as blocks:
        for lo in range(0, windows.size, batch_size):
            batch = to_torch(data.batch(windows[lo : lo + batch_size], norm), "cpu")
            model.forward_tokens(batch["ids"], batch["dts"], model.encode_context(batch))
            weights = torch.stack([blk.attn.last_weights for blk in blocks]).mean(dim=(0, 2)).numpy()  # (B, T, T)
            ids, dts = batch["ids"].numpy(), batch["dts"].numpy()
            spike = ids < n
            # key strictly earlier in time than the query: spikes of the same bin are ordered by neuron index in
            # the token stream, so counting them would only let higher indices "see" lower ones (an artefact)
            earlier = dts[:, None, :] < dts[:, :, None]
            pair = spike[:, :, None] & spike[:, None, :] & earlier
            b, q, k = np.nonzero(pair)
            np.add.at(total, (ids[b, q], ids[b, k]), weights[b, q, k])
            np.add.at(count, (ids[b, q], ids[b, k]), 1.0)
    return total / np.maximum(count, 1.0), count


def connectivity_matrices(
    run: Any, session: Session, windows: int = 3000, bin_ms: float = 10.0
) -> dict[str, np.ndarray]:
    """Attention matrix of a LoadedRun over up to `windows` evenly spaced training windows, beside the
    correlation and lagged-correlation baselines from the whole session binned at `bin_ms`, and the 1-5 ms
    cross-correlogram at spike-time resolution."""
    data = WindowData(session, run.config)
    train = make_split(data, run.config).train
    pick = evenly_spaced(train, windows)
    matrix, _ = attention_connectivity(run.model, data, pick, run.norm)
    counts = binned(
        session.spike_times, session.spike_neurons, session.n_neurons, session.start, session.stop, bin_ms / 1e3
    )
    return {
        "attention": matrix,
        "correlation": correlation_baseline(counts),
        "lagged correlation": lagged_correlation_baseline(counts),
        "cross-correlogram": cross_correlogram_baseline(
            session.spike_times, session.spike_neurons, session.n_neurons, session.stop - session.start
        ),
    }
