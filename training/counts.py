"""A window's spike count, which attention cannot see: the history's counts as a token, and the count head.

Attention averages over the tokens it reads (its weights sum to one whatever their number), so a model that only
attends to the previous window's spikes learns which neurons fired but hardly how many. Two parts restore it:
* `HistoryCountEncoder`: one more history token made from the counts per window-length stretch of the history;
* `CountHead`: the window's expected spike count from its context, which generation draws before the first
  spike (`rtdecode.runtime.sampling.WindowSampler.set_counts`), so a generated window's size follows the recent
  population rate, the frames and the behavior instead of wherever EOS wins a draw. It starts at the Poisson GLM
  of the training windows' counts on their history counts (`init_count_head`), and its intercept is refitted
  whenever weights are saved (`refit_count_intercept`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "CountHead",
    "HistoryCountEncoder",
    "behavior_count_features",
    "history_log_counts",
    "history_stretches",
    "init_count_head",
    "refit_count_intercept",
]


class HistoryCountEncoder(nn.Module):
    """History spikes -> one token (B, 1, D): log1p of the spike count in each window-length stretch of the history
    (oldest first; the last may be shorter), through an MLP. The population rate just before a window, which
    attention over the history's tokens cannot read (its weights sum to one whatever their number)."""

    def __init__(self, d: int, n_stretches: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_stretches, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, log_counts: torch.Tensor) -> torch.Tensor:
        """(B, K) `history_log_counts` -> the history count token (B, 1, D)."""
        return self.mlp(log_counts).unsqueeze(1)


