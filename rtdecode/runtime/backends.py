"""Backends that run a bundle's graphs: one small interface, chosen by name.

* "onnxruntime" (default): CPU execution provider; settings that matter for latency are explicit (threads,
  thread spinning, graph optimisation level; each measured on this project's CPU host).
* "onnxruntime-cuda" / "onnxruntime-tensorrt": the same sessions on onnxruntime-gpu's CUDA / TensorRT execution
  providers (`pip install rtdecode[gpu]`, instead of onnxruntime). Written against the documentation; untested
  here (no GPU build of onnxruntime on these machines). The `stream` graph's `past` and `keys` axes grow with
  every call of a window; the TensorRT provider builds an engine for each new shape range it meets (documented
  behaviour), so streaming there may stall the first windows until its engine cache is warm: untested, serve
  with --no-streaming if it does.
* "tensorrt": native TensorRT engines (rtdecode.runtime.tensorrt_backend), when present.
* The PyTorch model behind a bundle runs through the same interface for debugging
  (`rtdecode.export.torch_backend.TorchBackend`, passed to `Decoder` as its backend); it needs torch and the source
  run, so it lives with export, outside the serve path.
* "auto": the first available of tensorrt, onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from rtdecode.runtime.bundle import Bundle

__all__ = ["Backend", "OnnxRuntimeBackend", "create_backend", "available_backends"]


class Backend(Protocol):
    """What a decoder needs from an inference engine. `graphs` says which of the bundle's graphs it can run: a
    backend without "stream" makes the daemon decode window at a time (and say so in `status`)."""

    name: str
    graphs: frozenset[str]

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one graph ("decode", "context" or "step"); outputs in the manifest's order."""
        ...


PROVIDERS = {
    "onnxruntime": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeBackend:
    """One onnxruntime InferenceSession per graph, created at start-up (never on the hot path)."""

    def __init__(
        self,
        bundle: Bundle,
        name: str = "onnxruntime",
        threads: int = 0,
        spinning: bool = True,
        optimization: str = "all",
        memory_arena: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(
                "the onnxruntime backend needs onnxruntime: pip install 'rtdecode[export]' "
                "(or 'rtdecode[gpu]' for onnxruntime-gpu, never both)"
            ) from e
        wanted = PROVIDERS[name]
        have = ort.get_available_providers()
        if wanted[0] not in have:
            raise RuntimeError(
                f"backend {name} needs {wanted[0]}, but this onnxruntime offers {have}; "
                "install onnxruntime-gpu (pip install 'rtdecode[gpu]') on a CUDA machine"
            )
        self.name = name
        opts = ort.SessionOptions()
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        opts.graph_optimization_level = levels[optimization]
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # spinning helps a single busy session and hurts sessions alternating on few cores: a setting, measured
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        # the arena keeps every block it ever allocated for reuse, so the process holds the memory of the largest
        # window it has decoded; without it, memory follows the current windows and each run allocates afresh
        opts.enable_cpu_mem_arena = memory_arena
        providers = [p for p in wanted if p in have]
        self.sessions = {
            g: ort.InferenceSession(str(bundle.graph_path(g)), opts, providers=providers)
            for g in ("decode", "context", "step", "stream")
            if bundle.has_graph(g)
        }
        self.graphs = frozenset(self.sessions)
        self.providers = self.sessions["context"].get_providers()

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[graph].run(None, feeds)


def available_backends() -> list[str]:
    """Backends that can start on this machine, fastest first."""
    out = []
    try:
        import onnxruntime as ort

        have = ort.get_available_providers()
        out += [name for name in ("onnxruntime-tensorrt", "onnxruntime-cuda") if PROVIDERS[name][0] in have]
        out.append("onnxruntime")
    except ImportError:
        pass
    try:
        from rtdecode.runtime.tensorrt_backend import tensorrt_available

        if tensorrt_available():
            out.insert(0, "tensorrt")
    except ImportError:
        pass
    return out


def create_backend(bundle: Bundle, name: str = "auto", **options: Any) -> Backend:
    """A backend by name (see the module docstring); raises with the install hint when it cannot start."""
    if name == "auto":
        choices: Sequence[str] = available_backends()
        if not choices:
            raise RuntimeError("no inference backend available: pip install 'rtdecode[export]' for onnxruntime")
        name = choices[0]
    if name in PROVIDERS:
        return OnnxRuntimeBackend(bundle, name, **options)
    if name == "tensorrt":
        from rtdecode.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(bundle, **options)
    raise ValueError(
        f"unknown backend {name!r}; choose from auto, onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt"
    )
