"""The forms of the model's token path that only the exported graphs run.

Training runs `Neuroformer.forward_tokens` over whole windows with `F.scaled_dot_product_attention` and boolean
masks. An ONNX graph wants other shapes of the same math, so they live here, next to the graphs that use them,
and the model file stays the model as trained:

* `forward_tokens_fixed` (the `step` graph): a caller-owned cache of fixed size and a mask of its filled slots,
  so a step neither concatenates onto a growing cache nor slices by a data-dependent length. It runs through
  `forward_tokens`' causal-block hook.
* `forward_tokens_past` (the `stream` graph): only the filled part of the cache, an additive mask built by the
  caller, tokens kept as one flat (B*t, D) matrix and attention spelled out as matmul + softmax (`attend`).

Every function reads the model's own modules and weights (no copies), so the graphs compute what training
computes; tests/test_model.py checks the stream form against the plain forward, the export parity check the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rtdecode.training.blocks import Attention, CrossBlock, CrossMemory, SelfBlock, span_mask
from rtdecode.training.model import Context, Neuroformer

__all__ = ["forward_tokens_fixed", "forward_tokens_past"]


# ---------------------------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------------------------
def attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`Attention.forward` (eval mode) for the stream graph: q (B, H, T, hd) projected queries, k/v (B, H, M, hd),
    `bias` an additive mask (0 = may attend, -inf = may not); returns flat tokens (B*T, D) after `proj`.

    Attention is spelled out as matmul + softmax: exported, that is a handful of ONNX nodes where
    scaled_dot_product_attention with a boolean mask becomes dozens (mask expansion, NaN guards); and the
    tokens stay one flat (B*T, D) matrix, so every projection is a single Gemm. The stream graph runs at every
    window close (docs/performance.md). Same result to float rounding; rows must keep one finite entry."""
    B, H, T, hd = q.shape
    w = ((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd)) + bias).softmax(dim=-1)
    return attn.proj((w @ v).transpose(1, 2).reshape(B * T, H * hd))  # (B, H, T, hd) -> (B*T, D)


