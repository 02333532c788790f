"""The `rtdecode` command line. Each subcommand is a thin layer over a library function.

Heavy imports (torch, pynwb, onnxruntime) happen inside the commands that need them, so `rtdecode --help`
and the serve path stay fast and torch-free.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="rtdecode",
    help=(
        "Real-time Neuroformer decoding for closed-loop experiments: simulate or load a session, tokenize it, "
        "train a model, and decode behavior live. Start with `rtdecode demo`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()

SessionPath = Annotated[Path, typer.Argument(help="Session file: .npz (rtdecode native) or .nwb.", exists=True, dir_okay=False)]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _window_options(
    window: float, prev_window: float, dt: float, block_size: int, prev_block_size: int
) -> Any:
    from rtdecode.tokenizer import WindowConfig

    try:
        return WindowConfig(
            window=window, prev_window=prev_window, dt=dt, block_size=block_size, prev_block_size=prev_block_size
        )
    except ValueError as e:
        _fail(str(e))


@app.command()
def info(
    session: SessionPath,
    window: Annotated[float, typer.Option(help="Window length for the token preview, s.")] = 0.05,
    block_size: Annotated[int, typer.Option(help="Token slots per window (SOS+EOS included) for the truncation preview.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")] = False,
) -> None:
    """Summarise a session: neurons, duration, firing rates, modalities, and what tokenization would give."""
    from rtdecode.io import load_session
    from rtdecode.session import SessionError
    from rtdecode.summary import session_summary
    from rtdecode.tokenizer import WindowConfig

    try:
        s = load_session(session)
    except (SessionError, ImportError) as e:
        _fail(str(e))
    summary = session_summary(s, WindowConfig(window=window, block_size=block_size))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _print_summary(summary, title=str(session))


def _print_summary(summary: dict[str, Any], title: str) -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("neurons", f"{summary['neurons']}")
    t.add_row("duration", f"{summary['duration_s']:.1f} s  [{summary['start_s']:.3f}, {summary['stop_s']:.3f})")
    t.add_row("spikes", f"{summary['spikes']:,}")
    t.add_row(
        "firing rate",
        f"mean {summary['rate_mean_hz']:.2f} Hz, median {summary['rate_median_hz']:.2f} Hz, "
        f"max {summary['rate_max_hz']:.1f} Hz, silent neurons {summary['silent_neurons']}",
    )
    t.add_row("modalities", ", ".join(summary["modalities"]))
    if "frames" in summary:
        f = summary["frames"]
        t.add_row("frames", f"{f['count']} x {f['shape'][0]}x{f['shape'][1]} {f['dtype']} at {f['rate_hz']:.1f} fps")
    for name, b in summary["behavior"].items():
        t.add_row(
            f"behavior: {name}",
            f"{b['samples']} samples at {b['rate_hz']:.1f} Hz, range [{b['min']:.2f}, {b['max']:.2f}] {b['unit']}"
            + (f", {b['missing']} missing" if b["missing"] else ""),
        )
    if summary["trials"]:
        t.add_row("trials", str(summary["trials"]))
    if summary["truth"]:
        t.add_row("ground truth", ", ".join(summary["truth"]))
    k = summary["tokens"]
    t.add_row(
        "tokens",
        f"{k['windows']:,} windows of {k['window_s'] * 1e3:.0f} ms, {k['spikes_per_window_mean']:.1f} spikes/window "
        f"(p99 {k['spikes_per_window_p99']:.0f}); {k['windows_truncated']} windows over block {k['block_size']} "
        f"({k['spikes_truncated']} spikes truncated)",
    )
    console.print(t)


@app.command()
def prepare(
    session: SessionPath,
    out: Annotated[Path, typer.Option(help="Directory for the token store (created).")],
    window: Annotated[float, typer.Option(help="Current window length, s.")] = 0.05,
    prev_window: Annotated[float, typer.Option(help="History window before each window, s.")] = 0.05,
    dt: Annotated[float, typer.Option(help="Time quantum inside a window, s.")] = 0.01,
    block_size: Annotated[int, typer.Option(help="Token slots per window, SOS and EOS included.")] = 100,
    prev_block_size: Annotated[int, typer.Option(help="Token slots for the history.")] = 100,
) -> None:
    """Tokenize a session once and store the tokens for training (memory-mapped arrays + tokens.json)."""
    from rtdecode.io import load_session
    from rtdecode.session import SessionError
    from rtdecode.token_store import save_tokens
    from rtdecode.tokenizer import tokenize_session

    cfg = _window_options(window, prev_window, dt, block_size, prev_block_size)
    try:
        s = load_session(session)
    except (SessionError, ImportError) as e:
        _fail(str(e))
    tokens = tokenize_session(s.spike_times, s.spike_neurons, s.n_neurons, s.start, s.stop, cfg, s.neuron_ids)
    save_tokens(tokens, out, source={"session": str(session)})
    stats = tokens.truncation_stats()
    console.print(
        f"wrote {out}: {tokens.n_windows:,} windows, {tokens.bins.size:,} spikes; "
        f"{stats['windows_truncated']} windows truncated ({stats['spikes_truncated']} spikes)"
    )


def _simulate(config: Any, out: Path) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from rtdecode.io import save_session
    from rtdecode.simulator import simulate

    with Progress(
        TextColumn("simulating"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
        console=console, transient=True,
    ) as bar:
        task = bar.add_task("sim", total=1.0)
        session = simulate(config, progress=lambda frac: bar.update(task, completed=frac))
    save_session(session, out)
    console.print(
        f"wrote {out}: {session.n_neurons} neurons, {session.duration:.0f} s, {session.n_spikes:,} spikes "
        f"({session.firing_rates().mean():.2f} Hz mean), modalities: {', '.join(session.modalities())}"
    )


def _register_simulate() -> None:
    from rtdecode.cli_options import dataclass_options
    from rtdecode.simulator import SimulationConfig

    out = inspect.Parameter(
        "out", inspect.Parameter.KEYWORD_ONLY, default=Path("session.npz"),
        annotation=Annotated[Path, typer.Option(help="Output session file (.npz keeps the ground truth; .nwb drops it).")],
    )
    command = dataclass_options(
        SimulationConfig,
        _simulate,
        "Simulate a ground-truth session: a hub network (known weights W, target x source) driven by a visual "
        "stimulus and coupled to running speed and eye position. Writes .npz (with the truth) or .nwb.",
        extra=[out],
    )
    app.command(name="simulate")(command)


_register_simulate()


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Session file (.npz or .nwb) to train on.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Run directory for checkpoints, metrics.csv and TensorBoard logs.")],
    config: Annotated[str, typer.Option(help="Run config: a TOML file, or a built-in name (small, release, spikes_only).")] = "small",
    tokens: Annotated[Optional[Path], typer.Option(help="Token store from `rtdecode prepare` (else tokenized here).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly where it stopped.")] = False,
    max_steps: Annotated[Optional[int], typer.Option(help="Override [train] max_steps.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(help="Override [train] max_minutes (0 = no time limit).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Override [train] eval_every.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
) -> None:
    """Train a Neuroformer on a session: next-spike prediction, behavior decoding and contrastive alignment.

    Splits the session into contiguous time blocks (train/val/test with guard gaps), evaluates on validation every
    eval_every steps, keeps the latest and the best checkpoints (safetensors + JSON), and ends with test-split
    figures beside a ridge-regression baseline. Works under `torchrun --nproc-per-node K --no-python rtdecode train`.
    """
    import dataclasses

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rtdecode.training.config import load_config
    from rtdecode.training.train import train as run_train

    try:
        cfg = load_config(config)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    overrides = {k: v for k, v in (("max_steps", max_steps), ("max_minutes", max_minutes), ("eval_every", eval_every)) if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    with Progress(
        TextColumn("training"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
        disable=os.environ.get("RANK", "0") != "0",
    ) as bar:
        task = bar.add_task("train", total=cfg.train.max_steps, info="")

        def on_step(step: int, total: int, scalars: dict[str, float]) -> None:
            if step % 10 == 0 or step == total:
                bar.update(task, completed=step, info=f"loss {scalars['total']:.3f}, {scalars['windows_per_s']:.0f} windows/s")

        result = run_train(cfg, data, out, tokens_dir=tokens, resume=resume, device=device, log=bar.console.print, progress=on_step)
    if result.test:
        _print_train_result(result)


def _print_train_result(result: Any) -> None:
    t = Table(title=f"held-out test windows ({result.run_dir})", title_justify="left")
    t.add_column("metric")
    t.add_column("model", justify="right")
    t.add_column("baseline", justify="right")
    for key, value in result.test.items():
        if key.endswith("_r") or key.endswith("_r2"):
            base = result.baseline.get(f"ridge_{key}")
            t.add_row(key.replace("_r2", " R^2").replace("_r", " r"), f"{value:.3f}", f"{base:.3f} (ridge)" if base is not None else "")
    t.add_row("next-ID set F1", f"{result.test.get('set_f1', float('nan')):.3f}", f"{result.baseline.get('rate_set_f1', float('nan')):.3f} (rates)")
    t.add_row("next-ID accuracy", f"{result.test.get('id_accuracy', float('nan')):.3f}", "")
    console.print(t)
    console.print(f"{result.windows_per_s:.0f} training windows/s, {result.data_share:.1%} of the time loading data")


@app.command()
def finetune(
    from_run: Annotated[Path, typer.Option("--from", help="Pretrained run directory (from `rtdecode train`).", exists=True, file_okay=False)],
    data: Annotated[Path, typer.Option(help="Session file to fine-tune on.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Run directory for the fine-tuned model.")],
    fraction: Annotated[float, typer.Option(help="Fraction of training windows with behavior labels to use (0-1].")] = 0.01,
    freeze: Annotated[str, typer.Option(help="none: train all; top: fused stack + behavior heads; backbone: behavior heads only.")] = "backbone",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 300,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    from_scratch: Annotated[bool, typer.Option(help="Same architecture from random weights (the baseline to beat).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Few-shot fine-tuning: decode behavior from a pretrained model using a small labelled fraction of windows."""
    from rtdecode.training.finetune import finetune as run_finetune

    try:
        result = run_finetune(from_run, data, out, fraction=fraction, freeze=freeze, steps=steps, lr=lr,
                              from_scratch=from_scratch, device=device, log=console.print)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    _print_train_result(result)


