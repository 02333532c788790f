"""The serving graphs, as torch modules with flat tensor inputs and outputs, ready for ONNX export.

* `decode`  — a whole closed window (tokens + history + frames + behavior inputs) -> each behavior target's
  output (z-scored value, class logits, or a circular target's (cos, sin): one tensor per target, which
  `rtdecode.runtime.Decoder.to_units` turns into the data's units). What the daemon runs once per window.
* `context` — history, frames, behavior inputs -> the keys/values (and key masks) of every cross-attention
  block, and with a count head (last) `count_log_rate`, the window's expected spike count, drawn before the
  first spike is generated. Run once per window before generation.
* `step`    — new tokens + the context + a caller-owned fixed-size KV cache -> next-ID and next-time logits of
  the last new token, and the new tokens' keys/values (the caller writes them into its cache).
* `stream`  — new tokens + an additive attention mask + the sum of the earlier tokens' final hidden states + the
  filled part of the KV cache (one input per causal block) + the context -> the running sum of final hidden
  states, the new tokens' keys/values (one output per causal block), and each behavior target's output as if
  the window ended with these tokens (mean pool = sum / token count, then the heads): a window's spikes run
  through the model batch by batch while the window is open (streaming decode), and the batch that closes it
  (last spikes + EOS) gives the decode in the same call. It runs at every window close, so it is the lean form
  (`forms.forward_tokens_past`): measured 25% faster than `step`'s form, and the heads inside it save a
  second session's call at the close.

Each wrapper only re-plumbs tensors into the model's own methods and their export forms (`rtdecode.export.forms`,
on the model's own weights), so the graphs compute what training and the PyTorch generator compute.
Input/output names are fixed here and recorded in the bundle manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from rtdecode.export.forms import forward_tokens_fixed, forward_tokens_past
from rtdecode.training.blocks import CrossMemory
from rtdecode.training.model import Context, Neuroformer

__all__ = [
    "COUNT_OUTPUT",
    "GraphSpec",
    "DecodeGraph",
    "ContextGraph",
    "StepGraph",
    "StreamGraph",
    "context_layout",
    "window_input_names",
    "stream_input_names",
]

TOKEN_INPUTS = ("ids", "dts", "lengths")
COUNT_OUTPUT = "count_log_rate"  # the context graph's last output, with a count head
HISTORY_INPUTS = ("prev_ids", "prev_dts", "prev_lengths")


@dataclass(frozen=True)
class GraphSpec:
    """Names of a graph's inputs and outputs, in order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def context_input_names(model: Neuroformer) -> tuple[str, ...]:
    names = list(HISTORY_INPUTS)
    if model.frame_encoder is not None:
        names.append("frames")
    for b in model.cfg.inputs:
        names += [f"in_{b.name}", f"in_{b.name}_age", f"in_{b.name}_valid"]
    return tuple(names)


def window_input_names(model: Neuroformer) -> tuple[str, ...]:
    return TOKEN_INPUTS + context_input_names(model)


def context_layout(model: Neuroformer) -> list[tuple[str, str | None, bool]]:
    """One entry per cross-attention memory in block order: (prefix, behavior name or None, has a key mask)."""
    masked = model.history_summary is None  # latent summaries of the history are all valid
    layout: list[tuple[str, str | None, bool]] = [(f"hist{i}", None, masked) for i in range(len(model.history_cross))]
    layout += [(f"frame{i}", None, False) for i in range(len(model.frame_cross))]
    for name in model.behavior_cross:
        layout += [(f"beh_{name}{i}", name, True) for i in range(len(model.behavior_cross[name]))]
    return layout


def context_output_names(model: Neuroformer) -> tuple[str, ...]:
    names: list[str] = []
    for prefix, _, masked in context_layout(model):
        names += [f"{prefix}_k", f"{prefix}_v"] + ([f"{prefix}_mask"] if masked else [])
    return tuple(names)


