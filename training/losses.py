"""Training objectives: next-token cross-entropies, behavior losses, symmetric InfoNCE.

Behavior: MSE on z-scored regression targets, cross-entropy on class bins, and for circular targets (radians)
1 - cos(angle error) of the head's (cos, sin) vector (`circular_loss`). NaN targets are masked out.

Window spike count (`model.count_head`): Poisson negative log-likelihood of the count of spikes in the window
(its length minus SOS and EOS), as half the deviance (0 when the expected count equals the count), divided by
the batch's mean count so its gradient is O(1) at any rate.

Targets are the input tokens shifted left by one; the last position's target is PAD. PAD targets are ignored, so
a window contributes exactly (its length - 1) predictions: the spikes after SOS, then EOS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rtdecode.core.config import RunConfig
from rtdecode.data.tokenizer import Vocab
from rtdecode.training.model import Outputs

__all__ = ["shifted_targets", "compute_losses", "count_loss", "info_nce", "circular_loss"]


def shifted_targets(tokens: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, T) -> (B, T): position i's target is token i + 1; the last position's target is PAD."""
    return torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], pad)], dim=1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric CLIP loss between L2-normalised (B, d) features; matching rows are the positives."""
    logits = a @ b.t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def circular_loss(pred: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(predicted angle - target angle) over finite targets; pred (B, 2) = an unnormalised
    (cos, sin), angle (B,) in radians (any turn: only its cos and sin are used).

    The prediction is normalised first, so this equals half the squared distance between the predicted and the
    true unit vectors: MSE on the unit vector, but blind to the vector's length. Plain MSE against (cos, sin)
    would also pull the length to 1, a second objective the decoded angle (atan2) never uses; this loss spends
    every gradient on the angle, is bounded (0..2, so one wrong window cannot dominate a batch) and has no seam
    at +-pi."""
    ok = torch.isfinite(angle)
    if not ok.any():
        return pred.sum() * 0.0
    unit = F.normalize(pred[ok], dim=-1, eps=1e-6)
    a = angle[ok]
    return (1.0 - (unit[:, 0] * torch.cos(a) + unit[:, 1] * torch.sin(a))).mean()


def count_loss(log_rate: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Poisson NLL of each window's spike count (lengths - 2: SOS and EOS are not spikes) under exp(log_rate), as
    half the deviance, over the batch's mean count."""
    count = (lengths - 2).clamp_min(0).float()
    rate = log_rate.float().exp()
    # half the Poisson deviance: the NLL less its value at a perfect rate, so 0 at best and never negative
    deviance = rate - count - count * log_rate.float() + torch.xlogy(count, count)
    return deviance.mean() / count.mean().clamp_min(1.0)


def compute_losses(
    out: Outputs, batch: dict[str, torch.Tensor], cfg: RunConfig, vocab: Vocab
) -> dict[str, torch.Tensor]:
    """Every loss term (unweighted) and 'total' (weighted as the config says)."""
    t = cfg.train
    id_tgt = shifted_targets(batch["ids"], vocab.id_pad)
    dt_tgt = shifted_targets(batch["dts"], vocab.dt_pad)
    losses = {
        "id": F.cross_entropy(out.id_logits.flatten(0, 1).float(), id_tgt.flatten(), ignore_index=vocab.id_pad),
        "dt": F.cross_entropy(out.dt_logits.flatten(0, 1).float(), dt_tgt.flatten(), ignore_index=vocab.dt_pad),
    }
    total = t.id_weight * losses["id"] + t.dt_weight * losses["dt"]
    if out.count_log_rate is not None:
        losses["count"] = count_loss(out.count_log_rate, batch["lengths"])
        total = total + t.count_weight * losses["count"]
    for spec in cfg.targets:
        pred = out.behavior[spec.name].float()
        if spec.kind == "regression":
            y = batch[f"y_{spec.name}"]
            ok = torch.isfinite(y)
            loss = F.mse_loss(pred[ok], y[ok]) if ok.any() else pred.sum() * 0.0
        elif spec.kind == "circular":
            loss = circular_loss(pred, batch[f"y_{spec.name}"].float())  # radians: its normalisation is (0, 1)
        else:
            c = batch[f"c_{spec.name}"]
            loss = F.cross_entropy(pred, c, ignore_index=-100) if (c >= 0).any() else pred.sum() * 0.0
        losses[f"behavior_{spec.name}"] = loss
        total = total + spec.weight * loss
    if cfg.contrastive.enabled and out.contrastive and out.pooled.shape[0] > 1:
        con = cfg.contrastive
        terms = [info_nce(out.contrastive[a], out.contrastive[b], con.temperature) for a, b in con.pairs]
        losses["contrastive"] = torch.stack(terms).mean()
        total = total + con.weight * losses["contrastive"]
    losses["total"] = total
    return losses
