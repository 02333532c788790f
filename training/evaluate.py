"""Held-out evaluation of a model: teacher-forced token metrics and behavior decoding, in the units of the data.

Per target: regression r and R^2; classification accuracy; circular (radians) `<name>_r` (`circular_r`: the mean
Pearson r of cos and sin, so it joins `behavior_r_mean`) and `<name>_mae_deg` (mean absolute angular error, deg).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rtdecode.core.metrics import angle_of, angular_error_deg, circular_r, pearson_r, r_squared, set_f1
from rtdecode.core.normalisation import Normalisation
from rtdecode.core.window_data import WindowData
from rtdecode.training.data import to_torch
from rtdecode.training.losses import compute_losses, shifted_targets
from rtdecode.training.model import Neuroformer

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: Neuroformer,
    data: WindowData,
    windows: np.ndarray,
    norm: Normalisation,
    batch_size: int = 64,
    device: Any = "cpu",
) -> dict[str, float]:
    """Losses, next-ID accuracy, per-window set precision/recall/F1 of predicted IDs, behavior r and R^2.

    Set F1, teacher-forced, two ways (both against the neurons that actually fired):
    * `set_f1` uses the oracle spike count: for a window with n spikes, the n neurons with the most predicted
      probability summed over the window's spike positions;
    * `set_f1_threshold` does not: the neurons whose predicted probability summed over those positions (their
      expected number of spikes) is at least 0.5.
    The per-neuron-rate baseline (`rtdecode.core.metrics.rate_baseline_f1`) predicts both ways from training
    rates, so each pair compares like for like.
    """
    was_training = model.training
    model.eval()
    vocab, cfg = model.vocab, model.cfg
    sums: dict[str, float] = {}
    n_batches = 0
    correct = total = 0
    pred_sets: list[set[int]] = []
    true_sets: list[set[int]] = []
    threshold_sets: list[set[int]] = []
    decoded: dict[str, list[np.ndarray]] = {b.name: [] for b in cfg.targets}
    for lo in range(0, windows.size, batch_size):
        w = windows[lo : lo + batch_size]
        batch = to_torch(data.batch(w, norm), device)
        out = model(batch)
        for k, v in compute_losses(out, batch, cfg, vocab).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_batches += 1
        tgt = shifted_targets(batch["ids"], vocab.id_pad)
        pred = out.id_logits.argmax(-1)
        ok = tgt != vocab.id_pad
        correct += int((pred[ok] == tgt[ok]).sum())
        total += int(ok.sum())
        lengths = batch["lengths"]
        spike_pos = torch.arange(tgt.shape[1], device=tgt.device)[None, :] < (lengths - 2)[:, None]  # predicts a spike
        probs = out.id_logits.float().softmax(-1)[..., : vocab.n_neurons]  # (B, T, N)
        mass = (probs * spike_pos.unsqueeze(-1)).sum(1).cpu().numpy()  # (B, N)
        ranking = np.argsort(-mass, axis=1, kind="stable")
        ids_np = batch["ids"].cpu().numpy()
        for row, length in enumerate(lengths.cpu().numpy()):
            true = ids_np[row, 1 : length - 1]
            pred_sets.append(set(ranking[row, : true.size].tolist()))
            threshold_sets.append(set(np.flatnonzero(mass[row] >= 0.5).tolist()))
            true_sets.append(set(true.tolist()))
        for spec in cfg.targets:
            decoded[spec.name].append(_to_units(out.behavior[spec.name], spec, norm))
    metrics = {f"loss_{k}": v / max(n_batches, 1) for k, v in sums.items()}
    metrics["id_accuracy"] = correct / max(total, 1)
    metrics.update({f"set_{k}": v for k, v in set_f1(pred_sets, true_sets).items()})
    metrics.update({f"set_{k}_threshold": v for k, v in set_f1(threshold_sets, true_sets).items()})
    rs = []
    for spec in cfg.targets:
        y = data.targets[spec.name][windows]
        p = np.concatenate(decoded[spec.name]) if decoded[spec.name] else np.zeros(0)
        if spec.kind == "regression":
            metrics[f"{spec.name}_r"] = pearson_r(y, p)
            metrics[f"{spec.name}_r2"] = r_squared(y, p)
            rs.append(metrics[f"{spec.name}_r"])
        elif spec.kind == "circular":
            metrics[f"{spec.name}_r"] = circular_r(y, p)
            metrics[f"{spec.name}_mae_deg"] = angular_error_deg(y, p)
            rs.append(metrics[f"{spec.name}_r"])
        else:
            cls = np.digitize(y, spec.bins)
            ok = np.isfinite(y)
            metrics[f"{spec.name}_accuracy"] = float((p[ok] == cls[ok]).mean()) if ok.any() else float("nan")
    if rs:
        metrics["behavior_r_mean"] = float(np.nanmean(rs))
    model.train(was_training)
    return metrics


def _to_units(pred: torch.Tensor, spec: Any, norm: Normalisation) -> np.ndarray:
    """Regression: z-score -> the variable's units. Classification: the predicted class index. Circular: the
    angle of the predicted (cos, sin), radians in (-pi, pi] (as `rtdecode.runtime.Decoder.to_units`)."""
    if spec.kind == "regression":
        mean, std = norm.behavior[spec.name]
        return pred.float().cpu().numpy() * std + mean
    if spec.kind == "circular":
        y = pred.float().cpu().numpy()
        return angle_of(y[:, 0], y[:, 1])
    return pred.argmax(-1).cpu().numpy()