def split_heads(attn: Attention, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Flat projected tokens (B*T, D) -> (B, H, T, hd)."""
    return x.view(batch, -1, attn.n_heads, attn.head_dim).transpose(1, 2)


def queries_keys_values(attn: Attention, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
    """Self-attention's projections of flat tokens x (B*T, D): three tensors q, k, v, each (B, H, T, hd).

    One matmul, then one reshape, one transpose and one split for all three (exported: 4 nodes, not the 10 of
    splitting q from k/v first), since the fused weight's rows are q's heads, then k's, then v's."""
    H, hd = attn.n_heads, attn.head_dim
    qkv = F.linear(x, torch.cat([attn.q.weight, attn.kv.weight]), torch.cat([attn.q.bias, attn.kv.bias]))
    return qkv.view(batch, -1, 3 * H, hd).transpose(1, 2).split(H, dim=1)  # (B, 3H, T, hd) -> 3 x (B, H, T, hd)


# ---------------------------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------------------------
def block_fixed(
    blk: SelfBlock, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk (B, t, D) at positions pos .. pos + t - 1 through a causal block against a fixed-size cache
    (B, H, C, hd) whose slots 0 .. pos - 1 are filled (slot = position).

    The export-friendly twin of `SelfBlock.forward` with a `LayerCache`: no concatenation onto a growing cache and
    no data-dependent slicing; returns (x, new_k, new_v) and the caller writes new_k/new_v into its buffer."""
    h = blk.ln1(x)
    k, v = blk.attn.keys_values(h)  # (B, H, t, hd)
    t = x.shape[1]
    keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    slots = torch.arange(past_k.shape[2], device=x.device)
    queries = pos + torch.arange(t, device=x.device)
    past = span_mask(queries, slots, blk.span) & (slots < pos)[None, :]  # filled slots within the span
    mask = torch.cat([past, span_mask(queries, queries, blk.span)], dim=1)  # (t, C + t)
    x = x + blk.drop(blk.attn(h, keys, values, mask))
    return x + blk.mlp(blk.ln2(x)), k, v


def block_past(
    blk: SelfBlock, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of flat tokens (B*t, D) through a causal block after the filled part of a cache (B, H, P, hd);
    `bias` (t, P + t) is the additive mask (causal among the new tokens). The stream graph's block: it reads only
    the P filled slots, not the whole fixed-size cache, and builds no mask. Returns (x, new_k, new_v)."""
    q, k, v = queries_keys_values(blk.attn, blk.ln1(x), past_k.shape[0])
    x = x + blk.drop(attend(blk.attn, q, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2), bias))
    return x + blk.mlp(blk.ln2(x)), k, v


def cross_additive(blk: CrossBlock, x: torch.Tensor, memory: CrossMemory) -> torch.Tensor:
    """`CrossBlock.forward` on flat tokens (B*t, D) through `attend` (the stream graph's form; see there)."""
    bias = (
        torch.zeros((), dtype=x.dtype)
        if memory.mask is None
        else torch.where(memory.mask, 0.0, float("-inf")).to(x.dtype)
    )
    q = split_heads(blk.attn, blk.attn.q(blk.ln_q(x)), memory.k.shape[0])
    x = x + blk.drop(attend(blk.attn, q, memory.k, memory.v, bias))
    return x + blk.mlp(blk.ln2(x))


# ---------------------------------------------------------------------------------------------------------------
# the token path
# ---------------------------------------------------------------------------------------------------------------
def forward_tokens_fixed(
    model: Neuroformer,
    ids: torch.Tensor,
    dts: torch.Tensor,
    ctx: Context,
    past_k: torch.Tensor,
    past_v: torch.Tensor,
    pos: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`Neuroformer.forward_tokens` against a caller-owned fixed-size KV cache (what the exported step graph runs).

    Args:
        ids, dts: (B, t) new tokens, at absolute positions pos .. pos + t - 1.
        past_k, past_v: (L, B, H, C, hd) cache of every causal block (feature blocks, then fused blocks);
            slots 0 .. pos - 1 are filled, the rest are ignored.
        pos: () int64, tokens already in the cache.
    Returns:
        hidden (B, t, D) after the final norm, new_k and new_v (L, B, H, t, hd) for slots pos .. pos + t - 1.
    """
    new_k, new_v = [], []

    def causal(i: int, blk: SelfBlock, x: torch.Tensor) -> torch.Tensor:
        x, k, v = block_fixed(blk, x, past_k[i], past_v[i], pos)
        new_k.append(k)
        new_v.append(v)
        return x

    h = model.forward_tokens(ids, dts, ctx, pos, causal)
    return h, torch.stack(new_k), torch.stack(new_v)


def forward_tokens_past(
    model: Neuroformer,
    ids: torch.Tensor,
    dts: torch.Tensor,
    ctx: Context,
    past_k: Sequence[torch.Tensor],
    past_v: Sequence[torch.Tensor],
    pos: torch.Tensor,
    bias: torch.Tensor,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """`forward_tokens_fixed` against only the filled part of the cache, on flat tokens (what the exported stream
    graph runs). The stacks of `Neuroformer.forward_tokens` in the same order, but the tokens stay one (B*t, D)
    matrix from the embedding to the final norm (see `attend`), so it cannot go through `forward_tokens`' hook.

    Args:
        ids, dts: (B, t) new tokens, at absolute positions pos .. pos + t - 1.
        past_k, past_v: per causal block (feature blocks, then fused blocks), (B, H, P, hd): the cached keys
            and values the new tokens may attend to (with `model.attention_span`, only the last slots: the
            caller's `bias` says which each token reads).
        pos: () int64, the new tokens' first position.
        bias: (t, P + t) additive mask: 0 where query i may attend key j, -inf elsewhere (causal among the new
            tokens; a caller with no past passes one slot masked out, since a graph input cannot be empty).
    Returns:
        hidden (B, t, D) after the final norm, new_k and new_v: per causal block, (B, H, t, hd) (not stacked:
        exported, stacking adds nodes the close would run for keys/values it throws away).
    """
    m = model
    B, t = ids.shape
    positions = pos + torch.arange(t, device=ids.device)
    x = m.drop(m.id_emb(ids) + m.dt_emb(dts) + m.pos_emb(positions)).reshape(B * t, -1)  # (B, t, D) -> (B*t, D)
    new_k, new_v = [], []
    for i, blk in enumerate(list(m.feature) + list(m.fused)):
        if i == len(m.feature):
            x = _cross_additive_stacks(m, x, ctx)
        x, k, v = block_past(blk, x, past_k[i], past_v[i], bias)
        new_k.append(k)
        new_v.append(v)
    if len(m.fused) == 0:
        x = _cross_additive_stacks(m, x, ctx)
    return m.ln_f(x).view(B, t, -1), new_k, new_v  # (B*t, D) -> (B, t, D)


def _cross_additive_stacks(model: Neuroformer, x: torch.Tensor, ctx: Context) -> torch.Tensor:
    for blk, mem in model.cross_pairs(ctx):
        x = cross_additive(blk, x, mem)
    return x
