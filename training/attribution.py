"""Gradient-weighted attention (Chefer et al. 2021): which attention weights the model's next-spike predictions
rest on, not only where it looks.

Raw attention says where a position looks; a weight on a key that does not change the prediction (a key attended
by habit, or one carrying the same information as others) counts as much as one the prediction depends on.
Weighting each weight by the gradient of the window's next-spike log-likelihood with respect to it, positive part
only, keeps the weights that raise the probability of what was recorded. Shared by the stimulus maps (frame
cross-attention) and the connectivity readings (causal self-attention).
"""

from __future__ import annotations

import torch

from rtdecode.training.model import Neuroformer

__all__ = ["gradient_weighted"]


def gradient_weighted(
    model: Neuroformer, hidden: torch.Tensor, ids: torch.Tensor, weights: list[torch.Tensor]
) -> list[torch.Tensor]:
    """relu(weight x d(objective)/d(weight)) per block, detached; `weights` must be in the graph of `hidden` (record
    them with `recording_attention(..., keep_graph=True)`).

    The objective is the summed log-probability of the recorded next neurons of each window, so a position's
    gradient also carries, through the causal self-attention, its effect on later predictions in the window: a
    reading keyed by the predicted neuron is dominated by, not limited to, that neuron's own prediction.
    """
    n = model.vocab.n_neurons
    logp = model.token_logits(hidden)[0].float().log_softmax(-1)[:, :-1]  # (B, T - 1, V): position t predicts t + 1
    target = ids[:, 1:]
    spike = target < n
    objective = logp.gather(-1, target.clamp(max=logp.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)[spike].sum()
    grads = torch.autograd.grad(objective, weights)
    return [(w * g).clamp(min=0).detach() for w, g in zip(weights, grads, strict=True)]
