"""Stimulus attention maps (the paper's visual-attention figure): where in the video the model looks when it
predicts each neuron's spikes.

Two methods, both reading every frame cross-attention block's weights from each token position to the frame patch
tokens; a position counts for the neuron whose spike it predicts (the next token, as the paper keys its maps), and
a neuron's map is the mean over all of its predicted spikes:
* "attention": the raw weights, mean over heads and blocks. Every neuron's positions tend to read the same patches,
  so raw weights say little about which patches matter for which neuron.
* "gradient" (gradient-weighted attention, Chefer et al. 2021): the positive part of weight x its gradient,
  mean over heads and blocks. The gradient is that of the summed log-probability of the recorded next neurons of a
  window, so a position's gradient also carries (through causal self-attention) its effect on later predictions in
  the window: a map keyed by the predicted neuron is dominated by, not limited to, that neuron's own prediction. The patch grid is the frame encoder's (`model.frame_patch`); maps are
averaged over the patch grid's time axis, giving one (H / ph, W / pw) map per neuron. The frame encoder's
self-attention mixes patches before the cross-attention reads them, so a map says which patch tokens were read,
each carrying mostly (not only) its own pixels: one reason to score the maps (`rtdecode.core.receptive_fields`)
rather than trust them by eye.

Beside them, not attention, `input_gradient_maps`: how much the model's probability of each neuron's recorded
spikes moves with each pixel of the frames (squared gradient, summed over a patch). It asks whether the model
holds the receptive fields at all: if this map does not follow a field, no map read from attention can.
"""

from __future__ import annotations

import numpy as np
import torch

from rtdecode.core.normalisation import Normalisation
from rtdecode.core.window_data import WindowData
from rtdecode.training.attribution import gradient_weighted
from rtdecode.training.blocks import recording_attention
from rtdecode.training.data import to_torch
from rtdecode.training.model import Neuroformer

__all__ = ["input_gradient_maps", "stimulus_attention"]


@torch.no_grad()
def stimulus_attention(
    model: Neuroformer,
    data: WindowData,
    windows: np.ndarray,
    norm: Normalisation,
    batch_size: int = 32,
    method: str = "gradient",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron attention to the frame patches over `windows`, by `method` ("gradient" or "attention", above).

    Returns:
        maps (N, H / ph, W / pw) float64, each neuron's mean map per patch (with "attention", rows sum to 1 over
        the grid for a neuron with spikes), and counts (N,) int64, the predicted spikes each map averages over.
    """
    if method not in ("gradient", "attention"):
        raise ValueError(f"unknown stimulus map method {method!r}: use 'gradient' or 'attention'")
    if model.frame_encoder is None or not len(model.frame_cross):
        raise ValueError("the model takes no video (its config has [frames] enabled = false): no stimulus attention")
    model.eval()
    cfg = model.cfg
    pt, ph, pw = cfg.model.frame_patch
    grid = (cfg.frames.n_frames // pt, cfg.frames.height // ph, cfg.frames.width // pw)
    n = model.vocab.n_neurons
    total = np.zeros((n, grid[1] * grid[2]))
    count = np.zeros(n, np.int64)
    with recording_attention(model.frame_cross, keep_graph=method == "gradient") as blocks:
        for lo in range(0, windows.size, batch_size):
            batch = to_torch(data.batch(windows[lo : lo + batch_size], norm), "cpu")
            with torch.set_grad_enabled(method == "gradient"):
                h = model.forward_tokens(batch["ids"], batch["dts"], model.encode_context(batch))
                raw = [blk.attn.last_weights for blk in blocks]
                if method == "gradient":
                    raw = gradient_weighted(model, h, batch["ids"], raw)
            weights = torch.stack(raw).mean(dim=(0, 2))  # (B, T, P)
            w = weights.reshape(*weights.shape[:2], *grid).mean(dim=2).flatten(2).numpy()  # (B, T, H' * W')
            target = batch["ids"][:, 1:].numpy()  # position t predicts token t + 1
            b, t = np.nonzero(target < n)
            np.add.at(total, target[b, t], w[b, t])
            np.add.at(count, target[b, t], 1)
    maps = total / np.maximum(count, 1)[:, None]
    return maps.reshape(n, grid[1], grid[2]), count


def input_gradient_maps(
    model: Neuroformer,
    data: WindowData,
    windows: np.ndarray,
    norm: Normalisation,
    neurons: np.ndarray,
    per_neuron: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron of `neurons`, the squared gradient of the summed log-probability of its recorded spikes (the
    positions whose next token it is) with respect to the frames, over (up to `per_neuron`, evenly spaced) of
    `windows` in which it fires, summed over those windows, the frames and each patch's pixels.

    Returns:
        maps (K, H / ph, W / pw) float64 (zero for a neuron that fires in none of `windows`), and counts (K,)
        int64, the windows each map sums over.
    """
    if model.frame_encoder is None or not len(model.frame_cross):
        raise ValueError("the model takes no video (its config has [frames] enabled = false): no stimulus maps")
    model.eval()
    cfg = model.cfg
    _, ph, pw = cfg.model.frame_patch
    tokens = data.tokens
    where = np.repeat(np.arange(tokens.n_windows), np.diff(tokens.window_ptr))  # each token's window
    maps = np.zeros((neurons.size, cfg.frames.height // ph, cfg.frames.width // pw))
    counts = np.zeros(neurons.size, np.int64)
    for k, neuron in enumerate(neurons):
        fired = np.intersect1d(windows, where[tokens.neurons == neuron])
        if fired.size == 0:
            continue
        pick = fired[np.linspace(0, fired.size - 1, min(per_neuron, fired.size)).astype(np.int64)]
        batch = to_torch(data.batch(pick, norm), "cpu")
        frames = batch["frames"].float().requires_grad_(True)
        batch["frames"] = frames
        with torch.enable_grad():
            h = model.forward_tokens(batch["ids"], batch["dts"], model.encode_context(batch))
            logp = model.token_logits(h)[0].float().log_softmax(-1)[:, :-1, int(neuron)]
            objective = logp[batch["ids"][:, 1:] == int(neuron)].sum()
            (grad,) = torch.autograd.grad(objective, frames)
        energy = (grad.double() ** 2).sum(dim=(0, 1)).numpy()  # (H, W)
        maps[k] = energy.reshape(maps.shape[1], ph, maps.shape[2], pw).sum(axis=(1, 3))
        counts[k] = pick.size
    return maps, counts
