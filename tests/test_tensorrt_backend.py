"""The TensorRT backend: pure parts (cache key, profiles, precision flags), its errors without TensorRT or a GPU,
its buffer and shape logic on a stand-in TensorRT (onnxruntime behind TensorRT's documented API) — all run on
any machine — and, marked `tensorrt`, the real thing on a GPU (skipped without one)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rtdecode.runtime import tensorrt_backend as trtb
from rtdecode.runtime.backends import create_backend
from rtdecode.runtime.bundle import Bundle
from rtdecode.runtime.tensorrt_backend import engine_key, profile_shapes, tensorrt_available

QUIET = {"log": lambda _: None}
ROOT = Path(__file__).resolve().parents[1]
HAVE_TRT = tensorrt_available()
NO_TRT = "needs TensorRT, cuda-python and a CUDA GPU (pip install 'rtdecode[tensorrt]' on a GPU machine)"


@pytest.fixture(scope="module")
def run_and_bundle(tiny_run, tiny_bundle, tmp_path_factory) -> tuple[Path, Bundle]:
    """The session's tiny run and bundle (frames, a behavior input and two targets: every kind of axis); the bundle
    copied, since engine caches are written inside it."""
    import shutil

    bundle = tmp_path_factory.mktemp("trt") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    return tiny_run, Bundle.load(bundle)


@pytest.fixture(scope="module")
def bundle(run_and_bundle) -> Bundle:
    return run_and_bundle[1]


@pytest.fixture(scope="module")
def feeds(run_and_bundle) -> dict[str, np.ndarray]:
    from rtdecode.export.onnx import example_batch
    from rtdecode.training.checkpoint import LoadedRun

    return example_batch(LoadedRun(run_and_bundle[0]), None, None)


# ---------------------------------------------------------------------------------------------- pure parts
def test_tensorrt_available_is_false_without_tensorrt(monkeypatch):
    assert isinstance(tensorrt_available(), bool)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert tensorrt_available() is False


def test_engine_key_separates_precision_versions_and_gpus():
    fp32 = engine_key("NVIDIA H100 80GB HBM3", (9, 0), "10.3.0", False)
    assert fp32 == "nvidia-h100-80gb-hbm3_sm90_trt10.3.0_fp32"
    keys = {
        fp32,
        engine_key("NVIDIA H100 80GB HBM3", (9, 0), "10.3.0", True),
        engine_key("NVIDIA H100 80GB HBM3", (9, 0), "10.4.0", False),
        engine_key("NVIDIA H100 80GB HBM3", (8, 9), "10.3.0", False),
        engine_key("NVIDIA L4", (9, 0), "10.3.0", False),
    }
    assert len(keys) == 5
    odd = engine_key("../GPU /x\\y", (8, 6), "11.0/../rc 1", True)
    assert "/" not in odd and "\\" not in odd and " " not in odd and not odd.startswith(".")


def test_precision_flags_follow_the_tensorrt_version():
    trt10 = SimpleNamespace(FP16="fp16", TF32="tf32")
    assert trtb._precision_flags(trt10, True, "10.3") == ("fp16", None)
    assert trtb._precision_flags(trt10, False, "10.3") == (None, "tf32")  # fp32 means fp32: TF32 off
    trt11 = SimpleNamespace(TF32="tf32")
    with pytest.raises(RuntimeError, match="no FP16 builder flag.*ONNX types"):
        trtb._precision_flags(trt11, True, "11.0")
    assert trtb._precision_flags(trt11, False, "11.0") == (None, "tf32")


def test_dimension_expressions_are_evaluated_not_executed():
    assert trtb._eval_dim("history + 1", {"history": 48}) == 49
    assert trtb._eval_dim("2*batch", {"batch": 3}) == 6
    assert trtb._eval_dim(16, {}) == 16
    for bad in ("__import__('os').getpid()", "history ** 2", "unknown + 1", "history +"):
        with pytest.raises(ValueError, match="cannot size dimension"):
            trtb._eval_dim(bad, {"history": 48})


def test_module_imports_without_torch_or_tensorrt():
    code = (
        "import sys; sys.modules['torch'] = None; import rtdecode.runtime.tensorrt_backend; "
        "assert 'tensorrt' not in sys.modules and 'cuda' not in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------- with a bundle
def test_profiles_cover_the_window_and_what_context_returns(bundle):
    w, max_batch = bundle.manifest["config"]["window"], 8
    decode = profile_shapes(bundle.manifest, "decode", max_batch)
    assert decode["ids"] == ((1, 1), (1, w["block_size"] // 2), (max_batch, w["block_size"]))
    assert decode["prev_ids"][2] == (max_batch, w["prev_block_size"])
    step = profile_shapes(bundle.manifest, "step", max_batch)
    assert "pos" not in step and step["ids"] == ((1, 1), (1, 1), (max_batch, w["block_size"]))
    c = bundle.manifest["cache"]
    assert step["past_k"][2] == (c["layers"], max_batch, c["heads"], c["slots"], c["head_dim"])
    assert any("samples" in d for i in bundle.manifest["graphs"]["decode"]["inputs"] for d in map(str, i["shape"]))
    # the step's memories (history, behavior) must admit what the context graph returns at its longest inputs
    import onnxruntime as ort

    longest = {"batch": 1, "history": w["prev_block_size"], "samples": 64}
    ctx_feeds = {
        i["name"]: np.ones([longest.get(d, d) for d in i["shape"]], i["dtype"])
        for i in bundle.manifest["graphs"]["context"]["inputs"]
    }
    sess = ort.InferenceSession(str(bundle.graph_path("context")), providers=["CPUExecutionProvider"])
    memories = [n for n in bundle.output_names("context") if n in step]
    assert any(n.startswith("hist") for n in memories) and any(n.startswith("beh_") for n in memories)
    for name, out in zip(bundle.output_names("context"), sess.run(None, ctx_feeds)):
        if name in step:
            assert out.shape[1:] == step[name][2][1:], name


def test_create_backend_without_tensorrt_names_the_install_fix(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match=r"pip install 'rtdecode\[tensorrt\]'.*NVIDIA's package index"):
        create_backend(bundle, "tensorrt", **QUIET)


def test_no_gpu_is_a_clear_error(bundle, monkeypatch):
    monkeypatch.setattr(trtb, "_import", lambda: (FakeTRT, FakeCudart(devices=0)))
    assert tensorrt_available() is False
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        create_backend(bundle, "tensorrt", **QUIET)


# ------------------------------------------------------- a stand-in TensorRT: onnxruntime behind TensorRT's API
class FakeCudart:
    """cuda-python's runtime calls on host memory; checks every copy stays inside its buffers."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, devices: int = 1) -> None:
        self.devices, self.buffers, self.allocations = devices, {}, 0

    def cudaGetDeviceCount(self):
        return (0, self.devices) if self.devices else (100, 0)  # 100 = cudaErrorNoDevice

    def cudaGetDevice(self):
        return 0, 0

    def cudaGetDeviceProperties(self, device):
        return 0, SimpleNamespace(name=b"Fake GPU 80GB\x00\x00", major=9, minor=0)

    def cudaMalloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buf)] = buf
        self.allocations += 1
        return 0, ctypes.addressof(buf)

    cudaMallocHost = cudaMalloc

    def cudaFree(self, ptr):
        del self.buffers[ptr]
        return (0,)

    cudaFreeHost = cudaFree

    def check(self, ptr: int, nbytes: int) -> None:
        assert any(a <= ptr and ptr + nbytes <= a + len(b) for a, b in self.buffers.items()), "copy out of bounds"

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self.check(dst, nbytes)
        self.check(src, nbytes)
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)


ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(int64)": "INT64", "tensor(bool)": "BOOL", "tensor(float16)": "HALF"}


