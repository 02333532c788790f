"""Autoregressive spike generation with a KV cache: one forward step per generated token, not per window.

The release re-ran the whole model for every sampled spike and recomputed history and frame keys each time
(the reference release's generator). Here the window's context is encoded once, the SOS token primes the cache, and
each step feeds one token. The token grammar (an ID is a neuron or EOS, never SOS/PAD; a time offset lies in the
window and never goes below the previous spike's) and the nucleus sampler are `rtdecode.runtime.sampling`'s, the
same numpy code the runtime's generator runs: each step's logits go to numpy for the pick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rtdecode.runtime.sampling import WindowSampler
from rtdecode.training.blocks import SelfBlock, span_mask
from rtdecode.training.model import Context, Neuroformer

__all__ = ["SamplingConfig", "TokenCache", "forward_cached", "generate_window"]


@dataclass(frozen=True)
class SamplingConfig:
    """temperature: softmax temperature (0 = greedy). top_p: nucleus mass kept (1 = all). seed: the sampler's
    numpy seed (None = fresh entropy). use_count: draw each window's spike count from the model's count head
    (when it has one) and generate exactly that many spikes; False = stop at a sampled EOS."""

    temperature: float = 1.0
    top_p: float = 0.95
    seed: int | None = None
    use_count: bool = True


@dataclass
class TokenCache:
    """Keys/values of the tokens each causal block has already seen (feature blocks, then fused blocks; each
    (B, H, length, hd), None before the first chunk), and how many tokens that is: the next token's position."""

    k: list[torch.Tensor | None] = field(default_factory=list)
    v: list[torch.Tensor | None] = field(default_factory=list)
    length: int = 0

    @classmethod
    def empty(cls, model: Neuroformer) -> TokenCache:
        n = len(model.feature) + len(model.fused)
        return cls([None] * n, [None] * n)


def forward_cached(
    model: Neuroformer, ids: torch.Tensor, dts: torch.Tensor, ctx: Context, cache: TokenCache
) -> torch.Tensor:
    """`Neuroformer.forward_tokens` for a chunk (B, t) that continues the tokens in `cache`, which it extends.

    The cache grows by concatenation: simple, and generation in PyTorch is not the serving path (the exported
    step graph writes into a fixed-size cache instead, export/forms.py). Returns the hidden states (B, t, D)."""

    def causal(i: int, blk: SelfBlock, x: torch.Tensor) -> torch.Tensor:
        h = blk.ln1(x)
        k, v = blk.attn.keys_values(h)  # (B, H, t, hd)
        past_k, past_v = cache.k[i], cache.v[i]
        if past_k is not None and past_v is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, H, M, hd)
        cache.k[i], cache.v[i] = k, v
        T, M = x.shape[1], k.shape[2]
        # query i (absolute position M - T + i) may see keys 0 .. M - T + i (the last `span` of them)
        keys = torch.arange(M, device=x.device)
        mask = span_mask(keys[M - T :], keys, blk.span)
        x = x + blk.drop(blk.attn(h, k, v, mask))
        return x + blk.mlp(blk.ln2(x))

    h = model.forward_tokens(ids, dts, ctx, cache.length, causal)
    cache.length += ids.shape[1]
    return h


@torch.no_grad()
def generate_window(
    model: Neuroformer, ctx: Context, sampling: SamplingConfig = SamplingConfig(), max_tokens: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Generate one window for each of the B contexts in `ctx`.

    Returns per window (neuron indices, time offsets in dt quanta), in token order. Generation stops at EOS (with
    a count head: after the count drawn from the context before the first spike, `SamplingConfig.use_count`) or
    when the window's spike slots (block_size - 2) are full.
    """
    limit = model.cfg.window.max_spikes if max_tokens is None else min(max_tokens, model.cfg.window.max_spikes)
    B = ctx.history[0].k.shape[0] if ctx.history else _batch_size(ctx)
    device = model.id_head.weight.device
    sampler = WindowSampler(
        model.vocab,
        model.cfg.window.bins_per_window,
        B,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=sampling.seed,
    )
    cache = TokenCache.empty(model)
    ids, dts = sampler.first_tokens()
    if sampling.use_count and ctx.count_log_rate is not None:
        sampler.set_counts(ctx.count_log_rate.float().cpu().numpy(), limit)
    for _ in range(limit):
        h = forward_cached(model, torch.from_numpy(ids).to(device), torch.from_numpy(dts).to(device), ctx, cache)
        id_logits, dt_logits = model.token_logits(h[:, -1])  # (B, id_size), (B, dt_size)
        ids, dts = sampler.step(id_logits.float().cpu().numpy(), dt_logits.float().cpu().numpy())
        if sampler.finished:
            break
    return sampler.windows()


def _batch_size(ctx: Context) -> Any:
    for mems in (ctx.frames, *ctx.behavior.values()):
        if mems:
            return mems[0].k.shape[0]
    raise ValueError("empty context: the model has no cross-attention blocks to take the batch size from")


@torch.no_grad()
def generate_session(
    model: Neuroformer,
    data: Any,
    windows: np.ndarray,
    norm: Any,
    *,
    history: str = "true",
    sampling: SamplingConfig = SamplingConfig(),
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Generate spikes for `windows` of a WindowData.

    history="true": each window is conditioned on the recorded previous window (windows run in parallel batches).
    history="generated": closed loop over consecutive windows; each window's history is built from the windows
    generated before it and the recorded spikes before the first window, with the same packing as the tokenizer
    (so the model never sees a real spike from after the first window's start).

    Returns spike times (s), neuron indices, and timing {"windows_per_s", "ms_per_window", "tokens"}.
    """
    import time

    from rtdecode.data.generated_history import ClosedLoopHistory
    from rtdecode.data.tokenizer import token_inputs
    from rtdecode.training.data import to_torch

    if history not in ("true", "generated"):
        raise ValueError(f"history must be 'true' or 'generated'; got {history!r}")
    cfg = model.cfg.window
    device = model.id_head.weight.device
    starts = data.tokens.window_starts()
    times: list[np.ndarray] = []
    neurons: list[np.ndarray] = []
    n_tokens = 0
    t0 = time.perf_counter()
    model.eval()
    if history == "true":
        for lo in range(0, windows.size, batch_size):
            w = windows[lo : lo + batch_size]
            batch = to_torch(data.batch(w, norm), device)
            ids, offs = generate_window(model, model.encode_context(batch), sampling)
            for win, i, o in zip(w, ids, offs):
                times.append(starts[win] + (o + 0.5) * cfg.dt)
                neurons.append(i)
                n_tokens += i.size
    elif windows.size:
        loop = ClosedLoopHistory(data.tokens, int(windows[0]))
        for win in windows:
            batch = data.batch(np.array([win]), norm, trim=False)
            batch.update(token_inputs(None, loop.tokens(int(win)), trim=False))
            ids, offs = generate_window(model, model.encode_context(to_torch(batch, device)), sampling)
            times.append(starts[win] + (offs[0] + 0.5) * cfg.dt)
            neurons.append(ids[0])
            n_tokens += ids[0].size
            loop.add(int(win), ids[0], offs[0])
    elapsed = time.perf_counter() - t0
    t = np.concatenate(times) if times else np.zeros(0)
    n = np.concatenate(neurons) if neurons else np.zeros(0, np.int64)
    order = np.argsort(t, kind="stable")
    timing = {
        "windows_per_s": windows.size / elapsed,
        "ms_per_window": 1e3 * elapsed / max(windows.size, 1),
        "tokens": float(n_tokens),
    }
    return t[order], n[order], timing
