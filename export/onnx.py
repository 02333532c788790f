"""`rtdecode export`: a trained run -> a model bundle (ONNX graphs + manifest.json) that serves without torch.

Bundle layout (format version 1):

    manifest.json   format, version, window config, vocabulary (neuron ID map), modalities (frames, behavior
                    specs), normalisation, graphs (file, input/output names, dtypes, shapes with named dynamic
                    axes, sha256), opset, cache size, source checkpoint (path, step, sha256), parity results
    decode.onnx     whole window -> behavior outputs
    context.onnx    history/frames/behavior inputs -> cross-attention keys/values
    step.onnx       new tokens + context + fixed-size KV cache -> next logits + new keys/values
    stream.onnx     (optional) new tokens + mask + earlier hidden-state sum + filled cache + context -> running
                    hidden-state sum + new K/V + behavior outputs (streaming decode; bundles without it, or with
                    an earlier unreleased form of it, decode window at a time; a `finalize.onnx` some of those
                    carry is no longer read)

Dynamic axes: batch (B), tokens (T, or t for a step), history tokens (M) and behavior samples; for `stream` also
the filled cache slots (past) and the mask's keys (past + t). The KV cache has a fixed size C = block_size slots,
owned by the caller, so a step never reallocates or copies the cache (measured on this machine: the concatenating
cache spent 38% of a step copying, measured). `stream` is given copies of only the filled
slots (`rtdecode.runtime.streaming.stream_feeds`): a few tens of KB, cheaper than attending over all C slots.

Opset 20 is the default: onnxruntime 1.32's native opset-23 `Attention` op rejects the key-padding masks these
graphs broadcast over queries, and TensorRT's parser needs opset <= 20 for attention anyway.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtdecode.export.graphs import (
    ContextGraph,
    DecodeGraph,
    StepGraph,
    StreamGraph,
    context_input_names,
    context_output_names,
)
from rtdecode.io.atomic import atomic_path, atomic_write
from rtdecode.runtime.bundle import FORMAT, FORMAT_VERSION, STREAM_GRAPH_VERSION, sha256
from rtdecode.training.checkpoint import LoadedRun

__all__ = ["export_bundle", "example_batch", "sha256"]


def example_batch(run: LoadedRun, data: Any | None, windows: np.ndarray | None) -> dict[str, np.ndarray]:
    """Inputs for tracing and parity: real held-out windows when `data` (a WindowData) is given, else synthetic
    windows drawn from the vocabulary (same shapes and dtypes, random content)."""
    if data is not None and windows is not None:
        return data.batch(windows, run.norm)
    rng = np.random.default_rng(0)
    cfg, vocab = run.config, run.vocab
    B, T, M = 4, min(24, cfg.window.block_size), min(16, cfg.window.prev_block_size)
    lengths = np.array([T, T - 3, 2, T // 2], dtype=np.int64)[:B]
    ids = rng.integers(0, vocab.n_neurons, (B, T))
    dts = np.sort(rng.integers(0, cfg.window.bins_per_window, (B, T)), axis=1)
    ids[:, 0], dts[:, 0] = vocab.id_sos, vocab.dt_sos
    for b, n in enumerate(lengths):
        ids[b, n - 1], dts[b, n - 1] = vocab.id_eos, vocab.dt_eos
        ids[b, n:], dts[b, n:] = vocab.id_pad, vocab.dt_pad
    batch: dict[str, np.ndarray] = {
        "ids": ids,
        "dts": dts,
        "lengths": lengths,
        "prev_ids": rng.integers(0, vocab.n_neurons, (B, M)),
        "prev_dts": rng.integers(0, vocab.n_time, (B, M)),
        "prev_lengths": np.array([M, 0, 3, M - 1], dtype=np.int64)[:B],
    }
    if cfg.frames.enabled:
        batch["frames"] = rng.standard_normal((B, cfg.frames.n_frames, cfg.frames.height, cfg.frames.width)).astype(
            np.float32
        )
    for spec in cfg.inputs:
        K = 4
        batch[f"in_{spec.name}"] = rng.standard_normal((B, K)).astype(np.float32)
        batch[f"in_{spec.name}_age"] = rng.integers(0, 5, (B, K))
        batch[f"in_{spec.name}_valid"] = rng.random((B, K)) < 0.8
    return batch


def _dynamic_shapes(names: tuple[str, ...]) -> dict[str, dict[int, Any]]:
    """Named dynamic axes per input; the same Dim object ties equal axes together."""
    Dim = torch.export.Dim
    B, T, M, K = (
        Dim("batch", min=1, max=1024),
        Dim("tokens", min=1, max=4096),
        Dim("history", min=1, max=8192),
        Dim("samples", min=1, max=1024),
    )
    axes: dict[str, dict[int, Any]] = {}
    for n in names:
        if n in ("ids", "dts"):
            axes[n] = {0: B, 1: T}
        elif n in ("prev_ids", "prev_dts"):
            axes[n] = {0: B, 1: M}
        elif n.startswith("in_"):
            axes[n] = {0: B, 1: K}
        elif n in ("lengths", "prev_lengths", "frames"):
            axes[n] = {0: B}
        else:
            axes[n] = {}
    return axes


def _export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    names: tuple[str, ...],
    outputs: tuple[str, ...],
    dynamic: dict[str, dict[int, Any]],
    path: Path,
    opset: int,
) -> None:
    with warnings.catch_warnings(), atomic_path(path, suffix=".tmp.onnx") as tmp:
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        shapes = [dynamic.get(n, {}) for n in names]
        # the wrappers take their trailing tensors as *varargs: torch.export sees them as one nested input
        fixed = 5 if isinstance(module, (StepGraph, StreamGraph)) else 0
        nested = (*shapes[:fixed], tuple(shapes[fixed:]))
        torch.onnx.export(
            module,
            args,
            tmp,
            input_names=list(names),
            output_names=list(outputs),
            dynamic_shapes=nested,
            dynamo=True,
            opset_version=opset,
            verbose=False,
            external_data=False,
        )


def _io_description(path: Path) -> dict[str, list[dict[str, Any]]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append(
                {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": shape}
            )
        return out

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    *,
    weights: str = "model",
    data: Any | None = None,
    windows: np.ndarray | None = None,
    opset: int = 20,
    tolerance: float = 1e-4,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export `run_dir` to a bundle in `out`, check parity against PyTorch, return the manifest.

    Args:
        weights: which weights of the run ("model", "best-val_loss", "best-behavior_r").
        data, windows: a WindowData and held-out window indices for tracing and parity (synthetic if None).
        tolerance: max abs error allowed between onnxruntime and PyTorch (fp32); above it export fails.
    """
    from rtdecode.export.parity import check_parity

    run = LoadedRun(run_dir, weights=weights)
    if "sessions" in run.meta:
        names = ", ".join(str(s["name"]) for s in run.meta["sessions"])
        raise ValueError(
            f"{run_dir} is a multi-session run, numbering the units of {names} together; a bundle serves one "
            f"session's units: export {run_dir}/sessions/<name>"
        )
    model = run.model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batch = example_batch(run, data, windows)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    graphs: dict[str, Any] = {
        "decode": DecodeGraph(model),
        "context": ContextGraph(model),
        "step": StepGraph(model),
        "stream": StreamGraph(model),
    }
    if not run.config.targets:  # spikes only: nothing to decode, so no decode or stream graph; the bundle generates
        del graphs["decode"], graphs["stream"]
        log("the model has no behavior targets: exporting the generation graphs only (context, step)")
    cfg = run.config
    n_causal = len(model.feature) + len(model.fused)
    H, hd, C = cfg.model.n_heads, cfg.model.d_model // cfg.model.n_heads, cfg.window.block_size
    with torch.no_grad():
        ctx_args = tuple(tensors[n] for n in context_input_names(model))
        ctx_out = graphs["context"](*ctx_args)[: len(context_output_names(model))]  # the memories, not the count
        B = batch["ids"].shape[0]
        past = torch.zeros(n_causal, B, H, C, hd)
        step_args = (
            tensors["ids"][:, :2],
            tensors["dts"][:, :2],
            torch.tensor(3, dtype=torch.int64),
            past,
            past.clone(),
            *ctx_out,
        )
        # stream: 2 new tokens after 3 cached ones, the mask causal among the new ones
        bias = torch.zeros(2, 5)
        bias[0, 4] = float("-inf")
        filled = past[:, :, :, :3]
        stream_args = (
            tensors["ids"][:, :2],
            tensors["dts"][:, :2],
            torch.tensor(3, dtype=torch.int64),
            bias,
            torch.zeros(B, cfg.model.d_model),
            *filled.unbind(0),
            *filled.clone().unbind(0),
            *ctx_out,
        )
    manifest_graphs: dict[str, Any] = {}
    for name, module in graphs.items():
        spec = module.spec
        if name in ("step", "stream"):
            args = step_args if name == "step" else stream_args
            Dim = torch.export.Dim
            Bd, td, Md = Dim("batch", min=1, max=1024), Dim("tokens", min=1, max=C), Dim("history", min=1, max=8192)
            dyn: dict[str, dict[int, Any]] = {"ids": {0: Bd, 1: td}, "dts": {0: Bd, 1: td}, "pos": {}}
            if name == "step":
                dyn.update({"past_k": {1: Bd}, "past_v": {1: Bd}})
            else:
                Pd = Dim("past", min=1, max=C)
                dyn["mask"] = {0: td, 1: Dim("keys", min=2, max=2 * C)}
                dyn["hidden_before"] = {0: Bd}
                dyn.update({n: {0: Bd, 2: Pd} for n in spec.inputs if n.startswith("past_")})
            memory_dims: dict[str, Any] = {}  # one dynamic length per memory kind (history, each behavior input)
            for n in spec.inputs[len(dyn) :]:
                if n.startswith("frame"):
                    dyn[n] = {0: Bd}
                    continue
                kind = "history" if n.startswith("hist") else n.rsplit("_", 1)[0].rstrip("0123456789")
                L = memory_dims.setdefault(kind, Md if kind == "history" else Dim(f"{kind}_len", min=1, max=1024))
                dyn[n] = {0: Bd, 3: L} if n.endswith("_mask") else {0: Bd, 2: L}
        else:
            args = tuple(tensors[n] for n in spec.inputs)
            dyn = _dynamic_shapes(spec.inputs)
        path = out / f"{name}.onnx"
        log(f"exporting {name}.onnx ({len(spec.inputs)} inputs, {len(spec.outputs)} outputs, opset {opset}) ...")
        _export(module, args, spec.inputs, spec.outputs, dyn, path, opset)
        manifest_graphs[name] = {"file": path.name, "sha256": sha256(path), **_io_description(path)}
        if name == "stream":
            manifest_graphs[name]["version"] = STREAM_GRAPH_VERSION
    source = run.dir / f"{weights}.safetensors"
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "opset": opset,
        "config": cfg.to_dict(),
        "vocab": json.loads(run.vocab.to_json()),
        "normalisation": run.norm.to_dict(),
        "units": _behavior_units(run, data),  # behavior name -> unit, for the daemon's `describe`
        "cache": {"layers": n_causal, "heads": H, "head_dim": hd, "slots": C},
        "graphs": manifest_graphs,
        "source": {"run": str(run.dir), "weights": weights, "step": run.meta.get("step"), "sha256": sha256(source)},
    }
    _write_manifest(out, manifest)
    parity = check_parity(run, out, batch, tolerance=tolerance)
    manifest["parity"] = parity
    _write_manifest(out, manifest)
    log(
        "parity vs PyTorch (max abs error): "
        + ", ".join(f"{k} {v:.2e}" for k, v in parity.items() if k.endswith("max_abs"))
    )
    if not parity["passed"]:
        raise RuntimeError(f"exported graphs differ from PyTorch beyond {tolerance}: {parity}")
    return manifest


def _behavior_units(run: Any, data: Any | None) -> dict[str, str]:
    """Each behavior variable's unit: as the run recorded it, else (runs from before it did) the session's."""
    if run.meta.get("units"):
        return dict(run.meta["units"])
    session = getattr(data, "session", None)
    return {name: b.unit for name, b in session.behavior.items()} if session is not None else {}


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    with atomic_write(out / "manifest.json") as f:
        f.write(json.dumps(manifest, indent=2).encode())
