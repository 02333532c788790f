"""Native TensorRT engines for a bundle's graphs: built once per GPU, cached beside the bundle, run on buffers
allocated once.

STATUS: written against the TensorRT 10 and 11 Python API documentation and NVIDIA's TensorRT 10 sample runtime
(samples/python/common_runtime.py, cuda-python). UNTESTED ON A GPU in this project so far (no GPU, TensorRT or CUDA
on its machines; a stand-in TensorRT checks the buffer and shape logic). Run the `tensorrt` tests first, then measure:

* parity with onnxruntime on a trained bundle (fp32 within 1e-3; fp16) and identical greedy generations;
* engine build time per graph and plan sizes;
* decode p50/p99 at batch 1 against onnxruntime-cuda, and the step time per token, with the share spent copying
  the caller's KV cache to the GPU (the Backend protocol hands the cache in from the host every step:
  2 x layers x batch x heads x slots x head_dim x 4 bytes); a device-resident cache is the next step if it shows;
* latency at shapes far from the profile's opt values (is one profile enough?), and TF32 on against off.

Engines: bundle/engines/<key>/<graph>.plan, key = GPU name + compute capability + TensorRT version + precision,
because a plan only loads on the GPU model and TensorRT version that built it. A sidecar <graph>.json records the
ONNX sha256 and the profile, so a re-exported bundle or a new max_batch rebuilds instead of loading a stale plan.

Profiles (one per engine, min / opt / max per named dynamic axis). TensorRT tunes kernels for opt; min and max
only bound the shapes it accepts, so min is 1 everywhere and opt is the shape served most often:

    batch    1, 1, max_batch                     closed-loop serving runs one window at a time
    tokens   1, block_size // 2, block_size       decode: a typical window fills about half its slots
                                                 (~53 of 100 in the synthetic session)
             1, 1, block_size                     step: generation feeds one token per step
    history  1, prev_block_size // 2, prev_block_size
    samples  1, 4, max_samples                   behavior input samples
The step graph's memory inputs are the context graph's outputs, so their ranges are those outputs' shapes
(e.g. "history + 1") evaluated at the context profile.

Precision: fp16=True sets BuilderFlag.FP16 (TensorRT 10). TensorRT 11 removed that flag (networks are strongly
typed and precision comes from the ONNX types), so there fp16=True raises and says what to do. fp32 engines clear
TF32 (on by default in TensorRT) so that they match onnxruntime.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import json
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.io.atomic import atomic_path, atomic_write
from rtdecode.runtime.bundle import Bundle, required_graphs

__all__ = ["TensorRTBackend", "build_engines", "engine_key", "profile_shapes", "tensorrt_available"]

INSTALL_HINT = (
    "the tensorrt backend needs TensorRT and cuda-python: pip install 'rtdecode[tensorrt]'. PyPI's "
    "tensorrt wheels download the real libraries from NVIDIA's package index at install time, so that "
    "index must be reachable (it is not in CI or on PyPI-only machines)"
)
Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]
# TensorRT DataType names -> numpy; looked up by name so this module imports without TensorRT
NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "INT8": np.int8,
    "UINT8": np.uint8,
}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def _import() -> tuple[Any, Any]:
    """(tensorrt, cudart), imported only here so that nothing else in rtdecode needs them."""
    try:
        import tensorrt as trt

        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
    except (ImportError, OSError) as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return trt, cudart


def _cuda(result: Any) -> Any:
    """Unwrap a cuda-python (error, values...) tuple; raise with CUDA's error name when the call failed."""
    err, *rest = result
    if int(getattr(err, "value", err)) != 0:  # cudaSuccess
        raise RuntimeError(f"CUDA call failed: {getattr(err, 'name', err)}")
    return rest[0] if len(rest) == 1 else tuple(rest)