def _batch(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    return dict(zip(names, tensors))


def flatten_context(model: Neuroformer, ctx: Context) -> tuple[torch.Tensor, ...]:
    mems = list(ctx.history) + list(ctx.frames) + [m for name in model.behavior_cross for m in ctx.behavior[name]]
    out: list[torch.Tensor] = []
    for (_, _, masked), mem in zip(context_layout(model), mems):
        out += [mem.k, mem.v] + ([mem.mask] if masked and mem.mask is not None else [])
    return tuple(out)


def unflatten_context(model: Neuroformer, tensors: tuple[torch.Tensor, ...]) -> Context:
    ctx = Context(history=[], frames=[], behavior={name: [] for name in model.behavior_cross})
    i = 0
    for prefix, behavior, masked in context_layout(model):
        k, v = tensors[i], tensors[i + 1]
        mask = tensors[i + 2] if masked else None
        i += 3 if masked else 2
        mem = CrossMemory(k, v, mask)
        if prefix.startswith("hist"):
            ctx.history.append(mem)
        elif prefix.startswith("frame"):
            ctx.frames.append(mem)
        else:
            ctx.behavior[behavior].append(mem)
    return ctx


class DecodeGraph(nn.Module):
    def __init__(self, model: Neuroformer) -> None:
        super().__init__()
        self.model = model
        self.spec = GraphSpec(window_input_names(model), tuple(f"behavior_{b.name}" for b in model.cfg.targets))

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, batch = self.model, _batch(self.spec.inputs, tensors)
        ctx = m.encode_context(batch)
        h = m.forward_tokens(batch["ids"], batch["dts"], ctx)
        out = m.behavior_outputs(m.pool(h, batch["lengths"]))
        return tuple(out[b.name] for b in m.cfg.targets)


class ContextGraph(nn.Module):
    """The memories (the `step` and `stream` graphs' context inputs, in that order), then the count if any: a
    caller that zips the memory names with the outputs leaves the count out."""

    def __init__(self, model: Neuroformer) -> None:
        super().__init__()
        self.model = model
        count = (COUNT_OUTPUT,) if model.count_head is not None else ()
        self.spec = GraphSpec(context_input_names(model), context_output_names(model) + count)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx = self.model.encode_context(_batch(self.spec.inputs, tensors))
        count = (ctx.count_log_rate,) if ctx.count_log_rate is not None else ()
        return flatten_context(self.model, ctx) + count


class StepGraph(nn.Module):
    def __init__(self, model: Neuroformer) -> None:
        super().__init__()
        self.model = model
        self.spec = GraphSpec(
            ("ids", "dts", "pos", "past_k", "past_v") + context_output_names(model),
            ("id_logits", "dt_logits", "new_k", "new_v"),
        )

    def forward(
        self,
        ids: torch.Tensor,
        dts: torch.Tensor,
        pos: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        *context: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m = self.model
        h, new_k, new_v = forward_tokens_fixed(m, ids, dts, unflatten_context(m, context), past_k, past_v, pos)
        id_logits, dt_logits = m.token_logits(h[:, -1])  # only the last token's: what sampling needs
        return id_logits, dt_logits, new_k, new_v


def stream_input_names(model: Neuroformer) -> tuple[str, ...]:
    """ids, dts, pos, mask, hidden_before, past_k0.., past_v0.. (one per causal block), then the context tensors."""
    layers = range(len(model.feature) + len(model.fused))
    return (
        ("ids", "dts", "pos", "mask", "hidden_before")
        + tuple(f"past_k{i}" for i in layers)
        + tuple(f"past_v{i}" for i in layers)
        + context_output_names(model)
    )


class StreamGraph(nn.Module):
    """Decoding a window chunk by chunk. The host keeps one (B, D) running sum of final hidden states per window
    however many tokens have streamed through; the pool and the heads are in this graph, not a second one, so
    the close is one call into one session, whose weights the commits a few ms earlier kept warm (a separate
    graph's session holds its own, colder copy: docs/performance.md). The commits' behavior outputs cost a few
    small Gemms and are ignored. The token count is `pos` + new tokens: the pool covers SOS, spikes and EOS."""

    def __init__(self, model: Neuroformer) -> None:
        super().__init__()
        self.model = model
        self.layers = len(model.feature) + len(model.fused)
        layers = range(self.layers)
        self.spec = GraphSpec(
            stream_input_names(model),
            ("hidden_sum",)
            + tuple(f"new_k{i}" for i in layers)
            + tuple(f"new_v{i}" for i in layers)
            + tuple(f"behavior_{b.name}" for b in model.cfg.targets),
        )

    def forward(
        self,
        ids: torch.Tensor,
        dts: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor,
        hidden_before: torch.Tensor,
        *rest: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m, L = self.model, self.layers
        past_k, past_v, ctx = rest[:L], rest[L : 2 * L], unflatten_context(m, rest[2 * L :])
        h, new_k, new_v = forward_tokens_past(m, ids, dts, ctx, past_k, past_v, pos, mask)
        total = hidden_before + h.sum(dim=1)  # (B, D)
        out = m.behavior_outputs(total / (pos + ids.shape[1]).to(total.dtype))  # as `Neuroformer.pool`
        return (total, *new_k, *new_v) + tuple(out[b.name] for b in m.cfg.targets)  # new_k/v: L x (B, H, t, hd)
