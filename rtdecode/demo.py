"""`rtdecode demo`: the main job end to end on the built-in simulated session.

simulate a ground-truth session -> tokenize it once (token store) and check the live rolling window against the
offline tokenizer -> train the small config -> export a bundle (parity-checked) -> start the daemon -> replay the
held-out block in real time over ZeroMQ as a rig would -> subscribe to the decodes -> score them against the
simulator's behavior and a ridge baseline, with end-to-end latency -> write the evaluation report (<out>/report/:
decoding vs baselines, generation, connectivity, embeddings, the live latency histogram). Everything lands in
<out>/, the summary in <out>/demo-summary.json. With `reuse`, an existing session, run and bundle in <out>/ are
used instead of made again (to re-serve or re-report without retraining). Training, export and serving need the `[train,export]` extras.

The demo's model decodes behavior from video and spikes, and its self-attention carries no connectivity. With
`connectivity_minutes`, the demo also trains a model that learns only the spikes while seeing the video (the
`spikes_frames` config: the paper's hub experiment, with the stimulus that drives the visual neurons together)
on the same session and scores its attention against the simulator's W (<out>/connectivity/), as
`rtdecode connectivity` would.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rtdecode.core.config import BehaviorSpec, RunConfig, load_config
from rtdecode.data.session import Session
from rtdecode.data.splits import split_blocks
from rtdecode.data.summary import session_summary
from rtdecode.data.tokenizer import WindowConfig, tokenize_session
from rtdecode.data.window import RollingWindow
from rtdecode.io import load_session, save_session
from rtdecode.io.atomic import atomic_write
from rtdecode.io.token_store import save_tokens
from rtdecode.sim.simulator import SimulationConfig, simulate

__all__ = ["run_demo"]


def run_demo(
    out: Path,
    *,
    duration: float,
    seed: int = 0,
    batch_duration: float = 0.005,
    train_steps: int = 0,  # 0: data stages only; -1: the small config's own schedule
    train_minutes: float = 0.0,
    parity_windows: int = 16,
    speed: float = 1.0,
    reuse: bool = False,
    report: bool = True,
    connectivity_minutes: float = 0.0,
    log: Callable[[str], None] = print,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run every stage that exists on a fresh simulated session; raise if any check fails."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = WindowConfig()
    t0 = time.perf_counter()
    if reuse and (out / "session.npz").is_file():
        session = load_session(out / "session.npz")
        log(f"reusing {out / 'session.npz'} ({session.n_neurons} neurons x {session.duration:.0f} s)")
    else:
        session = simulate(SimulationConfig(duration=duration, seed=seed), progress=progress)
        save_session(session, out / "session.npz")
        log(
            f"simulated {session.n_neurons} neurons x {session.duration:.0f} s in {time.perf_counter() - t0:.1f} s "
            f"-> {out / 'session.npz'}"
        )
    t_sim = time.perf_counter() - t0

    summary = session_summary(session, cfg)
    tokens = tokenize_session(
        session.spike_times,
        session.spike_neurons,
        session.n_neurons,
        session.start,
        session.stop,
        cfg,
        session.neuron_ids,
    )
    save_tokens(tokens, out / "tokens", source={"session": str(out / "session.npz")})
    split = split_blocks(tokens.window_starts(), cfg.window, gap=cfg.prev_window + cfg.window, seed=seed)
    log(f"tokenized {tokens.n_windows:,} windows -> {out / 'tokens'}; split {split.summary()}")

    live = _check_live_equals_offline(session, tokens, split.test, batch_duration)
    log(
        f"live window: {live['windows']} held-out windows streamed in {batch_duration * 1e3:.0f}-ms batches, "
        f"tokens identical to offline: {live['identical']}"
    )
    if not live["identical"]:
        raise RuntimeError("live rolling window disagreed with the offline tokenizer; this is a bug")
    result: dict[str, Any] = {"session": summary, "split": split.summary(), "live_check": live, "simulate_s": t_sim}
    if train_steps != 0:
        result.update(_train_export_serve(out, session, train_steps, train_minutes, parity_windows, speed, reuse, log))
        if report:
            from rtdecode.report.evaluate import evaluate_report
            from rtdecode.report.targets import science_targets

            log(f"writing the evaluation report -> {out / 'report'} ...")
            live = {
                "demo_real_time": {
                    "raw_ms": result["serve"]["raw_latency_ms"],
                    "deadline_misses": result["serve"]["deadline_misses"],
                }
            }
            numbers = evaluate_report(
                out / "bundle",
                out / "session.npz",
                out / "report",
                latency_runs=live,
                max_windows=100 if duration < 120 else 400,
                closed_loop_s=5.0 if duration < 120 else 60.0,
                connectivity_windows=300 if duration < 120 else 1500,
                seed=seed,
                log=log,
            )
            result["report"] = {
                "path": str(out / "report" / "report.html"),
                "generation": {k: numbers["generation"][k] for k in ("generated", "glm", "poisson", "targets")},
                "connectivity_bar": numbers["connectivity"].get("bar"),
                "science_targets": science_targets(numbers),
            }
        if connectivity_minutes > 0:
            result["connectivity_model"] = _connectivity_model(
                out, session, connectivity_minutes, train_steps, reuse, log
            )
    with atomic_write(out / "demo-summary.json") as f:
        f.write(json.dumps(result, indent=2).encode())
    return result


def _train_export_serve(
    out: Path,
    session: Session,
    steps: int,
    minutes: float,
    parity_windows: int,
    speed: float,
    reuse: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train the small config, export it, serve it, replay the held-out block through the daemon, score."""
    import threading

    from rtdecode.core.metrics import angular_error_deg, circular_r, pearson_r
    from rtdecode.core.window_data import WindowData, make_split
    from rtdecode.export.onnx import export_bundle
    from rtdecode.serve.daemon import Daemon, ServeConfig, serve_in_thread
    from rtdecode.training.checkpoint import read_meta
    from rtdecode.training.train import train
    from rtdecode.wire.client import Producer, Subscriber
    from rtdecode.wire.replay import send_paced, session_messages

    cfg = load_config("small")
    if "direction" in session.behavior:  # the gratings' drift direction: an angle, decoded as a circular target
        cfg = dataclasses.replace(cfg, behavior=(*cfg.behavior, BehaviorSpec("direction", kind="circular")))
    cfg = _with_budget(cfg, steps, minutes)
    steps = cfg.train.max_steps
    if reuse and (out / "run" / "checkpoint.json").is_file():
        meta = read_meta(out / "run")
        cfg = RunConfig.from_saved(meta["config"])
        trained = _Trained(meta["step"], meta["throughput"]["windows_per_s"], meta["test"], meta["baseline"])
        log(f"reusing the run in {out / 'run'} ({trained.step} steps)")
    else:
        log(f"training the small config ({steps} steps, at most {minutes:g} min) ...")
        trained = train(cfg, out / "session.npz", out / "run", log=lambda _: None)
        log(
            f"  {trained.step} steps at {trained.windows_per_s:.0f} windows/s; test r: "
            + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in trained.test.items() if k.endswith("_r"))
        )
    cfg = RunConfig.from_saved(read_meta(out / "run")["config"])  # with the token budgets training derived
    data = WindowData(session, cfg)
    split = make_split(data, cfg)
    runs = np.split(split.test, np.flatnonzero(np.diff(split.test) != 1) + 1)
    block = max(runs, key=len)
    if reuse and (out / "bundle" / "manifest.json").is_file():
        log(f"reusing the bundle in {out / 'bundle'}")
    else:
        export_bundle(
            out / "run",
            out / "bundle",
            data=data,
            windows=block[:: max(1, block.size // parity_windows)][:parity_windows],
            log=lambda _: None,
        )
        log(f"exported {out / 'bundle'} (parity checked against PyTorch)")
    starts = data.tokens.window_starts()
    t0, t1 = float(starts[block[0]]), float(starts[block[-1]]) + cfg.window.window
    ipc = Path(tempfile.mkdtemp(prefix="rtd-demo-"))
    daemon = Daemon(
        out / "bundle",
        ServeConfig(
            input=f"ipc://{ipc}/in", output=f"ipc://{ipc}/out", start=t0, skip_backlog=speed > 0, status_interval=0.2
        ),
    )
    log(
        f"replaying the held-out block [{t0:.2f}, {t1:.2f}) s ({block.size} windows) into the daemon at "
        f"{'real time' if speed == 1 else f'{speed:g}x' if speed else 'full speed'} ..."
    )
    decodes: list[dict[str, Any]] = []
    with (
        serve_in_thread(daemon),
        Subscriber(daemon.output_endpoint, topics=("decode", "status")) as sub,
        Producer(daemon.input_endpoint) as prod,
    ):
        sub.wait_for("status")
        listener = threading.Thread(
            target=_listen, args=(sub, decodes, int(data.tokens.first_window + block[-1])), daemon=True
        )
        listener.start()
        send_paced(prod, session_messages(session, t0=t0 - cfg.window.prev_window, t1=t1), speed=speed)
        listener.join(60)
    status = daemon.status()
    first = data.tokens.first_window
    held_out = set(block.tolist())
    got = {d["window"] - first: d for d in decodes if d["window"] - first in held_out}
    idx = np.array(sorted(got))
    scores: dict[str, Any] = {}
    for spec in cfg.targets:
        live, truth = np.array([got[i]["values"][spec.name] for i in idx]), data.targets[spec.name][idx]
        scores[spec.name] = {
            "live_r": circular_r(truth, live) if spec.kind == "circular" else pearson_r(truth, live),
            "ridge_r": trained.baseline.get(f"ridge_{spec.name}_r", float("nan")),
        }
        if spec.kind == "circular":  # r of (cos, sin), and the error in degrees
            scores[spec.name]["live_mae_deg"] = angular_error_deg(truth, live)
            scores[spec.name]["ridge_mae_deg"] = trained.baseline.get(f"ridge_{spec.name}_mae_deg", float("nan"))
    lat = np.array([d["t_receive"] - d["in_t_send"] for d in decodes]) * 1e3
    p50, p99 = np.percentile(lat, [50, 99]) if lat.size else (float("nan"),) * 2
    return {
        "train": {
            "steps": trained.step,
            "windows_per_s": trained.windows_per_s,
            "test": trained.test,
            "baseline": trained.baseline,
        },
        "serve": {
            "windows": len(got),
            "expected": int(block.size),
            "latency_p50_ms": float(p50),
            "latency_p99_ms": float(p99),
            "raw_latency_ms": lat.tolist(),
            "deadline_misses": status["deadline_misses"],
            "skipped": status["counters"].get("windows_skipped", 0),
        },
        "decoding": scores,
    }


def _with_budget(cfg: RunConfig, steps: int, minutes: float) -> RunConfig:
    """`cfg` trained for `steps` (<= 0: the config's own schedule), cut by `minutes` (0: no limit), evaluated about
    three times or every eval_every steps, whichever is more often."""
    steps = steps if steps > 0 else cfg.train.max_steps
    evals = max(1, min(cfg.train.eval_every, steps // 3))
    train = dataclasses.replace(cfg.train, max_steps=steps, max_minutes=minutes, eval_every=evals)
    return dataclasses.replace(cfg, train=train)


def _connectivity_model(
    out: Path, session: Session, minutes: float, steps: int, reuse: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train `spikes_frames` on the demo's session for `minutes` (at most `steps` steps; -1: its own schedule),
    then write its connectivity report to <out>/connectivity/; return its scores and its science targets."""
    from rtdecode.report.document import Report
    from rtdecode.report.run_sections import connectivity_section
    from rtdecode.report.targets import science_targets
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.train import train

    run_dir = out / "run-connectivity"
    if reuse and (run_dir / "checkpoint.json").is_file():
        log(f"reusing the connectivity model in {run_dir}")
    else:
        cfg = _with_budget(load_config("spikes_frames"), steps, minutes)
        log(
            f"training the spikes_frames config for connectivity ({cfg.train.max_steps} steps, at most {minutes:g} "
            "min) ..."
        )
        trained = train(cfg, out / "session.npz", run_dir, log=lambda _: None)
        log(f"  {trained.step} steps at {trained.windows_per_s:.0f} windows/s")
    report = Report(out / "connectivity", "rtdecode connectivity (spikes_frames)", {"run": str(run_dir)})
    sec = report.section("connectivity", "Connectivity")
    windows = 3000 if session.duration >= 120 else 300
    connectivity_section(sec, out / "connectivity", LoadedRun(run_dir), session, windows, log=log)
    report.write()
    targets = science_targets({"connectivity": sec.numbers})
    for row in targets:
        row["target"] = row["target"].replace("connectivity,", "connectivity (spikes_frames model),", 1)
    return {
        "path": str(out / "connectivity" / "report.html"),
        "scores": sec.numbers["scores"],
        "science_targets": targets,
    }


class _Trained(NamedTuple):
    """The parts of a TrainResult the demo reports, also readable from a finished run's checkpoint.json."""

    step: int
    windows_per_s: float
    test: dict[str, float]
    baseline: dict[str, float]


def _listen(sub: Any, sink: list[dict[str, Any]], last_window: int) -> None:
    for msg in sub.messages(timeout=5.0):
        if msg["topic"] == "decode":
            sink.append(msg)
            if msg["window"] >= last_window:
                return


def _check_live_equals_offline(
    session: Session, tokens: Any, test_windows: np.ndarray, batch_duration: float
) -> dict[str, Any]:
    """Replay the longest contiguous run of held-out windows through RollingWindow; compare with offline."""
    if test_windows.size == 0:
        return {"windows": 0, "identical": True}
    runs = np.split(test_windows, np.flatnonzero(np.diff(test_windows) != 1) + 1)
    run = max(runs, key=len)
    starts = tokens.window_starts()
    t_start, t_stop = float(starts[run[0]]), float(starts[run[-1]]) + tokens.config.window
    lo = np.searchsorted(session.spike_times, t_start - tokens.config.prev_window)
    hi = np.searchsorted(session.spike_times, t_stop)
    times, neurons = session.spike_times[lo:hi], session.spike_neurons[lo:hi]
    rw = RollingWindow(tokens.config, session.n_neurons, start=t_start)
    closed = []
    edges = np.searchsorted(times, np.arange(times[0] if times.size else t_start, t_stop, batch_duration))
    for a, b in zip(edges, [*edges[1:], times.size]):
        closed += rw.push(times[a:b], neurons[a:b])
    closed += rw.advance(t_stop)
    cur, hist = tokens.current(run), tokens.history(run)
    identical = len(closed) == run.size
    for j, window in enumerate(closed[: run.size]):
        c, h = window.tokens(tokens.config, tokens.vocab)
        identical &= bool(np.array_equal(c.ids[0], cur.ids[j]) and np.array_equal(c.dts[0], cur.dts[j]))
        identical &= bool(np.array_equal(h.ids[0], hist.ids[j]) and np.array_equal(h.dts[0], hist.dts[j]))
    return {"windows": int(run.size), "identical": bool(identical), "late": rw.counters.late}
