"""Measured parity between an exported bundle (onnxruntime) and the PyTorch model it came from.

Checked on the same input batch (held-out windows when the export was given data):
* decode: every behavior output;  * context: every cross-attention key/value;
* step: next-ID/next-time logits of each token fed one at a time through the fixed-size cache, against the full
  teacher-forced PyTorch forward at the same positions;
* stream: each window's tokens in two chunks through the `stream` graph's cache (its behavior outputs), against the
  decode outputs of PyTorch;
* generation: greedy next-window tokens from the numpy runtime (`Decoder.generate`) against the PyTorch
  generator (`training.generate.generate_window`), token for token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtdecode.export.graphs import ContextGraph, DecodeGraph, context_input_names, context_output_names
from rtdecode.runtime import Bundle, Decoder
from rtdecode.runtime.streaming import stream_feeds, stream_outputs
from rtdecode.training.checkpoint import LoadedRun
from rtdecode.training.generate import SamplingConfig, generate_window

__all__ = ["check_parity"]


def _max_abs(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(
        (float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) for x, y in zip(a, b) if x.size),
        default=0.0,
    )


@torch.no_grad()
def check_parity(
    run: LoadedRun, bundle_dir: Path, batch: dict[str, np.ndarray], tolerance: float = 1e-4, generate_tokens: int = 24
) -> dict[str, Any]:
    model = run.model.eval()
    decoder = Decoder(Bundle.load(bundle_dir), backend="onnxruntime")
    ort = decoder.backend
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    result: dict[str, Any] = {"windows": int(batch["ids"].shape[0])}
    ref: list[np.ndarray] = []
    if decoder.can_decode:  # a spikes-only model has no targets and no decode graph
        dec = DecodeGraph(model)
        ref = [o.numpy() for o in dec(*(t[n] for n in dec.spec.inputs))]
        result["decode_max_abs"] = _max_abs(ref, ort.run("decode", {n: batch[n] for n in dec.spec.inputs}))

    ctx_graph = ContextGraph(model)
    ctx_ref = [o.numpy() for o in ctx_graph(*(t[n] for n in context_input_names(model)))]
    ctx_got = ort.run("context", {n: batch[n] for n in ctx_graph.spec.inputs})
    result["context_max_abs"] = _max_abs(ctx_ref, ctx_got)

    # step: feed the window's tokens one at a time through the cache; compare with the full forward's logits
    ctx = model.encode_context(t)
    h = model.forward_tokens(t["ids"], t["dts"], ctx)
    full_id, full_dt = model.token_logits(h)
    B, T = batch["ids"].shape
    past_k, past_v = decoder._cache(B)
    past_k[:] = 0.0
    past_v[:] = 0.0
    ctx_feeds = dict(zip(context_output_names(model), ctx_got))  # the memories (the count, if any, is last)
    errs = []
    for pos in range(min(T, generate_tokens)):
        id_l, dt_l, nk, nv = ort.run(
            "step",
            {
                "ids": batch["ids"][:, pos : pos + 1],
                "dts": batch["dts"][:, pos : pos + 1],
                "pos": np.array(pos, np.int64),
                "past_k": past_k,
                "past_v": past_v,
                **ctx_feeds,
            },
        )
        past_k[:, :, :, pos], past_v[:, :, :, pos] = nk[:, :, :, 0], nv[:, :, :, 0]
        errs.append(_max_abs([full_id[:, pos].numpy(), full_dt[:, pos].numpy()], [id_l, dt_l]))
    result["step_max_abs"] = max(errs, default=0.0)

    # streaming decode: each window's tokens in two chunks through `stream` (the second chunk's behavior outputs
    # are the decode), vs the PyTorch decode
    if decoder.can_stream:
        errs = []
        for b in range(B):
            n = int(batch["lengths"][b])
            k, v = np.zeros_like(past_k[:, :1]), np.zeros_like(past_v[:, :1])
            ctx_b = {name: x[b : b + 1] for name, x in ctx_feeds.items()}
            total = np.zeros((1, model.cfg.model.d_model), np.float32)
            got_b: list[np.ndarray] = []
            for lo, hi in ((0, n // 2), (n // 2, n)):
                if hi <= lo:
                    continue
                outs = ort.run(
                    "stream",
                    stream_feeds(
                        batch["ids"][b : b + 1, lo:hi],
                        batch["dts"][b : b + 1, lo:hi],
                        lo,
                        k,
                        v,
                        ctx_b,
                        total,
                        span=model.cfg.model.attention_span,
                    ),
                )
                total, new_k, new_v, got_b = stream_outputs(outs, k.shape[0])
                k[:, :, :, lo:hi], v[:, :, :, lo:hi] = np.stack(new_k), np.stack(new_v)
            errs.append(_max_abs([r[b : b + 1] for r in ref], got_b))
        result["stream_max_abs"] = max(errs, default=0.0)

    # greedy generation, numpy runtime vs PyTorch generator
    ids_rt, dts_rt = decoder.generate(batch, temperature=0.0, max_tokens=generate_tokens)
    ids_pt, dts_pt = generate_window(model, ctx, SamplingConfig(temperature=0.0), max_tokens=generate_tokens)
    same = all(np.array_equal(a, b) for a, b in zip(ids_rt, ids_pt)) and all(
        np.array_equal(a, b) for a, b in zip(dts_rt, dts_pt)
    )
    result["generation_tokens"] = int(sum(i.size for i in ids_pt))
    result["generation_identical"] = bool(same)
    result["tolerance"] = tolerance
    worst = max(
        result.get("decode_max_abs", 0.0),
        result["context_max_abs"],
        result["step_max_abs"],
        result.get("stream_max_abs", 0.0),
    )
    result["passed"] = bool(worst <= tolerance and same)
    return result