def history_stretches(bins_per_window: int, prev_bins: int) -> int:
    """How many window-length stretches the history is counted in (the oldest may be shorter)."""
    return max(1, -(-prev_bins // bins_per_window))


def history_log_counts(
    prev_dts: torch.Tensor, valid: torch.Tensor, bins_per_window: int, prev_bins: int
) -> torch.Tensor:
    """prev_dts (B, M) history offsets in quanta from the history's start, valid (B, M) bool -> (B, K) log1p of the
    spike count of each window-length stretch, oldest first."""
    stretch = prev_dts // bins_per_window  # (B, M)
    which = torch.arange(history_stretches(bins_per_window, prev_bins), device=prev_dts.device)
    hits = (stretch.unsqueeze(-1) == which) & valid.unsqueeze(-1)  # (B, M, K)
    return torch.log1p(hits.to(torch.float32).sum(dim=1))


class CountHead(nn.Module):
    """The window's expected spike count from its context, before any of its spikes: log1p history counts per
    window-length stretch (the recent population rate) and each behavior input's recent mean value and its square
    (`behavior_count_features`) on a linear path, so the GLM's predictor is there from the first step; the mean
    frame token and each behavior input's mean token, with the history counts, through an MLP. Poisson log-rate.

    It reads the context, not a token's state: what sets a window's size is known when the window opens, and the
    direct path learns in a few hundred steps where the same signal routed through attention to SOS did not. The
    behavior terms are on the linear path because the history counts alone explain the window count in training,
    so an MLP left to find the behavior did not (its prediction with the history held constant: r -0.08 with the
    count), and a closed loop, whose history is its own, then lost the behavior's pull on the population rate."""

    def __init__(self, d: int, n_stretches: int, n_pooled: int, n_behavior: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_stretches + 2 * n_behavior, 1)
        self.mlp = nn.Sequential(nn.Linear(n_stretches + n_pooled * d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(
        self, log_counts: torch.Tensor, pooled: list[torch.Tensor], behavior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log_counts (B, K), pooled [(B, D)], behavior (B, 2 x inputs) `behavior_count_features` -> (B,)."""
        x = torch.cat([log_counts, *pooled], dim=-1)
        return (self.linear(self.linear_inputs(log_counts, behavior)) + self.mlp(x)).squeeze(-1)

    @staticmethod
    def linear_inputs(log_counts: torch.Tensor, behavior: torch.Tensor | None) -> torch.Tensor:
        """The linear path's features in the order its weights expect (history counts, then behavior terms): one
        place, shared by `forward` and the GLM start (`init_count_head`)."""
        return log_counts if behavior is None else torch.cat([log_counts, behavior], dim=-1)

    @torch.no_grad()
    def init_glm(self, features: torch.Tensor, counts: torch.Tensor, ridge: float = 1e-3, iters: int = 25) -> None:
        """Start the linear path at the Poisson GLM of the training windows' counts on its `features` (history
        counts, then the behavior terms; Newton's method, a small ridge on the weights), the MLP at zero: training
        starts where the recent population rate and the behavior alone get it and spends its steps on what the
        frames and the rest add."""
        X = torch.cat([features.double(), torch.ones(len(counts), 1, dtype=torch.float64)], 1)  # (n, F + 1)
        y = counts.double()
        beta = torch.zeros(X.shape[1], dtype=torch.float64)
        beta[-1] = math.log(max(float(y.mean()), 0.5))
        penalty = torch.full((X.shape[1],), ridge * len(y), dtype=torch.float64)
        penalty[-1] = 0.0
        for _ in range(iters):
            rate = (X @ beta).clamp(max=30.0).exp()
            grad = X.T @ (rate - y) + penalty * beta
            hess = (X * rate[:, None]).T @ X + torch.diag(penalty)
            beta = beta - torch.linalg.solve(hess, grad)
        self.linear.weight.copy_(beta[:-1].view(1, -1).float())
        self.linear.bias.fill_(float(beta[-1]))
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)


def behavior_count_features(batch: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor | None:
    """(B, 2 x len(names)): each behavior input's mean normalised value over its valid samples in the input window
    (0, the training mean, where none is valid) and that mean squared (a tuning curve's bend: neurons that prefer
    the middle of a range, as eye position does, move the population rate both ways). None without inputs."""
    if not names:
        return None
    cols = []
    for name in names:
        ok = batch[f"in_{name}_valid"].to(torch.float32)
        mean = (batch[f"in_{name}"] * ok).sum(1) / ok.sum(1).clamp_min(1.0)
        cols += [mean, mean * mean]
    return torch.stack(cols, dim=-1)


def init_count_head(model: Any, data: Any, windows: np.ndarray, norm: Any, seed: int) -> None:
    """`model`'s count head from a Poisson GLM on (up to 8192 of) the training `windows`' history counts and
    behavior terms."""
    from rtdecode.training.data import to_torch

    head = model.count_head
    w = model.cfg.window
    names = [b.name for b in model.cfg.inputs]
    pick = windows if windows.size <= 8192 else np.sort(np.random.default_rng(seed).choice(windows, 8192, False))
    feats, counts = [], []
    for lo in range(0, pick.size, 512):
        batch = to_torch(data.batch(pick[lo : lo + 512], norm), "cpu")
        valid = torch.arange(batch["prev_ids"].shape[1])[None, :] < batch["prev_lengths"][:, None]
        history = history_log_counts(batch["prev_dts"], valid, w.bins_per_window, w.prev_bins)
        feats.append(CountHead.linear_inputs(history, behavior_count_features(batch, names)))
        counts.append((batch["lengths"] - 2).clamp_min(0))
    head.init_glm(torch.cat(feats), torch.cat(counts))


@torch.no_grad()
def refit_count_intercept(
    model: Any, data: Any, windows: np.ndarray, norm: Any, device: Any, limit: int = 1024
) -> float:
    """Set the count head's intercept to its Poisson maximum-likelihood value given the rest of the model: the one
    at which the expected counts of (up to `limit` of) the training `windows`, in eval mode, sum to their counts.
    Returns the shift of the log-rate.

    Why: trained with dropout in the encoders it reads and with weight decay, the head ends some 3-11% off the mean
    count at eval time (measured on the demo's model). Closed-loop generation feeds each generated window back as
    history, so that bias compounds: a loop that starts 10% low settles some 30% below the recording's rate."""
    from rtdecode.training.data import to_torch

    head = model.count_head
    was_training = model.training
    model.eval()
    pick = windows if windows.size <= limit else windows[np.linspace(0, windows.size - 1, limit).astype(np.int64)]
    expected = observed = 0.0
    for lo in range(0, pick.size, 256):
        batch = to_torch(data.batch(pick[lo : lo + 256], norm), device)
        expected += float(model.encode_context(batch).count_log_rate.double().exp().sum())
        observed += float((batch["lengths"] - 2).clamp_min(0).sum())
    model.train(was_training)
    if expected <= 0.0 or observed <= 0.0:
        return 0.0
    shift = math.log(observed / expected)
    head.linear.bias.add_(shift)
    return shift
