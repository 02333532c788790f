"""The Neuroformer model, top-down: config -> embeddings -> blocks -> stacks -> heads.

Data flow for one window (as in the Neuroformer reference), B windows at a time, T token slots, D = d_model:

    current tokens (B, T) --embed--> feature encoder (causal self-attention; over the last `attention_span` tokens)
        -> cross-attention to the previous window's tokens (history; or, with `history_latents`, to that many
           learned summaries of them, made once per window), plus one token of its spike counts
           (`history_count_token`: attention averages, so it cannot count the tokens it reads)
        -> cross-attention to frame patch tokens (frame encoder: Conv3d patches + position code + self-attention)
        -> cross-attention to each input behavior group
        -> fused causal self-attention -> next-ID and next-time-offset logits at every position
                                       -> masked mean pool over valid tokens -> behavior heads, contrastive feature
    context (history spike counts, frame feature, behavior inputs) -> the window's expected spike count

This file is the model as trained. Two choices let generation and serving reuse it unchanged:
* The per-window context (history, frames, behavior inputs) is turned into every cross-attention block's keys
  and values once, by `encode_context`; the token path only reads them.
* `forward_tokens` takes a chunk of tokens at any start position and a hook that runs each causal block against
  a KV cache, so the cache forms live next to their users: the generator's growing cache in training/generate.py,
  the exported graphs' fixed-size cache and flat-token form in export/forms.py.

Padding: PAD tokens always follow a window's valid tokens, so causal attention alone keeps valid queries off PAD
keys; memories (history, behavior inputs) carry a key-padding mask plus one learned "null" key that is always
valid, so an empty history never yields an all-masked softmax. Pooling averages valid positions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtdecode.core.config import RunConfig
from rtdecode.data.tokenizer import Vocab
from rtdecode.training.blocks import CrossBlock, CrossMemory, SelfBlock
from rtdecode.training.counts import (
    CountHead,
    HistoryCountEncoder,
    behavior_count_features,
    history_log_counts,
    history_stretches,
)

__all__ = ["Neuroformer", "Context", "CausalBlockForm", "Outputs"]

# how a caller runs causal block i on x (B, t, D) when its tokens continue a cached sequence (`forward_tokens`)
CausalBlockForm = Callable[[int, "SelfBlock", torch.Tensor], torch.Tensor]


@dataclass
class Context:
    """The per-window context, encoded once: cross-attention memories in block order + pooled features."""

    history: list[CrossMemory]
    frames: list[CrossMemory]
    behavior: dict[str, list[CrossMemory]]
    frame_feature: torch.Tensor | None = None  # (B, D) mean of frame tokens, for the contrastive loss
    count_log_rate: torch.Tensor | None = None  # (B,) log expected spikes in the window (`model.count_head`)


@dataclass
class Outputs:
    id_logits: torch.Tensor  # (B, T, id_size)
    dt_logits: torch.Tensor  # (B, T, dt_size)
    behavior: dict[str, torch.Tensor]  # name -> (B,) regression, (B, n_classes) logits or (B, 2) circular (cos, sin)
    pooled: torch.Tensor  # (B, D)
    contrastive: dict[str, torch.Tensor] = field(default_factory=dict)  # modality -> (B, dim), L2-normalised
    count_log_rate: torch.Tensor | None = None  # (B,) log expected spikes in the window (`model.count_head`)


# ---------------------------------------------------------------------------------------------------------------
# encoders of the context
# ---------------------------------------------------------------------------------------------------------------
class FrameEncoder(nn.Module):
    """Frames (B, F, H, W) -> patch tokens (B, P, D): Conv3d (kernel = stride) + position code + LN + ReLU + blocks.

    The release computed a frame position code and then dropped it; here every patch token keeps its own.
    """

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__()
        m, fr = cfg.model, cfg.frames
        pt, ph, pw = m.frame_patch
        if fr.n_frames % pt or fr.height % ph or fr.width % pw:
            raise ValueError(
                f"frames {fr.n_frames}x{fr.height}x{fr.width} must divide evenly by model.frame_patch {m.frame_patch}"
            )
        self.n_tokens = (fr.n_frames // pt) * (fr.height // ph) * (fr.width // pw)
        self.patch = nn.Conv3d(1, m.d_model, kernel_size=m.frame_patch, stride=m.frame_patch)
        self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, m.d_model))
        self.ln = nn.LayerNorm(m.d_model)
        self.blocks = nn.ModuleList(
            SelfBlock(m.d_model, m.n_heads, m.dropout, m.mlp_ratio, causal=False, attn_dropout=m.attention_dropout)
            for _ in range(m.frame_layers)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.patch(frames.unsqueeze(1))  # (B, D, F', H', W')
        x = x.flatten(2).transpose(1, 2)  # (B, P, D)
        x = F.relu(self.ln(x + self.pos))
        for block in self.blocks:
            x = block(x)
        return x


class BehaviorInputEncoder(nn.Module):
    """Samples of one input behavior variable -> tokens: MLP(value) + embedding of the sample's age (in dt bins)."""

    def __init__(self, d: int, n_ages: int) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        self.age = nn.Embedding(n_ages, d)

    def forward(self, values: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """values (B, K) z-scored, ages (B, K) long -> (B, K, D)."""
        return self.value(values.unsqueeze(-1)) + self.age(ages)


# ---------------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------------
class Neuroformer(nn.Module):
    """Neuroformer built from a RunConfig and a vocabulary: only the layers the declared modalities need."""

    def __init__(self, cfg: RunConfig, vocab: Vocab) -> None:
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        m, w = cfg.model, cfg.window
        d = m.d_model
        self.id_emb = nn.Embedding(vocab.id_size, d)
        self.dt_emb = nn.Embedding(vocab.dt_size, d)
        self.pos_emb = nn.Embedding(w.block_size, d)
        self.prev_pos_emb = nn.Embedding(w.prev_block_size, d)
        self.null_memory = nn.Parameter(torch.zeros(1, 1, d))  # the always-valid key of every memory
        self.drop = nn.Dropout(m.dropout)
        attn_p = m.dropout if m.attention_dropout is None else m.attention_dropout

        def causal(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                SelfBlock(d, m.n_heads, m.dropout, m.mlp_ratio, causal=True, attn_dropout=attn_p, span=m.attention_span)
                for _ in range(n)
            )

        def cross(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                CrossBlock(d, m.n_heads, m.dropout, m.mlp_ratio, attn_dropout=attn_p) for _ in range(n)
            )

        self.feature = causal(m.feature_layers)
        # history_latents > 0: learned queries that summarise the previous window once per window (ModelConfig)
        self.history_latents = nn.Parameter(torch.zeros(1, m.history_latents, d)) if m.history_latents else None
        self.history_summary = cross(1)[0] if m.history_latents else None
        self.history_cross = cross(m.history_layers)
        n_stretches = history_stretches(w.bins_per_window, w.prev_bins)
        self.history_count = HistoryCountEncoder(d, n_stretches) if m.history_count_token else None
        self.frame_encoder = FrameEncoder(cfg) if cfg.frames.enabled else None
        self.frame_cross = cross(m.frame_cross_layers) if cfg.frames.enabled else nn.ModuleList()
        self.behavior_inputs = nn.ModuleDict(
            {b.name: BehaviorInputEncoder(d, behavior_input_slots(b.input_window, w.dt)) for b in cfg.inputs}
        )
        self.behavior_cross = nn.ModuleDict({b.name: cross(m.behavior_cross_layers) for b in cfg.inputs})
        self.fused = causal(m.fused_layers)
        self.ln_f = nn.LayerNorm(d)
        self.id_head = nn.Linear(d, vocab.id_size)
        self.dt_head = nn.Linear(d, vocab.dt_size)
        self.behavior_heads = nn.ModuleDict({b.name: nn.Linear(d, b.n_outputs) for b in cfg.targets})
        n_pooled = int(cfg.frames.enabled) + len(cfg.inputs)
        self.count_head = CountHead(d, n_stretches, n_pooled, len(cfg.inputs)) if m.count_head else None
        c = cfg.contrastive
        modalities = sorted({mod for pair in c.pairs for mod in pair}) if c.enabled else []
        self.contrastive_proj = nn.ModuleDict({mod: nn.Linear(d, c.dim) for mod in modalities})
        self.behavior_value_emb = nn.ModuleDict(
            {
                mod: nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
                for mod in modalities
                if mod not in ("spikes", "frames")
            }
        )
        self.apply(self._init)
        if self.history_latents is not None:
            nn.init.normal_(self.history_latents, 0.0, 0.02)

    def _init(self, module: nn.Module) -> None:
        n_layers = max(1, len(self.feature) + len(self.fused))
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            std = 0.02 / math.sqrt(2 * n_layers) if getattr(module, "residual", False) else 0.02
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    # ------------------------------------------------------------------ context
    def encode_context(self, batch: dict[str, torch.Tensor]) -> Context:
        """History tokens, frames and behavior inputs -> every cross block's keys/values. Once per window."""
        B = batch["prev_ids"].shape[0]
        null = self.null_memory.expand(B, 1, -1)
        M = batch["prev_ids"].shape[1]
        hist = self.id_emb(batch["prev_ids"]) + self.dt_emb(batch["prev_dts"]) + self.prev_pos_emb.weight[:M]
        valid = torch.arange(M, device=hist.device)[None, :] < batch["prev_lengths"][:, None]
        always = [null]  # keys every window has: the null key, and the history's spike counts
        w = self.cfg.window
        log_counts = history_log_counts(batch["prev_dts"], valid, w.bins_per_window, w.prev_bins)
        if self.history_count is not None:
            always.append(self.history_count(log_counts))
        hist = torch.cat([*always, hist], dim=1)  # (B, len(always) + M, D)
        ones = torch.ones(B, len(always), dtype=torch.bool, device=hist.device)
        hist_valid = torch.cat([ones, valid], dim=1)
        if self.history_summary is not None and self.history_latents is not None:
            summary = self.history_summary.memory(hist, hist_valid)
            hist = self.history_summary(self.history_latents.expand(B, -1, -1), summary)  # (B, L, D)
            ctx = Context(history=[blk.memory(hist, None) for blk in self.history_cross], frames=[], behavior={})
        else:
            ctx = Context(history=[blk.memory(hist, hist_valid) for blk in self.history_cross], frames=[], behavior={})
        pooled: list[torch.Tensor] = []  # the count head's (B, D) summaries: frames, each behavior input
        if self.frame_encoder is not None:
            frames = self.frame_encoder(batch["frames"])  # (B, P, D)
            ctx.frames = [blk.memory(frames, None) for blk in self.frame_cross]
            ctx.frame_feature = frames.mean(dim=1)
            pooled.append(ctx.frame_feature)
        for name, encoder in self.behavior_inputs.items():
            tokens = encoder(batch[f"in_{name}"], batch[f"in_{name}_age"])  # (B, K, D)
            tokens = torch.cat([null, tokens], dim=1)
            ok = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=tokens.device), batch[f"in_{name}_valid"]], 1)
            ctx.behavior[name] = [blk.memory(tokens, ok) for blk in self.behavior_cross[name]]
            pooled.append((tokens * ok.unsqueeze(-1)).sum(1) / ok.sum(1, keepdim=True))  # null included: never 0
        if self.count_head is not None:
            behavior = behavior_count_features(batch, list(self.behavior_inputs))
            ctx.count_log_rate = self.count_head(log_counts, pooled, behavior)
        return ctx

    # ------------------------------------------------------------------ tokens
    def forward_tokens(
        self,
        ids: torch.Tensor,
        dts: torch.Tensor,
        ctx: Context,
        start: int | torch.Tensor = 0,
        causal: CausalBlockForm | None = None,
    ) -> torch.Tensor:
        """Run a chunk of tokens (B, t) at positions start .. start + t - 1 through every stack (feature blocks,
        cross blocks, fused blocks) and the final norm. Returns the normalised hidden states (B, t, D).

        `causal(i, block, x)`, when given, runs causal block i (feature blocks, then fused blocks) in place of
        `block(x)`: how a caller lets the chunk attend to the keys/values of earlier tokens it has cached."""
        t = ids.shape[1]
        if isinstance(start, torch.Tensor):  # an exported graph's input, () int64
            pos = start + torch.arange(t, device=ids.device)
        else:
            pos = torch.arange(start, start + t, device=ids.device)
        x = self.drop(self.id_emb(ids) + self.dt_emb(dts) + self.pos_emb(pos))
        for i, blk in enumerate(self.feature):
            x = blk(x) if causal is None else causal(i, blk, x)
        for cross, mem in self.cross_pairs(ctx):
            x = cross(x, mem)
        for i, blk in enumerate(self.fused, start=len(self.feature)):
            x = blk(x) if causal is None else causal(i, blk, x)
        return self.ln_f(x)

    def cross_pairs(self, ctx: Context) -> list[tuple[CrossBlock, CrossMemory]]:
        """Every cross-attention block with its memory, in block order: history, frames, each behavior input."""
        pairs = list(zip(self.history_cross, ctx.history)) + list(zip(self.frame_cross, ctx.frames))
        for name, mems in ctx.behavior.items():
            pairs += list(zip(self.behavior_cross[name], mems))
        return pairs

    # ------------------------------------------------------------------ heads
    def token_logits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.id_head(h), self.dt_head(h)

    def pool(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean of hidden states over each window's valid positions (SOS, spikes, EOS); PAD excluded."""
        valid = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]).to(h.dtype)
        return (h * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)

    def behavior_outputs(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each target's head: a z-scored value (B,), class logits (B, C), or an unnormalised (cos, sin) vector
        (B, 2) for a circular target (its angle is atan2; its length is free, the loss ignores it)."""
        out = {}
        for b in self.cfg.targets:
            y = self.behavior_heads[b.name](pooled)
            out[b.name] = y.squeeze(-1) if b.kind == "regression" else y
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> Outputs:
        """Teacher-forced pass over whole windows (B, T): logits at every position, decodes from the pool."""
        ctx = self.encode_context(batch)
        h = self.forward_tokens(batch["ids"], batch["dts"], ctx)
        id_logits, dt_logits = self.token_logits(h)
        pooled = self.pool(h, batch["lengths"])
        out = Outputs(id_logits, dt_logits, self.behavior_outputs(pooled), pooled)
        out.count_log_rate = ctx.count_log_rate
        if self.contrastive_proj:
            out.contrastive = self._contrastive_features(pooled, ctx, batch)
        return out

    def _contrastive_features(
        self, pooled: torch.Tensor, ctx: Context, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        feats = {}
        for mod, proj in self.contrastive_proj.items():
            if mod == "spikes":
                f = pooled
            elif mod == "frames":
                assert ctx.frame_feature is not None
                f = ctx.frame_feature
            else:
                value = torch.nan_to_num(batch[f"y_{mod}"], nan=0.0)
                f = self.behavior_value_emb[mod](value.unsqueeze(-1))
            feats[mod] = F.normalize(proj(f), dim=-1)
        return feats

    # ------------------------------------------------------------------ optimisation
    def configure_optimizer(self, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.AdamW:
        """AdamW with weight decay on Linear and Conv3d weights only; biases, norms, embeddings and the learned
        position/null vectors are not decayed (shrinking them toward zero has no regularising meaning)."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                is_weight = name == "weight" and isinstance(module, (nn.Linear, nn.Conv3d))
                (decay if is_weight else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=False)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def behavior_input_slots(input_window: float, dt: float) -> int:
    """Age embeddings (and max samples) for a behavior input: one per dt bin of its window."""
    return max(1, int(round(input_window / dt)))