@app.command()
def generate(
    from_run: Annotated[Path, typer.Option("--from", help="Run directory (from `rtdecode train`).", exists=True, file_okay=False)],
    data: Annotated[Path, typer.Option(help="Session whose windows to generate.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Output session file (.npz/.nwb) with the generated spikes.")],
    split: Annotated[str, typer.Option(help="Which windows: test, val, train or all.")] = "test",
    history: Annotated[str, typer.Option(help="true: condition on recorded history; generated: closed loop on the model's own output.")] = "true",
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    max_windows: Annotated[int, typer.Option(help="Generate at most this many windows (0 = all).")] = 0,
) -> None:
    """Generate spikes window by window with the KV cache, and write them as a session file.

    With --history generated the windows must be consecutive: the longest contiguous run of the split is used.
    """
    import numpy as np

    from rtdecode.io import load_session, save_session
    from rtdecode.session import Session
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.data import WindowData
    from rtdecode.training.generate import SamplingConfig, generate_session
    from rtdecode.training.train import make_split

    run = LoadedRun(from_run)
    session = load_session(data)
    wd = WindowData(session, run.config)
    parts = make_split(wd, run.config)
    if split not in ("test", "val", "train", "all"):
        _fail(f"--split must be test, val, train or all; got {split}")
    windows = np.arange(wd.n_windows) if split == "all" else getattr(parts, split)
    if history == "generated":
        runs = np.split(windows, np.flatnonzero(np.diff(windows) != 1) + 1)
        windows = max(runs, key=len)
    if max_windows:
        windows = windows[:max_windows]
    try:
        times, neurons, timing = generate_session(
            run.model, wd, windows, run.norm, history=history,
            sampling=SamplingConfig(temperature=temperature, top_p=top_p, seed=seed),
        )
    except ValueError as e:
        _fail(str(e))
    starts = wd.tokens.window_starts()
    t0, t1 = float(starts[windows[0]]), float(starts[windows[-1]] + run.config.window.window)
    save_session(Session(times, neurons, session.n_neurons, min(t0, t1), max(t1, t0 + 1e-9),
                         neuron_ids=session.neuron_ids,
                         metadata={"source": "rtdecode generate", "run": str(from_run), "history": history,
                                   "windows": [int(windows[0]), int(windows[-1])], **timing}), out)
    console.print(f"wrote {out}: {times.size:,} spikes in {windows.size} windows; {timing['ms_per_window']:.1f} ms "
                  f"per window ({timing['windows_per_s']:.1f} windows/s, KV cache)")