class FakeEngine:
    def __init__(self, plan: bytes, cudart: FakeCudart) -> None:
        import onnxruntime as ort

        spec = json.loads(plan)
        self.profile, self.cudart = spec["profile"], cudart
        self.sess = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
        self.io = {v.name: (v, "INPUT") for v in self.sess.get_inputs()}
        self.io |= {v.name: (v, "OUTPUT") for v in self.sess.get_outputs()}
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, i):
        return list(self.io)[i]

    def get_tensor_mode(self, name):
        return self.io[name][1]

    def get_tensor_dtype(self, name):
        return SimpleNamespace(name=ORT_TYPES[self.io[name][0].type])

    def get_tensor_shape(self, name):
        return tuple(d if isinstance(d, int) else -1 for d in self.io[name][0].shape)

    def get_tensor_profile_shape(self, name, index):
        return self.profile[name]

    def get_tensor_location(self, name):
        return "DEVICE"

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.profile.get(name, (shape, None, shape))
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def _run(self, feeds):
        return dict(zip([o.name for o in self.engine.sess.get_outputs()], self.engine.sess.run(None, feeds)))

    def get_tensor_shape(self, name):
        if self.engine.io[name][1] == "INPUT":
            return self.shapes[name]
        # TensorRT infers shapes symbolically; the stand-in runs the graph (step position 0, lengths 1)
        dtypes = {n: trtb.NUMPY_DTYPES[self.engine.get_tensor_dtype(n).name] for n in self.shapes}
        return self._run({n: np.full(s, int(s != ()), dtypes[n]) for n, s in self.shapes.items()})[name].shape

    def execute_async_v3(self, stream):
        feeds = {}
        for n, shape in self.shapes.items():
            dtype = np.dtype(trtb.NUMPY_DTYPES[self.engine.get_tensor_dtype(n).name])
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self.engine.cudart.check(self.addresses[n], nbytes)
            raw = (ctypes.c_uint8 * nbytes).from_address(self.addresses[n])
            feeds[n] = np.frombuffer(raw, dtype).reshape(shape).copy()
        for n, y in self._run(feeds).items():
            y = np.ascontiguousarray(y)
            self.engine.cudart.check(self.addresses[n], y.nbytes)
            ctypes.memmove(self.addresses[n], y.ctypes.data, y.nbytes)
        return True


