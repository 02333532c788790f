"""Soak test: the real daemon, at real time, for minutes, at rig scale, with generation on.

Streams a simulated session (default 1000 neurons at ~20 Hz each + 20-fps video + behavior) into `rtdecode serve
--generate` at real time for --warmup seconds (not measured) and then --minutes, and samples every few seconds: the daemon's resident memory (/proc), the
end-to-end latency of every decode (producer send -> subscriber receive), its status counters (deadline misses,
skipped windows, dropped generation requests, rejected messages). Prints one row per --period (default a minute) and writes soak.json
and soak.png (RSS over time, latency p50/p99 per minute).

Bar (issue 7): memory flat after warm-up (RSS growth < 5% from the end of minute 1 to the end), and the last
minute's p99 within 20% of the first minute's. Exit status 1 if either fails.

Without --bundle, a rig-config model is trained for a few steps on the simulated session and exported (needs the
[train,export] extras): its quality does not matter here, only the work per window. Caveat: producer, subscriber
and daemon share this machine's cores, as in `rtdecode bench serve`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.bench.model import percentiles
from rtdecode.io import load_session, save_session
from rtdecode.runtime import Bundle
from rtdecode.wire.client import Producer, Subscriber
from rtdecode.wire.replay import send_paced, session_messages


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def listen(endpoint: str, daemon_pid: int, sample_every: float, results: Any, stop: Any, ready: Any) -> None:
    """The subscriber, in its own process (a thread beside the producer would share its GIL: the producer's sends
    would wait behind the subscriber's work and the soak would measure that). Sends back every decode's
    (monotonic receive time, end-to-end ms) and the daemon's RSS and status counters every `sample_every` s; the
    monotonic clock is the host's, so the parent compares these times with its own."""
    decodes: list[tuple[float, float]] = []
    samples: list[dict[str, Any]] = []
    with Subscriber(endpoint, topics=("decode", "status")) as sub:
        sub.wait_for("status", timeout=60)
        ready.set()
        next_sample = -np.inf
        while not stop.is_set():
            msg = sub.receive(0.1)
            if msg is None:
                continue
            now = time.monotonic()
            if msg["topic"] == "decode":
                decodes.append((now, Subscriber.latency_ms(msg)))
            elif now >= next_sample:
                s = msg["status"] if "status" in msg else msg
                samples.append(
                    {
                        "t": now,
                        "rss_mb": rss_mb(daemon_pid),
                        "deadline_misses": s.get("deadline_misses", 0),
                        "counters": s.get("counters", {}),
                    }
                )
                next_sample = now + sample_every
    results.send((decodes, samples))


def make_inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """(session path, bundle dir): given, or simulated + trained briefly + exported."""
    data = args.data
    if data is None:
        from rtdecode.sim.simulator import SimulationConfig, simulate

        data = work / "session.npz"
        length = args.warmup + args.minutes * 60 + 10
        print(f"simulating {args.neurons} neurons x {length:.0f} s (base rate {args.base_rate} Hz) ...")
        save_session(
            simulate(SimulationConfig(n_neurons=args.neurons, duration=length, base_rate=args.base_rate)), data
        )
    if args.bundle is not None:
        return data, args.bundle
    import dataclasses

    from rtdecode.core.config import load_config
    from rtdecode.export.onnx import export_bundle
    from rtdecode.training.train import train

    cfg = load_config("rig")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=20, eval_every=20, eval_windows=64))
    print("training 20 steps of the rig config and exporting (the soak measures serving, not quality) ...")
    train(cfg, data, work / "run", log=lambda _: None)
    export_bundle(work / "run", work / "bundle", log=lambda _: None)
    return data, work / "bundle"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="soak length (default: %(default)s)")
    p.add_argument("--neurons", type=int, default=1000, help="simulated neurons (default: %(default)s)")
    p.add_argument(
        "--base-rate", type=float, default=7.5, help="simulator base rate; 7.5 gives ~20 Hz mean (default: %(default)s)"
    )
    p.add_argument("--data", type=Path, help="session to stream instead of simulating one")
    p.add_argument("--bundle", type=Path, help="bundle to serve instead of training one briefly")
    p.add_argument("--no-generate", action="store_true", help="serve without generation")
    p.add_argument("--no-memory-arena", action="store_true", help="serve with `--no-memory-arena`")
    p.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds streamed before the measured minutes begin "
        "(first inference calls, allocator and cache warm-up; not in the table) (default: %(default)s)",
    )
    p.add_argument(
        "--block", type=float, default=0.001, help="seconds of data per spike message (default: %(default)s)"
    )
    p.add_argument("--period", type=float, default=60.0, help="length of one table row, s (default: %(default)s)")
    p.add_argument(
        "--sample-every", type=float, default=2.0, help="RSS/status sampling period, s (default: %(default)s)"
    )
    p.add_argument("--out", type=Path, default=Path("soak-out"), help="(default: %(default)s)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="exit 0 once the report is written, whether or not the "
        "bars are met (for runs too short for the bars to mean anything); by default a bar not met exits 1",
    )
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rtd-soak-"))
    data, bundle_dir = make_inputs(args, work)
    session = load_session(data)
    session = session.slice_time(session.start, session.start + args.warmup + args.minutes * 60)
    bundle = Bundle.load(bundle_dir)
    inp, outp = f"ipc://{work}/in", f"ipc://{work}/out"
    cmd = [
        sys.executable,
        "-m",
        "rtdecode.cli",
        "serve",
        str(bundle_dir),
        "--input",
        inp,
        "--output",
        outp,
        "--status-interval",
        "1",
        "--threads",
        "1",
        "--start",
        str(session.start),
    ]
    if not args.no_generate:
        cmd.append("--generate")
    if args.no_memory_arena:
        cmd.append("--no-memory-arena")
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mp = multiprocessing.get_context("spawn")
    stop, ready = mp.Event(), mp.Event()
    receive_end, send_end = mp.Pipe(duplex=False)
    listener = mp.Process(target=listen, args=(outp, daemon.pid, args.sample_every, send_end, stop, ready), daemon=True)
    listener.start()
    t0 = time.monotonic()  # start of the measured minutes (moved when the warm-up ends)
    decodes: list[tuple[float, float]] = []
    samples: list[dict[str, Any]] = []
    try:
        if not ready.wait(60):
            raise SystemExit("the daemon (or the subscriber process) did not come up")
        behavior = tuple(b.name for b in bundle.behavior_inputs)
        print(
            f"streaming {session.duration / 60:.1f} min of {session.n_neurons} neurons "
            f"({session.n_spikes / session.duration / session.n_neurons:.1f} Hz mean) at real time ..."
        )
        measured_from = session.start + args.warmup
        measuring = False

        def start_measuring(t: float, kind: str) -> None:
            nonlocal t0, measuring
            if t >= measured_from and not measuring:
                measuring = True
                t0 = time.monotonic()  # rows count from here; earlier decodes and samples are the warm-up

        with Producer(inp) as prod:
            t0 = time.monotonic()
            sent = send_paced(
                prod, session_messages(session, batch=args.block, behavior=behavior), speed=1.0, on_send=start_measuring
            )
        time.sleep(2.0)  # let the last windows' decodes and one more status arrive (bounded, not a synchronisation)
        stop.set()
        if receive_end.poll(30):
            decodes, samples = receive_end.recv()
    finally:
        stop.set()
        listener.join(5)
        daemon.terminate()
        daemon.wait(timeout=30)
    report(
        args,
        [(t - t0, ms) for t, ms in decodes if t >= t0],
        [{**x, "t": x["t"] - t0} for x in samples if x["t"] >= t0],
        sent,
    )