@app.command()
def export(
    from_run: Annotated[Path, typer.Option("--from", help="Run directory (from `rtdecode train`).", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option(help="Bundle directory to write (ONNX graphs + manifest.json).")],
    data: Annotated[Optional[Path], typer.Option(help="Session for parity checks on held-out windows (else synthetic windows).", exists=True, dir_okay=False)] = None,
    weights: Annotated[str, typer.Option(help="Which weights: model (latest), best-val_loss or best-behavior_r.")] = "model",
    parity_windows: Annotated[int, typer.Option(help="Held-out windows compared against PyTorch.")] = 16,
    tolerance: Annotated[float, typer.Option(help="Max abs error allowed vs PyTorch (fp32).")] = 1e-4,
    tensorrt: Annotated[bool, typer.Option(help="Also build TensorRT engines (needs a GPU and TensorRT).")] = False,
    fp16: Annotated[bool, typer.Option(help="Build TensorRT engines in fp16.")] = False,
) -> None:
    """Export a trained run to a self-contained bundle that serves without torch, and check parity.

    Writes decode/context/step ONNX graphs and manifest.json; runs them in onnxruntime on held-out windows and
    compares with PyTorch (max abs error stored in the manifest; export fails above --tolerance).
    """
    import numpy as np

    from rtdecode.export.onnx import export_bundle

    wd = windows = None
    if data is not None:
        from rtdecode.io import load_session
        from rtdecode.training.checkpoint import LoadedRun
        from rtdecode.training.data import WindowData
        from rtdecode.training.train import make_split

        run = LoadedRun(from_run, weights=weights)
        wd = WindowData(load_session(data), run.config)
        test = make_split(wd, run.config).test
        windows = test[np.linspace(0, test.size - 1, min(parity_windows, test.size)).astype(np.int64)]
    try:
        manifest = export_bundle(from_run, out, weights=weights, data=wd, windows=windows, tolerance=tolerance,
                                 log=console.print)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    p = manifest["parity"]
    console.print(f"[green]bundle written[/]: {out} (parity on {p['windows']} windows: decode {p['decode_max_abs']:.1e}, "
                  f"step {p['step_max_abs']:.1e}, greedy generation identical: {p['generation_identical']})")
    if tensorrt:
        from rtdecode.runtime.bundle import Bundle
        from rtdecode.runtime.tensorrt_backend import build_engines, tensorrt_available

        if not tensorrt_available():
            console.print("[yellow]TensorRT or a CUDA GPU is not available here: no engines built[/] "
                          "(pip install 'rtdecode[tensorrt]' on a GPU machine, then re-run with --tensorrt)")
            return
        build_engines(Bundle.load(out), fp16=fp16, log=console.print)


bench_app = typer.Typer(help="Benchmarks: latency percentiles and throughput, measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("model")
def bench_model_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `rtdecode export`).", exists=True, file_okay=False)],
    backends: Annotated[str, typer.Option(help="Comma-separated backends to compare (onnxruntime, torch, onnxruntime-cuda, tensorrt).")] = "onnxruntime,torch",
    repeats: Annotated[int, typer.Option(help="Decodes timed per backend.")] = 300,
    gen_windows: Annotated[int, typer.Option(help="Windows generated (KV cache vs full re-forward).")] = 5,
    spikes: Annotated[int, typer.Option(help="Spikes per synthetic window (the simulated session averages ~66).")] = 66,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads (0 = all cores).")] = 0,
    sweep: Annotated[bool, typer.Option(help="Also measure onnxruntime threads x spinning x graph optimisation level.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write every number to this JSON file.")] = None,
) -> None:
    """Decode latency (p50/p99/p99.9, batch 1) per backend and generation speed, with this machine's floors."""
    from rtdecode.bench_model import bench_model

    result = bench_model(str(bundle), backends=backends.split(","), repeats=repeats, gen_windows=gen_windows,
                         spikes=spikes, threads=threads, sweep=sweep, log=console.print)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_out}")