class FakeTRT:
    __version__ = "10.99.0"
    TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    TensorLocation = SimpleNamespace(DEVICE="DEVICE", HOST="HOST")
    cudart: FakeCudart

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine:
            return FakeEngine(plan, FakeTRT.cudart)


@pytest.fixture()
def fake_trt(monkeypatch):
    """TensorRT and cuda-python replaced by the stand-ins; returns the list of (graph file, profile) built."""
    cudart = FakeCudart()
    FakeTRT.cudart = cudart
    built: list[tuple[str, Any]] = []

    def build(trt, onnx_path, profile, fp16):
        built.append((onnx_path.name, profile))
        return json.dumps({"onnx": str(onnx_path), "profile": profile}).encode()

    monkeypatch.setattr(trtb, "_import", lambda: (FakeTRT, cudart))
    monkeypatch.setattr(trtb, "_build", build)
    return SimpleNamespace(cudart=cudart, built=built)


def test_engines_are_cached_and_rebuilt_only_when_stale(bundle, fake_trt):
    first = trtb.build_engines(bundle, max_batch=4, **QUIET)
    assert {p.parent.name for p in first.values()} == {"fake-gpu-80gb_sm90_trt10.99.0_fp32"}
    assert len(fake_trt.built) == 3 and all(p.exists() for p in first.values())
    assert trtb.build_engines(bundle, max_batch=4, **QUIET) == first and len(fake_trt.built) == 3
    trtb.build_engines(bundle, max_batch=6, **QUIET)  # a new profile: rebuilt in place
    assert len(fake_trt.built) == 6
    first["step"].with_suffix(".json").write_text("{not json")
    trtb.build_engines(bundle, max_batch=6, **QUIET)
    assert len(fake_trt.built) == 7 and fake_trt.built[-1][0] == "step.onnx"


