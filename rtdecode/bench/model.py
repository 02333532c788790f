"""`rtdecode bench model BUNDLE`: per-window decode latency and generation speed of a bundle, per backend.

Measures, in one run so ratios are comparable on a noisy machine:
* decode: one closed window at a time (batch 1), p50/p99/p99.9 ms, per backend (onnxruntime; torch eager when
  the source run and torch are present);
* generation of one window: ms per window and per token with the KV cache (Decoder.generate, greedy) and by
  re-running the whole prefix for every token (the release's way: the step graph fed the full prefix with an
  empty cache), same tokens;
* the floors of this machine for this model: FLOPs per window / measured fp32 GEMM rate, and weight bytes /
  measured memory bandwidth (what one generated token must at least read).
Windows are real when --data is given (the held-out windows of that session), else synthetic with the typical
token count of the simulated session.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from rtdecode.runtime import Bundle, Decoder
from rtdecode.runtime.backends import Backend, create_backend

__all__ = ["bench_model", "percentiles"]


def percentiles(ms: np.ndarray) -> dict[str, float]:
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(ms.max()), "n": int(ms.size)}


def synthetic_feeds(bundle: Bundle, n_spikes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One window of `n_spikes` random spikes (token order) and a history of the same density."""
    w, v = bundle.window, bundle.vocab
    from rtdecode.data.tokenizer import pack_tokens, token_inputs

    def window(n: int, bins: int, slots: int, sos: bool, keep: Any) -> Any:
        offs = np.sort(rng.integers(0, bins, n))
        return pack_tokens(rng.integers(0, v.n_neurons, n), offs, np.array([n]), slots, v, sos_eos=sos, keep=keep)

    cur = window(min(n_spikes, w.max_spikes), w.bins_per_window, w.block_size, True, "first")
    n_prev = min(int(n_spikes * w.prev_bins / w.bins_per_window), w.prev_block_size)
    hist = window(n_prev, w.prev_bins, w.prev_block_size, False, "last")
    feeds = token_inputs(cur, hist)
    fr = bundle.frames
    if fr.enabled:
        feeds["frames"] = rng.standard_normal((1, fr.n_frames, fr.height, fr.width)).astype(np.float32)
    for spec in bundle.behavior_inputs:
        feeds[f"in_{spec.name}"] = rng.standard_normal((1, 4)).astype(np.float32)
        feeds[f"in_{spec.name}_age"] = rng.integers(0, 5, (1, 4))
        feeds[f"in_{spec.name}_valid"] = np.ones((1, 4), bool)
    return feeds


def _time(fn: Callable[[], Any], repeats: int, warmup: int = 5) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def _no_cache_generate(decoder: Decoder, feeds: dict[str, np.ndarray], max_tokens: int) -> int:
    """Greedy generation re-running the whole prefix through the step graph (empty cache) for every token.

    Same grammar as Decoder.generate (neuron or EOS; offsets in the window and non-decreasing), so with greedy
    sampling both produce the same tokens and the timing compares like with like.
    """
    b, v, n_bins = decoder.backend, decoder.vocab, decoder.window.bins_per_window
    ctx = dict(zip(decoder._context_outputs, b.run("context", {n: feeds[n] for n in decoder._context_inputs})))
    past_k, past_v = decoder._cache(1)
    id_allowed = np.zeros(v.id_size, bool)
    id_allowed[: v.n_neurons] = True
    id_allowed[v.id_eos] = True
    dt_index = np.arange(v.dt_size)
    ids, dts, last = [v.id_sos], [v.dt_sos], 0
    for _ in range(max_tokens):
        id_l, dt_l, _, _ = b.run(
            "step",
            {
                "ids": np.array([ids], np.int64),
                "dts": np.array([dts], np.int64),
                "pos": np.array(0, np.int64),
                "past_k": past_k,
                "past_v": past_v,
                **ctx,
            },
        )
        nxt = int(np.where(id_allowed, id_l[0], -np.inf).argmax())
        if nxt == v.id_eos:
            break
        last = int(np.where((dt_index >= last) & (dt_index < n_bins), dt_l[0], -np.inf).argmax())
        ids.append(nxt)
        dts.append(last)
    return len(ids) - 1