def _device(cudart: Any) -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability) of the current device; RuntimeError when there is no GPU."""
    try:
        count, why = _cuda(cudart.cudaGetDeviceCount()), "0 devices"
    except Exception as e:  # an error code, or cuda-python failing to load the CUDA runtime
        count, why = 0, str(e)
    if count < 1:
        raise RuntimeError(
            f"the tensorrt backend needs a CUDA GPU and this machine has none ({why}); use backend 'onnxruntime' here"
        )
    props = _cuda(cudart.cudaGetDeviceProperties(_cuda(cudart.cudaGetDevice())))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.split("\x00")[0].strip(), (int(props.major), int(props.minor))


def tensorrt_available() -> bool:
    """True when TensorRT and cuda-python import and a CUDA device is visible. Never raises."""
    try:
        _device(_import()[1])
        return True
    except Exception:
        return False


def engine_key(gpu_name: str, compute_capability: tuple[int, int], trt_version: str, fp16: bool) -> str:
    """Folder name for engines built on this GPU model with this TensorRT and precision (a safe path component)."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    version = re.sub(r"[^a-z0-9.]+", "-", trt_version.lower()).strip("-.") or "unknown"
    major, minor = compute_capability
    return f"{gpu}_sm{major}{minor}_trt{version}_{'fp16' if fp16 else 'fp32'}"