def test_backend_matches_onnxruntime_and_allocates_once(bundle, feeds, fake_trt):
    from rtdecode.runtime.decoder import Decoder

    ref = create_backend(bundle, "onnxruntime", threads=1)
    trt = create_backend(bundle, "tensorrt", max_batch=4, **QUIET)
    assert trt.name == "tensorrt"
    allocations = fake_trt.cudart.allocations
    for B in (4, 1, 4):  # shapes change between calls: buffers are reused, outputs reshaped
        f = {k: v[:B] for k, v in feeds.items()}
        for graph in ("decode", "context"):
            names = bundle.input_names(graph)
            want, got = ref.run(graph, {n: f[n] for n in names}), trt.run(graph, {n: f[n] for n in names})
            assert [g.shape for g in got] == [w.shape for w in want]
            for w, g in zip(want, got):
                np.testing.assert_allclose(g, w, atol=1e-6)
    with pytest.raises(ValueError, match="outside the engine's profile"):
        trt.run("decode", {n: np.repeat(feeds[n], 2, axis=0) for n in bundle.input_names("decode")})  # batch 8 > 4
    a = Decoder(bundle, backend=ref).generate(feeds, temperature=0.0, max_tokens=12)
    b = Decoder(bundle, backend=trt).generate(feeds, temperature=0.0, max_tokens=12)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(x, y)
    assert fake_trt.cudart.allocations == allocations
    trt.close()
    assert not fake_trt.cudart.buffers


# ---------------------------------------------------------------------------------------------- real TensorRT
@pytest.fixture(scope="module")
def trt_backend(bundle):
    if not HAVE_TRT:
        pytest.skip(NO_TRT)
    backend = create_backend(bundle, "tensorrt", max_batch=4, **QUIET)
    yield backend
    backend.close()


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason=NO_TRT)
def test_real_engines_are_cached(bundle, trt_backend):
    paths = trtb.build_engines(bundle, max_batch=4, **QUIET)
    mtimes = {g: p.stat().st_mtime_ns for g, p in paths.items()}
    assert all(p.parent.name.endswith("_fp32") for p in paths.values())
    assert {g: p.stat().st_mtime_ns for g, p in trtb.build_engines(bundle, max_batch=4, **QUIET).items()} == mtimes


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason=NO_TRT)
@pytest.mark.parametrize("graph", ["decode", "context"])
def test_real_engine_matches_onnxruntime_fp32(bundle, feeds, trt_backend, graph):
    ref = create_backend(bundle, "onnxruntime", threads=1)
    for B in (4, 1):
        f = {n: feeds[n][:B] for n in bundle.input_names(graph)}
        for w, g in zip(ref.run(graph, f), trt_backend.run(graph, f)):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, atol=1e-3, rtol=0)


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason=NO_TRT)
def test_real_step_and_greedy_generation_match_onnxruntime(bundle, feeds, trt_backend):
    from rtdecode.runtime.decoder import Decoder

    ref = create_backend(bundle, "onnxruntime", threads=1)
    ctx_out = ref.run("context", {n: feeds[n] for n in bundle.input_names("context")})
    ctx = dict(zip(bundle.output_names("context"), ctx_out))
    c, B = bundle.manifest["cache"], feeds["ids"].shape[0]
    shape = (c["layers"], B, c["heads"], c["slots"], c["head_dim"])
    past = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    step = {
        "ids": feeds["ids"][:, :2],
        "dts": feeds["dts"][:, :2],
        "pos": np.array(3, np.int64),
        "past_k": past,
        "past_v": past[::-1].copy(),
        **ctx,
    }
    for w, g in zip(ref.run("step", step), trt_backend.run("step", step)):
        np.testing.assert_allclose(g, w, atol=1e-3, rtol=0)
    a = Decoder(bundle, backend=ref).generate(feeds, temperature=0.0, max_tokens=16)
    b = Decoder(bundle, backend=trt_backend).generate(feeds, temperature=0.0, max_tokens=16)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason=NO_TRT)
def test_real_engine_refuses_shapes_outside_its_profile(bundle, feeds, trt_backend):
    f = {n: np.repeat(feeds[n], 2, axis=0) for n in bundle.input_names("decode")}  # batch 8 > max_batch 4
    with pytest.raises(ValueError, match="outside the engine's profile"):
        trt_backend.run("decode", f)