@bench_app.command("serve")
def bench_serve_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `rtdecode export`).", exists=True, file_okay=False)],
    data: Annotated[Optional[Path], typer.Option(help="Session to replay (default: simulate one matching the model).", exists=True, dir_okay=False)] = None,
    duration: Annotated[float, typer.Option(help="Seconds of simulated session when --data is not given.")] = 60.0,
    speeds: Annotated[str, typer.Option(help="Comma-separated replay speeds: 1 = real time, 0 = as fast as possible.")] = "1,0",
    threads: Annotated[int, typer.Option(help="Daemon inference threads (0 = all cores).")] = 1,
    generate: Annotated[bool, typer.Option(help="Run the daemon with --generate.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for latency.json (raw latencies) and latency.png.")] = Path("bench-serve"),
) -> None:
    """End-to-end latency of the real daemon (producer send -> subscriber receive): p50/p99/p99.9/max, windows/s,
    deadline misses, CPU use, with a bare ZMQ round trip and a bare model decode measured in the same run."""
    from rtdecode.bench_serve import bench_serve
    from rtdecode.io import load_session
    from rtdecode.runtime import Bundle
    from rtdecode.simulator import SimulationConfig, simulate

    if data is not None:
        session = load_session(data)
    else:
        b = Bundle.load(bundle)
        session = simulate(SimulationConfig(n_neurons=b.vocab.n_neurons, duration=duration))
    bench_serve(bundle, session, speeds=tuple(float(x) for x in speeds.split(",")), threads=threads,
                generate=generate, out_dir=out, log=console.print)


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `rtdecode export`).", exists=True, file_okay=False)],
    input: Annotated[str, typer.Option("--input", help="Endpoint to bind for producers (PULL). Loopback unless you say otherwise.")] = "tcp://127.0.0.1:5555",
    output: Annotated[str, typer.Option(help="Endpoint to bind for subscribers (PUB).")] = "tcp://127.0.0.1:5556",
    backend: Annotated[str, typer.Option(help="Inference backend: onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt, auto.")] = "onnxruntime",
    threads: Annotated[int, typer.Option(help="Inference threads (1 measured best for tail latency on small CPUs; 0 = all cores).")] = 1,
    generate: Annotated[bool, typer.Option(help="Also publish the predicted activity of the next window.")] = False,
    record: Annotated[Optional[Path], typer.Option(help="Directory for a crash-safe recording of every message in and out.")] = None,
    deadline_ms: Annotated[Optional[float], typer.Option(help="Per-window latency budget (default: the window length).")] = None,
    no_skip: Annotated[bool, typer.Option("--no-skip", help="Decode every window even when several close at once.")] = False,
    start: Annotated[float, typer.Option(help="Session start time, s (the first window starts at the first grid point at or after it).")] = 0.0,
    status_interval: Annotated[float, typer.Option(help="Seconds between status messages.")] = 1.0,
) -> None:
    """Run the live decoding daemon: spikes, frames and behavior in over ZeroMQ; decodes and activity out.

    Protocol: docs/protocol.md. Stops cleanly on Ctrl-C or SIGTERM (the recording is flushed first).
    """
    import logging
    import signal
    import threading

    from rtdecode.daemon import Daemon, ServeConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServeConfig(input=input, output=output, backend=backend, threads=threads, generate=generate,
                         record=record, deadline_ms=deadline_ms, skip_backlog=not no_skip, start=start,
                         status_interval=status_interval)
    try:
        daemon = Daemon(bundle, config)
    except (ValueError, RuntimeError, ImportError) as e:
        _fail(str(e))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=daemon.run, args=(stop,), name="rtdecode-serve")
    thread.start()
    if daemon.ready.wait(30):
        console.print(f"serving {bundle} on {daemon.decoder.backend.name}: input {daemon.input_endpoint}, "
                      f"output {daemon.output_endpoint}" + (f", recording to {daemon.recorder.path}" if daemon.recorder else ""))
    while thread.is_alive():
        thread.join(0.2)
    s = daemon.status()
    console.print(f"stopped: {s['windows']} windows decoded, latency p50 {s['latency_ms']['p50']:.2f} ms, "
                  f"p99 {s['latency_ms']['p99']:.2f} ms, deadline misses {s['deadline_misses']}")