def _axis_ranges(window: dict[str, Any], graph: str, max_batch: int, max_samples: int) -> dict[str, Shape]:
    T, M = int(window["block_size"]), int(window["prev_block_size"])
    return {
        "batch": (1, 1, max_batch),
        "tokens": (1, 1, T) if graph == "step" else (1, max(1, T // 2), T),
        "history": (1, max(1, M // 2), M),
        "samples": (1, min(4, max_samples), max_samples),
    }


def _eval_dim(expr: int | str, env: dict[str, int]) -> int:
    """A manifest dimension (an int, an axis name or an expression such as "history + 1") at axis values `env`."""
    if isinstance(expr, int):
        return expr

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return int(_OPS[type(node.op)](ev(node.left), ev(node.right)))
        raise ValueError(f"cannot size dimension {expr!r}: known axes are {sorted(env)}")

    try:
        return ev(ast.parse(str(expr), mode="eval").body)
    except SyntaxError as e:
        raise ValueError(f"cannot size dimension {expr!r}: not an expression") from e


def profile_shapes(manifest: dict[str, Any], graph: str, max_batch: int = 8, max_samples: int = 64) -> Profile:
    """(min, opt, max) shape of every input of `graph` with a dynamic axis (see the module docstring)."""
    window, graphs = manifest["config"]["window"], manifest["graphs"]
    ranges = _axis_ranges(window, graph, max_batch, max_samples)
    # the step graph's memories are whatever the context graph returns: size them from its output shapes
    made = {o["name"]: o["shape"] for o in graphs["context"]["outputs"]} if graph == "step" else {}
    made_ranges = _axis_ranges(window, "context", max_batch, max_samples)
    out: Profile = {}
    for io in graphs[graph]["inputs"]:
        if all(isinstance(d, int) for d in io["shape"]):
            continue
        dims, axes = (made[io["name"]], made_ranges) if io["name"] in made else (io["shape"], ranges)
        min_, opt, max_ = (tuple(_eval_dim(d, {k: v[i] for k, v in axes.items()}) for d in dims) for i in range(3))
        out[io["name"]] = (min_, opt, max_)
    return out


def _precision_flags(flags: Any, fp16: bool, trt_version: str) -> tuple[Any, Any]:
    """(builder flag to set, builder flag to clear) for the precision asked: FP16 on TensorRT 10; for fp32, TF32
    cleared (it is on by default and would cost parity with onnxruntime). TensorRT 11 has no FP16 flag."""
    fp16_flag, tf32_flag = getattr(flags, "FP16", None), getattr(flags, "TF32", None)
    if not fp16:
        return None, tf32_flag
    if fp16_flag is None:
        raise RuntimeError(
            f"TensorRT {trt_version} has no FP16 builder flag (from TensorRT 11 precision comes from "
            "the ONNX types): convert the bundle's graphs to fp16 (e.g. ModelOpt AutoCast) and build "
            "with fp16=False, or use TensorRT 10"
        )
    return fp16_flag, None


def _build(trt: Any, onnx_path: Path, profile: Profile, fp16: bool) -> bytes:
    """Parse one ONNX graph and build a serialized engine with one optimisation profile."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode from TensorRT 10 (the flag is deprecated)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors} (TensorRT needs opset <= 20 bundles)")
    config = builder.create_builder_config()
    to_set, to_clear = _precision_flags(trt.BuilderFlag, fp16, trt.__version__)
    if to_set is not None:
        config.set_flag(to_set)
    if to_clear is not None:
        config.clear_flag(to_clear)
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if -1 in tuple(tensor.shape):
            if tensor.name not in profile:
                raise RuntimeError(f"{onnx_path.name}: input {tensor.name} is dynamic but the manifest says static")
            opt.set_shape(tensor.name, *profile[tensor.name])
    config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path} (its log above says why)")
    return bytes(plan)


def build_engines(
    bundle: Bundle, fp16: bool = False, max_batch: int = 8, log: Callable[[str], None] = print, *, max_samples: int = 64
) -> dict[str, Path]:
    """Build (or find) one engine per graph of `bundle` for this GPU; returns graph name -> plan path.

    Plans live in bundle/engines/<engine_key>/; one is rebuilt only when missing or when its sidecar (ONNX sha256,
    precision, profile) differs. Raises ImportError without TensorRT, RuntimeError without a GPU.
    """
    trt, cudart = _import()
    gpu, cc = _device(cudart)
    folder = bundle.path / "engines" / engine_key(gpu, cc, trt.__version__, fp16)
    paths = {}
    for graph in required_graphs(bundle.config):
        profile = profile_shapes(bundle.manifest, graph, max_batch, max_samples)
        stamp = {
            "onnx_sha256": bundle.manifest["graphs"][graph].get("sha256"),
            "fp16": fp16,
            "profile": {k: [list(s) for s in v] for k, v in profile.items()},
        }
        plan, sidecar = folder / f"{graph}.plan", folder / f"{graph}.json"
        try:
            fresh = plan.exists() and json.loads(sidecar.read_text()) == stamp
        except (OSError, ValueError):
            fresh = False
        if not fresh:
            t0 = time.perf_counter()
            log(f"building TensorRT engine {graph} on {gpu} ({'fp16' if fp16 else 'fp32'}, batch <= {max_batch}) ...")
            data = _build(trt, bundle.graph_path(graph), profile, fp16)
            with atomic_path(plan, suffix=".tmp.plan") as tmp:
                Path(tmp).write_bytes(data)
            with atomic_write(sidecar) as f:
                f.write(json.dumps(stamp).encode())
            log(f"  {graph}: {len(data) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s -> {plan}")
        paths[graph] = plan
    return paths


def _volume(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


@dataclass
class _Tensor:
    name: str
    dtype: np.dtype
    host: np.ndarray  # flat pinned buffer of the largest shape the profile admits
    hptr: int  # address of `host`
    device: int  # device pointer (the pinned host pointer for tensors TensorRT wants on the host)
    on_host: bool


@dataclass
class _Graph:
    context: Any
    inputs: list[_Tensor]
    outputs: list[_Tensor]  # in the manifest's order
    shapes: dict[str, Shape] = field(default_factory=dict)  # input shapes last set on the context
    out_shapes: list[Shape] = field(default_factory=list)


class TensorRTBackend:
    """The Backend protocol on TensorRT engines: one execution context per graph, one CUDA stream, and pinned host
    plus device buffers sized once for the profile's largest shapes, so a call allocates nothing but its outputs.
    One caller at a time (contexts and buffers are shared state)."""

    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        fp16: bool = False,
        max_batch: int = 8,
        log: Callable[[str], None] = print,
        max_samples: int = 64,
    ) -> None:
        self._allocs: list[tuple[Callable[[Any], Any], Any]] = []
        self._trt, self._cudart = trt, cudart = _import()
        paths = build_engines(bundle, fp16, max_batch, log, max_samples=max_samples)
        self._stream = _cuda(cudart.cudaStreamCreate())
        self._stream_handle = int(self._stream)  # what execute_async_v3 takes
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engines: list[Any] = []
        self._graphs = {g: self._load(paths[g], bundle.output_names(g)) for g in required_graphs(bundle.config)}
        self.graphs = frozenset(self._graphs)

    def _load(self, path: Path, outputs: list[str]) -> _Graph:
        trt = self._trt
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT cannot load {path}; delete {path.parent} and start again to rebuild it")
        self._engines.append(engine)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if missing := set(outputs) - set(names):
            raise RuntimeError(f"{path}: engine lacks outputs {sorted(missing)} of the manifest; delete it to rebuild")
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        g = _Graph(engine.create_execution_context(), [], [])
        for n in inputs:  # the largest admitted shapes size every buffer, outputs included, once
            shape = tuple(engine.get_tensor_shape(n))
            g.shapes[n] = tuple(engine.get_tensor_profile_shape(n, 0)[2]) if -1 in shape else shape
            g.context.set_input_shape(n, g.shapes[n])
        for n in inputs + outputs:
            dtype = np.dtype(NUMPY_DTYPES[engine.get_tensor_dtype(n).name])
            host = self._pinned(max(1, _volume(tuple(g.context.get_tensor_shape(n)))) * dtype.itemsize).view(dtype)
            on_host = engine.get_tensor_location(n) == trt.TensorLocation.HOST
            hptr = host.ctypes.data
            ptr = hptr if on_host else self._alloc(self._cudart.cudaMalloc, self._cudart.cudaFree, host.nbytes)
            g.context.set_tensor_address(n, ptr)
            (g.inputs if n in inputs else g.outputs).append(_Tensor(n, dtype, host, hptr, ptr, on_host))
        g.out_shapes = [tuple(g.context.get_tensor_shape(t.name)) for t in g.outputs]
        return g

    def _alloc(self, alloc: Callable[[int], Any], free: Callable[[Any], Any], nbytes: int) -> int:
        ptr = _cuda(alloc(nbytes))
        self._allocs.append((free, ptr))
        return int(ptr)

    def _pinned(self, nbytes: int) -> np.ndarray:
        """Page-locked host memory as a numpy array (copies to and from it can run asynchronously)."""
        ptr = self._alloc(self._cudart.cudaMallocHost, self._cudart.cudaFreeHost, nbytes)
        return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), np.uint8)  # type: ignore[call-overload]

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one graph; outputs in the manifest's order, shaped for these inputs (fresh arrays, safe to keep)."""
        g, cudart = self._graphs[graph], self._cudart
        to_dev, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        changed = False
        for t in g.inputs:
            if t.name not in feeds:
                raise ValueError(f"{graph}: missing input {t.name!r}")
            x = np.asarray(feeds[t.name])
            if x.shape != g.shapes[t.name]:  # shape inference only when a shape changes (not per generated token)
                if not g.context.set_input_shape(t.name, x.shape):
                    raise ValueError(
                        f"{graph}: input {t.name} shape {x.shape} is outside the engine's profile "
                        f"{[tuple(s) for s in g.context.engine.get_tensor_profile_shape(t.name, 0)]} "
                        "(min, opt, max); rebuild with a larger max_batch / max_samples"
                    )
                g.shapes[t.name], changed = x.shape, True
            np.copyto(t.host[: x.size].reshape(x.shape), x, casting="same_kind")
            if not t.on_host:
                _cuda(cudart.cudaMemcpyAsync(t.device, t.hptr, x.size * t.dtype.itemsize, to_dev, self._stream))
        if changed:
            g.out_shapes = [tuple(g.context.get_tensor_shape(t.name)) for t in g.outputs]
        if not g.context.execute_async_v3(self._stream_handle):
            raise RuntimeError(f"TensorRT failed to run {graph} (its log says why)")
        for t, shape in zip(g.outputs, g.out_shapes):
            if not t.on_host:
                nbytes = _volume(shape) * t.dtype.itemsize
                _cuda(cudart.cudaMemcpyAsync(t.hptr, t.device, nbytes, to_host, self._stream))
        _cuda(cudart.cudaStreamSynchronize(self._stream))
        return [t.host[: _volume(s)].reshape(s).copy() for t, s in zip(g.outputs, g.out_shapes)]

    def close(self) -> None:
        """Release contexts, engines, buffers and the stream (also done, best effort, on garbage collection)."""
        self._graphs, self._engines = {}, []
        while self._allocs:
            free, ptr = self._allocs.pop()
            free(ptr)
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