def machine_floors(bundle: Bundle, tokens: int) -> dict[str, float]:
    """FLOPs per window / GEMM rate and weight bytes / bandwidth, both measured now with numpy."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    t = _time(lambda: a @ a, 10, 2)
    gflops = 2 * 1024**3 / (np.median(t) / 1e3) / 1e9
    big = np.ones(64 * 1024 * 1024 // 4, np.float32)
    t = _time(lambda: big.sum(), 10, 2)
    gbps = big.nbytes / (np.median(t) / 1e3) / 1e9
    weight_bytes = sum(bundle.graph_path(g).stat().st_size for g in ("step",))
    flops = 2 * (weight_bytes / 4) * tokens  # every weight used once per token (upper-ish estimate)
    return {
        "gemm_gflops": gflops,
        "bandwidth_gbps": gbps,
        "weights_mb": weight_bytes / 1e6,
        "decode_floor_ms": flops / (gflops * 1e9) * 1e3,
        "token_floor_ms": weight_bytes / (gbps * 1e9) * 1e3,
    }


def _decode_next(decoder: Decoder, windows: list[dict[str, np.ndarray]], counter: Iterator[int]) -> None:
    """Decode the next of `windows` in turn (a timed call)."""
    decoder.decode(windows[next(counter) % len(windows)])


def _backend(bundle: Bundle, name: str, options: dict[str, Any]) -> Backend:
    """A runtime backend by name, or "torch": the source run in PyTorch eager (needs torch and the run)."""
    if name == "torch":
        from rtdecode.export.torch_backend import TorchBackend

        return TorchBackend(bundle)
    return create_backend(bundle, name, **options)


def bench_model(
    bundle_dir: str,
    *,
    backends: list[str],
    repeats: int = 200,
    gen_windows: int = 5,
    spikes: int = 66,
    threads: int = 0,
    feeds: list[dict[str, np.ndarray]] | None = None,
    sweep: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; return every number (also what the CLI prints)."""
    bundle = Bundle.load(bundle_dir)
    rng = np.random.default_rng(0)
    windows = feeds or [synthetic_feeds(bundle, spikes, rng) for _ in range(8)]
    result: dict[str, Any] = {"bundle": str(bundle_dir), "spikes_per_window": spikes, "decode": {}, "generate": {}}
    for name in backends:
        try:
            opts = {"threads": threads} if name.startswith("onnxruntime") and threads else {}
            decoder = Decoder(bundle, _backend(bundle, name, opts))
        except Exception as e:  # a missing backend is reported, not fatal
            result["decode"][name] = {"error": str(e)}
            log(f"{name}: unavailable ({e})")
            continue
        i = iter(range(10**9))
        ms = _time(functools.partial(_decode_next, decoder, windows, i), repeats)
        result["decode"][name] = percentiles(ms)
        d = result["decode"][name]
        log(f"{name:12s} decode, batch 1: p50 {d['p50']:.2f} ms  p99 {d['p99']:.2f} ms  p99.9 {d['p99.9']:.2f} ms")
        if name.startswith("onnxruntime"):
            result["generate"][name] = _bench_generate(decoder, windows[:gen_windows], spikes, log)
    if sweep:
        result["settings"] = _sweep_settings(bundle, windows, max(50, repeats // 4), log)
    tokens = int(windows[0]["lengths"][0])
    result["floors"] = machine_floors(bundle, tokens)
    f = result["floors"]
    log(
        f"floors here: GEMM {f['gemm_gflops']:.0f} GFLOP/s, memory {f['bandwidth_gbps']:.1f} GB/s, weights "
        f"{f['weights_mb']:.1f} MB -> decode >= {f['decode_floor_ms']:.2f} ms/window, generation >= "
        f"{f['token_floor_ms']:.3f} ms/token"
    )
    return result


def _sweep_settings(
    bundle: Bundle, windows: list[dict[str, np.ndarray]], repeats: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """onnxruntime decode latency under each latency-relevant setting, measured in one run."""
    rows = []
    for threads in (1, 2):
        for spinning in (True, False):
            for optimization in ("all", "basic"):
                decoder = Decoder(
                    bundle,
                    create_backend(
                        bundle, "onnxruntime", threads=threads, spinning=spinning, optimization=optimization
                    ),
                )
                i = iter(range(10**9))
                p = percentiles(_time(functools.partial(_decode_next, decoder, windows, i), repeats))
                rows.append({"threads": threads, "spinning": spinning, "optimization": optimization, **p})
                log(
                    f"  onnxruntime threads={threads} spinning={'on ' if spinning else 'off'} opt={optimization:5s}: "
                    f"p50 {p['p50']:.2f} ms  p99 {p['p99']:.2f} ms"
                )
    return rows


def _bench_generate(
    decoder: Decoder, windows: list[dict[str, np.ndarray]], spikes: int, log: Callable[[str], None]
) -> dict[str, float]:
    cached_ms, cached_tokens, full_ms, full_tokens = [], 0, [], 0
    for feeds in windows:
        t0 = time.perf_counter()
        ids, _ = decoder.generate(feeds, temperature=0.0, max_tokens=spikes)
        cached_ms.append((time.perf_counter() - t0) * 1e3)
        cached_tokens += ids[0].size + 1
        t0 = time.perf_counter()
        full_tokens += _no_cache_generate(decoder, feeds, spikes) + 1
        full_ms.append((time.perf_counter() - t0) * 1e3)
    out = {
        "cached_ms_per_window": float(np.mean(cached_ms)),
        "cached_ms_per_token": float(np.sum(cached_ms) / cached_tokens),
        "full_ms_per_window": float(np.mean(full_ms)),
        "full_ms_per_token": float(np.sum(full_ms) / full_tokens),
        "tokens_per_window": cached_tokens / len(windows),
    }
    out["speedup"] = out["full_ms_per_window"] / out["cached_ms_per_window"]
    log(
        f"{'':12s} generate one window ({out['tokens_per_window']:.0f} tokens): KV cache {out['cached_ms_per_window']:.1f} ms "
        f"({out['cached_ms_per_token']:.2f} ms/token) vs full re-forward {out['full_ms_per_window']:.1f} ms "
        f"({out['full_ms_per_token']:.2f} ms/token): {out['speedup']:.1f}x"
    )
    return out
