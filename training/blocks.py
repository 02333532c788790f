"""The transformer's building blocks: multi-head attention, the MLP, causal/bidirectional self-attention blocks
and cross-attention blocks over a memory (pre-norm, as in GPT-2 and nanoGPT). `rtdecode.training.model` stacks them; `rtdecode.export.forms` runs the same
weights in the exported graphs' forms.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Attention", "CrossBlock", "CrossMemory", "MLP", "SelfBlock", "recording_attention", "span_mask"]


def span_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, span: int) -> torch.Tensor:
    """(Tq, Tk) bool, True = may attend: causal, and (span > 0) at most `span` - 1 positions back.

    Positions are absolute token positions in the window, so one rule serves whole windows (training), a cache
    of earlier tokens (generation) and a graph given both."""
    back = query_pos[:, None] - key_pos[None, :]
    ok = back >= 0
    return ok & (back < span) if span > 0 else ok


# ---------------------------------------------------------------------------------------------------------------
# attention and blocks
# ---------------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head attention whose keys/values can be computed separately (cross-attention memories, KV caches).

    `record` switches on explicit softmax so `last_weights` (B, H, Tq, Tk) can be read for connectivity analysis;
    off (the default) it runs F.scaled_dot_product_attention. With `keep_graph` too, `last_weights` stays in the
    autograd graph, so an analysis can take gradients with respect to the weights (gradient-weighted maps).
    """

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d // n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.proj.residual = True  # type: ignore[attr-defined]  # scaled init, see Neuroformer._init
        self.dropout = dropout
        self.record = False
        self.keep_graph = False
        self.last_weights: torch.Tensor | None = None

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, D) -> k, v each (B, H, M, hd)."""
        B, M, _ = x.shape
        kv = self.kv(x).view(B, M, 2, self.n_heads, self.head_dim)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """x (B, T, D) queries; k, v (B, H, M, hd); mask broadcastable to (B, H, T, M), True = may attend.

        `causal` (queries and keys are the same T tokens, no `mask`): query i sees keys 0..i. Given as a flag, not
        a mask, so the fused kernel skips the masked half instead of computing and discarding it."""
        B, T, D = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        p = self.dropout if self.training else 0.0
        if self.record:
            if causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            w = scores.softmax(dim=-1)
            self.last_weights = w if self.keep_graph else w.detach()
            y = F.dropout(w, p) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, d: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d, ratio * d)
        self.proj = nn.Linear(ratio * d, d)
        self.proj.residual = True  # type: ignore[attr-defined]
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class SelfBlock(nn.Module):
    """Pre-LN self-attention + MLP, causal (token stacks) or not (frame encoder); a causal block with `span` > 0
    reads only the last `span` tokens (see `span_mask`)."""

    def __init__(
        self,
        d: int,
        n_heads: int,
        dropout: float,
        mlp_ratio: int,
        causal: bool,
        attn_dropout: float | None = None,
        span: int = 0,
    ) -> None:
        super().__init__()
        self.causal, self.span = causal, span
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, n_heads, dropout if attn_dropout is None else attn_dropout)
        self.mlp = MLP(d, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        k, v = self.attn.keys_values(h)
        if self.causal and self.span > 0:
            pos = torch.arange(x.shape[1], device=x.device)
            x = x + self.drop(self.attn(h, k, v, mask=span_mask(pos, pos, self.span)))
        else:
            x = x + self.drop(self.attn(h, k, v, causal=self.causal))
        return x + self.mlp(self.ln2(x))


class CrossBlock(nn.Module):
    """Pre-LN cross-attention to a memory whose keys/values come precomputed (see `memory`), + MLP."""

    def __init__(self, d: int, n_heads: int, dropout: float, mlp_ratio: int, attn_dropout: float | None = None) -> None:
        super().__init__()
        self.ln_q, self.ln_mem, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, n_heads, dropout if attn_dropout is None else attn_dropout)
        self.mlp = MLP(d, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def memory(self, mem: torch.Tensor, valid: torch.Tensor | None) -> CrossMemory:
        """mem (B, M, D), valid (B, M) bool or None -> keys/values and mask, computed once per window."""
        k, v = self.attn.keys_values(self.ln_mem(mem))
        return CrossMemory(k, v, None if valid is None else valid[:, None, None, :])

    def forward(self, x: torch.Tensor, memory: CrossMemory) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_q(x), memory.k, memory.v, memory.mask))
        return x + self.mlp(self.ln2(x))


@dataclass
class CrossMemory:
    k: torch.Tensor  # (B, H, M, hd)
    v: torch.Tensor
    mask: torch.Tensor | None  # (B, 1, 1, M) True = valid


@contextlib.contextmanager
def recording_attention(
    blocks: Iterable[SelfBlock | CrossBlock], keep_graph: bool = False
) -> Iterator[list[SelfBlock | CrossBlock]]:
    """Within the block, each of `blocks` keeps its last attention weights (`attn.last_weights`): the explicit
    softmax the analyses read (connectivity, stimulus maps); back to the fused kernel afterwards. `keep_graph`:
    the weights stay differentiable (see `Attention`)."""
    blocks = list(blocks)
    for blk in blocks:
        blk.attn.record, blk.attn.keep_graph = True, keep_graph
    try:
        yield blocks
    finally:
        for blk in blocks:
            blk.attn.record, blk.attn.keep_graph = False, False
