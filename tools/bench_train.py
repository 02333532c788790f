"""Neuroformer speed on the simulated session: training throughput, per-window forward latency, generation.

Measured for each config in --configs (built-in name or TOML path), on CPU and also on the GPU with --device auto
when CUDA is present (synchronised before every clock read):
  * training: windows/s of full optimiser steps (forward, losses, backward, grad clip, AdamW) on length-grouped,
    trimmed batches as `rtdecode train` draws them (on GPU with the config's train.amp, as it does), after
    --warmup steps; and the share of step time outside the model (sampler, `WindowData.batch`, `to_torch`).
  * forward latency: `model.eval()`, one held-out window, no grad, whole teacher-forced forward: p50/p99.
  * generation: greedy generation of held-out windows with the KV cache (`generate_window`) and without
    (`generate_window_no_cache` below re-runs the token stacks on the whole prefix per token; the context is
    encoded once per window in both, so the speed-up is the cache's alone). Greedy is deterministic: both must
    emit identical tokens, and the tool checks it.
Caveats:
  * Speed only: latency and generation use seeded random weights. Those pick EOS after a few tokens, so unless
    --keep-eos is given the EOS logit is pushed down (id_head bias -1e4, both paths alike) and generation runs
    to each window's true spike count, the cap both paths get: realistic window lengths.
  * A shared 2-core machine is noisy (+/-20%): compare figures within one run. Beside other busy processes,
    --threads 2 can run many times slower than 1 (oversubscription); the tool warns when it sees them.
  * The published figures beside ours (the Neuroformer paper and release) come from *similar*, not identical, dimensions, on an
    Intel AVX-512 machine of this kind (check `lscpu`) and a ~53-spike/window session padded to the block sizes
    (rtdecode trims). "small" also keeps 0.25 s of history (~340 tokens) where that run kept 100 tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtdecode.core.config import RunConfig, load_config
from rtdecode.core.normalisation import Normalisation
from rtdecode.core.window_data import WindowData, make_split
from rtdecode.data.budget import budget_report
from rtdecode.runtime.sampling import WindowSampler
from rtdecode.sim.simulator import SimulationConfig, simulate
from rtdecode.training.batches import LengthGroupedBatches
from rtdecode.training.data import to_torch
from rtdecode.training.generate import SamplingConfig, generate_window
from rtdecode.training.losses import compute_losses
from rtdecode.training.model import Context, Neuroformer

# The published release on this kind of machine (Intel, 2 threads, torch 2.13 CPU), from the last table of
# Published Neuroformer figures: (low, high) ranges. "small" ~ its d128 / 2-layer run, "release" ~ its shipped
# d256 / 6-layer config: similar, not identical, dimensions.
RELEASE = {
    "small": {
        "train_wps": (39, 42),
        "fwd_p50_ms": (10, 12),
        "fwd_p99_ms": (13, 15),
        "gen_s_per_window": (0.72, 0.83),
        "gen_ms_per_token": (12, 14),
    },
    "release": {
        "train_wps": (3.0, 3.3),
        "fwd_p50_ms": (88, 94),
        "fwd_p99_ms": (136, 320),
        "gen_s_per_window": (8.0, 9.4),
        "gen_ms_per_token": (81, 95),
    },
}


def clock(dev: torch.device) -> float:
    """time.perf_counter() once the device has finished its queued work (CUDA runs asynchronously)."""
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def bench_training(
    model: Neuroformer,
    data: WindowData,
    sampler: LengthGroupedBatches,
    norm: Normalisation,
    dev: torch.device,
    steps: int,
    warmup: int,
) -> dict[str, float]:
    """Full optimiser steps; returns windows/s and the share of the time spent building batches."""
    cfg, t = model.cfg, model.cfg.train
    opt = model.configure_optimizer(t.lr, t.betas, t.weight_decay)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp) if dev.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    model.train()
    t_data = t_model = 0.0
    windows = 0
    for step in range(warmup + steps):
        a = clock(dev)
        idx = sampler.next()
        batch = to_torch(data.batch(idx, norm), dev)
        b = clock(dev)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = compute_losses(model(batch), batch, cfg, model.vocab)["total"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(opt)
        scaler.update()
        c = clock(dev)
        if step >= warmup:
            t_data, t_model, windows = t_data + b - a, t_model + c - b, windows + idx.size
    total = t_data + t_model
    return {"train_wps": windows / total, "data_share": t_data / total, "train_steps": steps}


@torch.no_grad()
def bench_forward(model: Neuroformer, batches: list[dict[str, Any]], dev: torch.device) -> dict[str, float]:
    """Latency of one whole-window forward at batch 1, over pre-built batches (a few untimed first)."""
    model.eval()
    for b in batches[:3]:  # warm-up
        model(b)
    ms = []
    for b in batches:
        a = clock(dev)
        model(b)
        ms.append(1e3 * (clock(dev) - a))
    p50, p99 = np.percentile(ms, [50, 99])
    return {"fwd_p50_ms": float(p50), "fwd_p99_ms": float(p99)}


@torch.no_grad()
def generate_window_no_cache(model: Neuroformer, ctx: Context, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """`generate_window`'s greedy loop for one window (B = 1), re-running `forward_tokens` on the whole prefix
    for every token instead of feeding one token through a KV cache; the tokens are picked by the same grammar
    and sampler (`rtdecode.runtime.sampling`). Returns (neuron ids, time offsets)."""
    w = model.cfg.window
    dev = model.id_head.weight.device
    sampler = WindowSampler(model.vocab, w.bins_per_window, 1, temperature=0.0)
    first_ids, first_dts = sampler.first_tokens()
    ids, dts = torch.from_numpy(first_ids).to(dev), torch.from_numpy(first_dts).to(dev)  # (1, t): the prefix so far
    for _ in range(min(max_tokens or w.max_spikes, w.max_spikes)):  # same cap rule as generate_window
        id_logits, dt_logits = model.token_logits(model.forward_tokens(ids, dts, ctx)[:, -1])  # (1, V)
        next_ids, next_dts = sampler.step(id_logits.float().cpu().numpy(), dt_logits.float().cpu().numpy())
        if sampler.finished:
            break
        ids = torch.cat([ids, torch.from_numpy(next_ids).to(dev)], 1)
        dts = torch.cat([dts, torch.from_numpy(next_dts).to(dev)], 1)
    out_ids, out_dts = sampler.windows()
    return out_ids[0], out_dts[0]


def bench_generation(
    model: Neuroformer, data: WindowData, windows: np.ndarray, norm: Normalisation, dev: torch.device
) -> dict[str, Any]:
    """Greedy generation of `windows`, cached vs uncached: ms per window and per token, and token equality."""
    model.eval()
    greedy = SamplingConfig(temperature=0.0, use_count=False)  # EOS-stopped, as the uncached reference
    t_cache = t_full = 0.0
    tokens, identical = 0, True
    for w in windows:
        batch = to_torch(data.batch(np.array([w]), norm), dev)
        cap = int(data.tokens.window_counts[w])  # the window's true spike count (generate_window caps at max_spikes)
        a = clock(dev)
        ids, dts = generate_window(model, model.encode_context(batch), greedy, max_tokens=cap)
        b = clock(dev)
        ids_nc, dts_nc = generate_window_no_cache(model, model.encode_context(batch), cap)
        c = clock(dev)
        t_cache, t_full, tokens = t_cache + b - a, t_full + c - b, tokens + ids[0].size
        identical &= np.array_equal(ids[0], ids_nc) and np.array_equal(dts[0], dts_nc)
    n = max(len(windows), 1)
    return {
        "gen_cached_ms": 1e3 * t_cache / n,
        "gen_uncached_ms": 1e3 * t_full / n,
        "gen_cached_ms_per_token": 1e3 * t_cache / max(tokens, 1),
        "gen_uncached_ms_per_token": 1e3 * t_full / max(tokens, 1),
        "gen_speedup": t_full / max(t_cache, 1e-9),
        "gen_tokens_per_window": tokens / n,
        "tokens_identical": bool(identical),
    }


def run_config(name: str, session: Any, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    cfg: RunConfig = load_config(name)
    data = WindowData(session, cfg)
    split = make_split(data, cfg)
    cfg = dataclasses.replace(cfg, window=budget_report(data.tokens, split.train, cfg.window).window)  # as `train` does
    data = data.with_budgets(cfg)
    norm = data.normalisation(split.train)
    counts = data.tokens.window_counts
    torch.manual_seed(args.seed)  # seeded random weights: the same model in every run
    model = Neuroformer(cfg, data.tokens.vocab).to(dev)
    res: dict[str, Any] = {"config": name, "device": str(dev), "params_m": model.n_params() / 1e6}
    print(
        f"\n[{name} on {dev}] {res['params_m']:.2f} M parameters, d_model {cfg.model.d_model}, "
        f"block {cfg.window.block_size}/{cfg.window.prev_block_size}"
    )
    steps = args.release_steps if name == "release" else args.steps
    sampler = LengthGroupedBatches(split.train, counts, args.batch, cfg.train.seed)
    res.update(bench_training(model, data, sampler, norm, dev, steps, args.warmup))
    print(
        f"  training: {res['train_wps']:.1f} windows/s (batch {args.batch}, {steps} steps), "
        f"{100 * res['data_share']:.1f}% of the time outside the model (target < 10%)"
    )

    torch.manual_seed(args.seed)  # training moved the weights: back to the same seeded random ones
    model = Neuroformer(cfg, data.tokens.vocab).to(dev)
    if not args.keep_eos:
        with torch.no_grad():
            model.id_head.bias[model.vocab.id_eos] = -1e4
    held = split.test if split.test.size else split.val
    lat = np.resize(held, args.latency_windows)  # repeats windows when the held-out split is short
    res.update(bench_forward(model, [to_torch(data.batch(np.array([w]), norm), dev) for w in lat], dev))
    print(
        f"  forward, batch 1: p50 {res['fwd_p50_ms']:.2f} ms, p99 {res['fwd_p99_ms']:.2f} ms "
        f"({args.latency_windows} windows)"
    )
    # generate_window treats max_tokens=0 as "no cap", so windows without spikes are left out
    spiking = held[counts[held] > 0]
    gen = spiking[np.linspace(0, spiking.size - 1, min(args.gen_windows, spiking.size)).astype(np.int64)]
    res.update(bench_generation(model, data, gen, norm, dev))
    print(
        f"  generation ({gen.size} windows, {res['gen_tokens_per_window']:.1f} tokens/window, greedy"
        f"{'' if args.keep_eos else ', EOS suppressed'}): cached {res['gen_cached_ms']:.1f} ms/window "
        f"({res['gen_cached_ms_per_token']:.2f} ms/token), uncached {res['gen_uncached_ms']:.1f} ms/window "
        f"({res['gen_uncached_ms_per_token']:.2f} ms/token), speed-up {res['gen_speedup']:.1f}x"
    )
    print(f"  tokens identical: {res['tokens_identical']}")
    ref = RELEASE.get(name)
    if ref is not None and dev.type == "cpu":
        mid = {k: (lo + hi) / 2 for k, (lo, hi) in ref.items()}
        res["vs_release"] = {
            "train": res["train_wps"] / mid["train_wps"],
            "forward_p50": mid["fwd_p50_ms"] / res["fwd_p50_ms"],
            "generation_per_window": 1e3 * mid["gen_s_per_window"] / res["gen_cached_ms"],
            "generation_per_token": mid["gen_ms_per_token"] / res["gen_cached_ms_per_token"],
        }
    return res


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'config':12s} {'device':6s} {'params M':>8s} {'train w/s':>10s} {'data %':>7s} {'fwd p50/p99 ms':>15s} "
        f"{'gen ms/window cached / uncached':>32s} {'speed-up':>9s}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        print(
            f"{Path(r['config']).stem[:12]:12s} {r['device']:6s} {r['params_m']:8.2f} {r['train_wps']:10.1f} "
            f"{100 * r['data_share']:7.1f} {r['fwd_p50_ms']:7.2f}/{r['fwd_p99_ms']:<7.2f} "
            f"{r['gen_cached_ms']:15.1f} / {r['gen_uncached_ms']:<14.1f} {r['gen_speedup']:8.1f}x"
        )
        if "vs_release" not in r:
            continue
        v = r["vs_release"]
        ref = {k: f"{lo:g}-{hi:g}" for k, (lo, hi) in RELEASE[r["config"]].items()}
        print(
            f"{'  published':28s} {ref['train_wps']:>10s} {'':7s} {ref['fwd_p50_ms'] + '/' + ref['fwd_p99_ms']:>15s} "
            f"{'(uncached, s) ' + ref['gen_s_per_window']:>32s}"
        )
        print(
            f"  ratio: training {v['train']:.1f}x, forward p50 {v['forward_p50']:.1f}x, generation "
            f"{v['generation_per_window']:.1f}x per window ({v['generation_per_token']:.1f}x per token) "
            f"faster than published (aims: >= 10x, >= 10x, >= 50x)"
        )
    print(
        "published: the Neuroformer release at similar (not identical) dimensions; "
        "its generation re-ran the forward per token"
    )


def busy_cores(seconds: float = 0.5) -> float | None:
    """Cores other processes keep busy now, from /proc/stat (the load average lags by minutes); None off Linux."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # all jiffies, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--configs",
        nargs="+",
        default=["small", "release"],
        help="built-in config names or TOML paths (default: %(default)s)",
    )
    p.add_argument("--duration", type=float, default=120.0, help="simulated seconds (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps (default: %(default)s)")
    p.add_argument("--release-steps", type=int, default=5, help="--steps of 'release' (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps first (default: %(default)s)")
    p.add_argument("--batch", type=int, default=32, help="windows per training step (default: %(default)s)")
    p.add_argument("--latency-windows", type=int, default=100, help="forward latency samples (default: %(default)s)")
    p.add_argument("--gen-windows", type=int, default=10, help="windows generated (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto = CPU, plus the GPU when CUDA is available (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the random weights (default: %(default)s)")
    p.add_argument("--keep-eos", action="store_true", help="let the random model emit EOS (short generations)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    args = p.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA GPU; use --device cpu (or auto, which adds the GPU if present)")
    torch.set_num_threads(args.threads)
    devices = [torch.device("cuda")] if args.device == "cuda" else [torch.device("cpu")]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    busy = busy_cores()  # before our own work starts
    session = simulate(SimulationConfig(duration=args.duration))
    print(
        f"session: {session.n_neurons} neurons, {session.duration:.0f} s, {session.n_spikes:,} spikes "
        f"({session.n_spikes / session.duration * 0.05:.0f} per 50-ms window); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; untrained (random) weights: speed only"
    )
    cores = os.cpu_count() or 1
    if busy is not None and args.device != "cuda" and busy + args.threads > cores + 0.25:
        print(
            f"WARNING: other processes keep {busy:.1f} of {cores} cores busy, so figures are slow and noisy"
            + ("; oversubscribed threads can run many times slower: try --threads 1" if args.threads > 1 else "")
        )
    results = [run_config(name, session, dev, args) for dev in devices for name in args.configs]
    print_table(results)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "busy_cores_before": busy,
                    "torch": torch.__version__,
                    "results": results,
                    "release_reference": RELEASE,
                },
                f,
                indent=2,
            )
        os.replace(tmp, args.json)  # never leave a half-written file behind


if __name__ == "__main__":
    main()