@app.command()
def replay(
    source: Annotated[Path, typer.Argument(help="A session (.npz/.nwb) or a recording (.rtrec) to stream.", exists=True, dir_okay=False)],
    to: Annotated[str, typer.Option(help="The daemon's input endpoint.")] = "tcp://127.0.0.1:5555",
    speed: Annotated[float, typer.Option(help="1 = real time, 2 = twice as fast, 0 = as fast as possible.")] = 1.0,
    batch: Annotated[float, typer.Option(help="Seconds of data per spike message (sessions only).")] = 0.005,
    behavior: Annotated[str, typer.Option(help="Comma-separated behavior variables to stream as inputs (sessions only).")] = "",
    t0: Annotated[Optional[float], typer.Option(help="Start of the replayed span, s (sessions only).")] = None,
    t1: Annotated[Optional[float], typer.Option(help="End of the replayed span, s (sessions only).")] = None,
) -> None:
    """Stream a session or a recording to a daemon as a real producer would: time-ordered, paced, batched."""
    import time

    from rtdecode.client import Producer

    with Producer(to) as producer:
        if source.suffix == ".rtrec":
            from rtdecode.recording import replay_messages

            start, n = time.monotonic(), 0
            for offset, frames in replay_messages(source):
                if speed > 0 and (delay := start + offset / speed - time.monotonic()) > 0:
                    time.sleep(delay)
                producer.send(frames)
                n += 1
            console.print(f"replayed {n} recorded input messages to {to} ({producer.dropped} dropped)")
            return
        from rtdecode.io import load_session
        from rtdecode.replay import send_paced, session_messages

        session = load_session(source)
        names = tuple(b for b in behavior.split(",") if b)
        counts = send_paced(producer, session_messages(session, batch=batch, behavior=names, t0=t0, t1=t1), speed=speed)
    console.print(f"replayed {counts['data_seconds']:.1f} s of data in {counts['wall_seconds']:.1f} s to {to}: "
                  + ", ".join(f"{int(v)} {k}" for k, v in counts.items() if k in ("spikes", "frame", "behavior", "clock"))
                  + f", {int(counts['dropped'])} dropped")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo-out"),
    quick: Annotated[bool, typer.Option(help="A first look in about a minute: 60-s session, 60 training steps.")] = False,
    duration: Annotated[float, typer.Option(help="Simulated seconds (ignored with --quick).")] = 600.0,
    train_minutes: Annotated[float, typer.Option(help="Training time budget, minutes (ignored with --quick).")] = 5.0,
    skip_training: Annotated[bool, typer.Option(help="Stop after the data stages (no torch needed).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the simulated session and the split.")] = 0,
) -> None:
    """Run the whole pipeline on the built-in simulated session and print a summary.

    Simulates a ground-truth hub network with video and behavior -> tokenizes it (checking the live window against
    offline tokenization) -> trains the small model -> exports a bundle -> serves it with the daemon -> replays the
    held-out block in real time over ZeroMQ -> scores the live decodes against the truth and a ridge baseline.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from rtdecode.demo import run_demo

    with Progress(
        TextColumn("simulating"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
        console=console, transient=True,
    ) as bar:
        task = bar.add_task("sim", total=1.0)
        result = run_demo(
            out, duration=60.0 if quick else duration, seed=seed, log=bar.console.print,
            progress=lambda frac: bar.update(task, completed=frac),
            train_steps=0 if skip_training else (60 if quick else -1),
            train_minutes=0.0 if quick else train_minutes, parity_windows=4 if quick else 16,
        )
    _print_summary(result["session"], title=f"simulated session ({out / 'session.npz'})")
    if "decoding" in result:
        t = Table(title="live decoding of the held-out block (through the daemon)", title_justify="left")
        for col in ("variable", "live decode r", "ridge r (offline)"):
            t.add_column(col, justify="right" if col != "variable" else "left")
        for name, sc in result["decoding"].items():
            t.add_row(name, f"{sc['live_r']:.3f}", f"{sc['ridge_r']:.3f}")
        console.print(t)
        sv = result["serve"]
        console.print(f"served {sv['windows']}/{sv['expected']} windows: end-to-end latency p50 {sv['latency_p50_ms']:.2f} ms, "
                      f"p99 {sv['latency_p99_ms']:.2f} ms, deadline misses {sv['deadline_misses']}")
    console.print(f"[green]demo finished[/]: summary in {out / 'demo-summary.json'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