def report(
    args: argparse.Namespace, decodes: list[tuple[float, float]], samples: list[dict[str, Any]], sent: dict
) -> None:
    t = np.array([d[0] for d in decodes])
    lat = np.array([d[1] for d in decodes])
    period = args.period
    n_rows = int(np.ceil(t.max() / period)) if t.size else 0
    rows = []
    for m in range(n_rows):
        sel = (t >= period * m) & (t < period * (m + 1))
        in_min = [s for s in samples if s["t"] < period * (m + 1)]
        last: dict[str, Any] = in_min[-1] if in_min else {"rss_mb": float("nan"), "deadline_misses": 0, "counters": {}}
        c = last["counters"]
        rows.append(
            {
                "period": m + 1,
                "windows": int(sel.sum()),
                **{k: v for k, v in percentiles(lat[sel]).items() if k in ("p50", "p99", "p99.9", "max")},
                "rss_mb": last["rss_mb"],
                "deadline_misses": last["deadline_misses"],
                "skipped": c.get("windows_skipped", 0),
                "generate_dropped": c.get("generate_dropped", 0),
            }
        )
    expected = float(np.median([r["windows"] for r in rows])) if rows else 0.0  # windows in a full row
    while rows and rows[-1]["windows"] < expected / 2:
        rows.pop()  # a trailing partial row (the last decodes after the final full period) is not a minute
    print(
        f"{'row':>3} {'windows':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'max':>7} {'RSS MB':>7} "
        f"{'misses':>6} {'skipped':>7} {'gen dropped':>11}  (last three: running totals)"
    )
    for r in rows:
        print(
            f"{r['period']:>3} {r['windows']:>7} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['p99.9']:>7.2f} {r['max']:>7.2f} "
            f"{r['rss_mb']:>7.1f} {r['deadline_misses']:>6} {r['skipped']:>7} {r['generate_dropped']:>11}"
        )
    warm = [s["rss_mb"] for s in samples if s["t"] >= period] or [s["rss_mb"] for s in samples]
    growth = (warm[-1] - warm[0]) / warm[0] if warm else float("nan")
    p99_change = rows[-1]["p99"] / rows[0]["p99"] - 1 if len(rows) > 1 else float("nan")
    verdict = {
        "rss_growth_after_warmup": growth,
        "memory_flat": bool(growth < 0.05),
        "p99_last_vs_first": p99_change,
        "p99_stable": bool(abs(p99_change) <= 0.20),
    }
    print(
        f"RSS after warm-up {warm[0] if warm else float('nan'):.1f} -> {warm[-1] if warm else float('nan'):.1f} MB "
        f"({growth:+.1%}; bar < 5%: {'met' if verdict['memory_flat'] else 'NOT met'}); p99 last row vs first "
        f"{p99_change:+.1%} (bar within 20%: {'met' if verdict['p99_stable'] else 'NOT met'}); producer drops "
        f"{sent.get('dropped', 0)}"
    )
    result = {
        "minutes": args.minutes,
        "period_s": period,
        "rows": rows,
        "verdict": verdict,
        "sent": sent,
        "samples": samples,
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=2))
    plot(samples, rows, period, args.out / "soak.png")
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}")
    if not args.report_only and not (verdict["memory_flat"] and verdict["p99_stable"]):
        raise SystemExit(1)


def plot(samples: list[dict], rows: list[dict], period: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.plot([s["t"] / 60 for s in samples], [s["rss_mb"] for s in samples])
    a.set_xlabel("minutes")
    a.set_ylabel("daemon RSS (MB)")
    for q in ("p50", "p99", "p99.9"):
        b.plot([r["period"] * period / 60 for r in rows], [r[q] for r in rows], "o-", label=q)
    b.set_xlabel("minutes (end of row)")
    b.set_ylabel("end-to-end latency (ms)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
