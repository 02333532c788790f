"""Rig scale: cost and latency against spikes per window, with nothing truncated.

For each point (neurons x base rate of `rtdecode simulate`): simulate a training and a serving session of the same
circuit, train the config (budgets derived from the data) for --steps steps and time it, export the run, then
`rtdecode bench serve` the serving session at real time in both daemon modes (window at a time, streaming), one
daemon after the other. Prints one table row per point and writes every figure to --out/scale.json.

Beside each measurement, a cost model: FLOPs per spike token in each block (projections 8 d^2 for a causal block,
4 d^2 for a cross block, MLP 4 r d^2 at mlp_ratio r; attention 4 d per key attended: half the window's tokens on
average for the causal blocks, or the attention span if shorter, the history's tokens or its latent summaries for
the history block, the frame patches for the frame block), FLOPs per
second of data at the measured spike rate, and the floor that implies at this machine's one-thread matmul rate
(measured here on (100 x d) @ (d x 4d), the shape of a streamed quantum).
Caveats: the models train for a few steps only (latency does not depend on the weights); producer, subscriber and
daemon share this machine's cores; a shared machine is noisy (+/-20%): compare rows of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.bench.serve import bench_serve
from rtdecode.core.config import RunConfig, load_config
from rtdecode.core.window_data import WindowData, make_split
from rtdecode.export.onnx import export_bundle
from rtdecode.io import save_session
from rtdecode.sim.simulator import SimulationConfig, simulate
from rtdecode.training.checkpoint import LoadedRun
from rtdecode.training.train import train

POINTS = "1000x1.5,1000x3.2,1000x5,1000x7.5,2000x5.5"  # neurons x base rate (Hz): ~2k to ~22k spikes/s


def matmul_gflops(d: int, n: int = 100, repeats: int = 2000) -> float:
    """One-thread fp32 GFLOP/s of (n x d) @ (d x 4d) in numpy (threadpool limited by the caller's environment)."""
    a, b = np.random.rand(n, d).astype(np.float32), np.random.rand(d, 4 * d).astype(np.float32)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n * d * 4 * d * repeats / (time.perf_counter() - t0) / 1e9


def cost_model(cfg: RunConfig, spikes_per_window: float, history: float, frame_tokens: int) -> dict[str, float]:
    """FLOPs per spike token, per block kind, at these mean token counts (see the module docstring)."""
    d, m = cfg.model.d_model, cfg.model
    causal = m.feature_layers + m.fused_layers
    read = spikes_per_window / 2 if m.attention_span == 0 else min(m.attention_span, spikes_per_window / 2)
    mlp = 4 * m.mlp_ratio * d * d
    per_block = {
        "causal": 8 * d * d + mlp + 4 * d * read,
        "history": 4 * d * d + mlp + 4 * d * (m.history_latents or history),
        "frame": 4 * d * d + mlp + 4 * d * frame_tokens,
    }
    total = (
        causal * per_block["causal"]
        + m.history_layers * per_block["history"]
        + (m.frame_cross_layers * per_block["frame"] if cfg.frames.enabled else 0)
    )
    return {**{f"flop_per_token_{k}": v for k, v in per_block.items()}, "flop_per_token": total}


def measure_point(
    neurons: int, base_rate: float, cfg: RunConfig, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    tag = f"{neurons}x{base_rate:g}"
    sim = SimulationConfig(n_neurons=neurons, base_rate=base_rate, duration=args.train_s, seed=args.seed)
    save_session(simulate(sim), work / f"{tag}-train.npz")
    serve_session = simulate(dataclasses.replace(sim, duration=args.serve_s))
    d = cfg.to_dict()
    d["train"].update(max_steps=args.steps, eval_every=args.steps, eval_windows=16, max_minutes=0.0)
    cfg = RunConfig.from_dict(d)
    result = train(cfg, work / f"{tag}-train.npz", work / f"{tag}-run", log=lambda _: None)
    run = LoadedRun(result.run_dir)
    data = WindowData(serve_session, run.config)
    export_bundle(
        result.run_dir,
        work / f"{tag}-bundle",
        data=data,
        windows=make_split(data, run.config).test[:2],
        log=lambda _: None,
    )
    served = bench_serve(
        work / f"{tag}-bundle",
        serve_session,
        speeds=(1.0,),
        threads=args.threads,
        modes=("window", "streaming"),
        block=args.block,
        out_dir=work / f"{tag}-serve",
        log=print,
    )
    counts = data.tokens.window_counts
    hist = data.tokens.window_ptr[:-1] - data.tokens.history_ptr
    fr = run.config.frames
    patches = int(np.prod([n // p for n, p in zip((fr.n_frames, fr.height, fr.width), run.config.model.frame_patch)]))
    cost = cost_model(run.config, float(counts.mean()), float(hist.mean()), patches)
    rate = float(counts.mean()) / run.config.window.window
    gflops = matmul_gflops(run.config.model.d_model)
    return {
        "point": tag,
        "neurons": neurons,
        "base_rate": base_rate,
        "spikes_per_window_mean": float(counts.mean()),
        "spikes_per_window_p99": float(np.percentile(counts, 99)),
        "block_size": run.config.window.block_size,
        "prev_block_size": run.config.window.prev_block_size,
        "train_windows_per_s": result.windows_per_s,
        "train_data_share": result.data_share,
        **cost,
        "gflop_per_s_of_data": cost["flop_per_token"] * rate / 1e9,
        "matmul_gflops_1_thread": gflops,
        "floor_cpu_share": cost["flop_per_token"] * rate / 1e9 / gflops,
        "runs": {
            name: {k: v for k, v in r.items() if not k.startswith("raw_") and k != "spikes_per_window"}
            for name, r in served["runs"].items()
        },
    }


def row(p: dict[str, Any]) -> str:
    w, s = p["runs"]["real_time"], p["runs"]["real_time_streaming"]
    return (
        f"| {p['point']} | {p['spikes_per_window_mean']:.0f} (p99 {p['spikes_per_window_p99']:.0f}) | "
        f"{p['block_size']}/{p['prev_block_size']} | {p['train_windows_per_s']:.1f} | "
        f"{s['post_close_ms']['p50']:.2f} / {s['post_close_ms']['p99']:.2f} | {s['latency_ms']['p99']:.2f} / "
        f"{s['latency_ms']['p99.9']:.2f} | {s['daemon_cpu']:.0%} | {s['deadline_misses']} / {s['skipped']} | "
        f"{w['post_close_ms']['p99']:.1f} / {w['latency_ms']['p99']:.1f} | {w['deadline_misses']} / {w['skipped']} | "
        f"{s['spikes_truncated'] + w['spikes_truncated']} | {p['flop_per_token'] / 1e6:.2f} | "
        f"{p['gflop_per_s_of_data']:.1f} | {p['floor_cpu_share']:.0%} |"
    )


HEADER = (
    "| neurons x base Hz | spikes/window mean (p99) | budget cur/hist | train windows/s | streaming post-close "
    "p50 / p99 ms | streaming end-to-end p99 / p99.9 ms | daemon CPU | streaming misses / skipped | window "
    "post-close p99 / end-to-end p99 ms | window misses / skipped | spikes truncated | MFLOP per token | "
    "GFLOP per s of data | compute floor (1 thread) |\n|" + "---|" * 14
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="rig", help="run config (built-in name or TOML)")
    ap.add_argument("--points", default=POINTS, help="comma-separated NEURONSxBASE_RATE points")
    ap.add_argument("--steps", type=int, default=60, help="training steps timed per point")
    ap.add_argument("--train-s", type=float, default=60.0, help="seconds of simulated training session")
    ap.add_argument("--serve-s", type=float, default=65.0, help="seconds of session served at real time per mode")
    ap.add_argument("--threads", type=int, default=1, help="daemon inference threads")
    ap.add_argument("--block", type=float, default=0.001, help="seconds of data per spike message (acquisition block)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-scale"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    results = []
    for point in args.points.split(","):
        neurons, rate = point.split("x")
        results.append(measure_point(int(neurons), float(rate), cfg, args, args.out))
        (args.out / "scale.json").write_text(json.dumps(results, indent=2))
        print(HEADER + "\n" + "\n".join(row(p) for p in results), flush=True)


if __name__ == "__main__":
    main()
