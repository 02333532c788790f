"""CLI commands about models: train, generate, export, bench model (finetune and adapt: `tuning.py`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rtdecode.cli.app import app, bench_app, console, fail, one_line
from rtdecode.cli.selection import T0, T1, BehaviorFile, Epoch, Trials, Units, load_selected


@app.command()
def train(
    data: Annotated[
        list[Path],
        typer.Option(
            help="Session file (.npz or .nwb) or Kilosort/phy output folder to train on. Repeat it (or give a "
            "`rtdecode simulate --days` folder) to train one model on several sessions: shared backbone and heads, "
            "each session's units its own; per-session runs are written to <out>/sessions/<name>.",
            exists=True,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run directory for checkpoints, metrics.csv and TensorBoard logs.")],
    config: Annotated[
        str,
        typer.Option(
            help="Run config: a TOML file, or a built-in name (small, small_10ms, small_behavior_input, rig, release, reference, spikes_only, spikes_frames)."
        ),
    ] = "small",
    tokens: Annotated[
        Path | None, typer.Option(help="Token store from `rtdecode prepare` (else tokenized here).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly where it stopped.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Override [train] max_steps.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Override [train] max_minutes (0 = no time limit).")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Override [train] eval_every.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    allow_truncation: Annotated[
        bool, typer.Option(help="Train even if the config's token budget drops more than 0.1% of spikes.")
    ] = False,
    units: Units = "good",
    behavior: BehaviorFile = None,
    t0: T0 = None,
    t1: T1 = None,
    epoch: Epoch = None,
    trials: Trials = None,
) -> None:
    """Train a Neuroformer on a session: next-spike prediction, behavior decoding and contrastive alignment.

    Splits the session into contiguous time blocks (train/val/test with guard gaps), evaluates on validation every
    eval_every steps, keeps the latest and the best checkpoints (safetensors + JSON), and ends with test-split
    figures beside a ridge-regression baseline. Works under `torchrun --nproc-per-node K --no-python rtdecode train`.

    Token budgets (slots per window and per history) not set in the config are derived from the training windows
    (99.9% of windows kept whole) and printed; a budget that drops more than 0.1% of spikes is refused unless
    --allow-truncation. For 300+ units use --config rig (rtdecode's rig-scale model).

    Several sessions (--data repeated, or a `rtdecode simulate --days` folder) train one model: each session's
    units get their own embeddings, the rest is shared, each session is split on its own and scored on its own
    test windows; <out>/sessions/<name>/ holds each session as an ordinary run to export, serve or adapt from.
    Sessions must carry the same behavior variables and video format.
    """
    import dataclasses

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rtdecode.core.config import load_config
    from rtdecode.data.budget import TruncationError
    from rtdecode.training.train import train as run_train

    try:
        cfg = load_config(config)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    overrides: dict[str, Any] = {
        k: v
        for k, v in (("max_steps", max_steps), ("max_minutes", max_minutes), ("eval_every", eval_every))
        if v is not None
    }
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    with Progress(
        TextColumn("training"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=os.environ.get("RANK", "0") != "0",
    ) as bar:
        task = bar.add_task("train", total=cfg.train.max_steps, info="")

        def on_step(step: int, total: int, scalars: dict[str, float]) -> None:
            if step % 10 == 0 or step == total:
                bar.update(
                    task, completed=step, info=f"loss {scalars['total']:.3f}, {scalars['windows_per_s']:.0f} windows/s"
                )

        paths = days_folder_sessions(data[0]) if len(data) == 1 else data
        if paths is None:
            paths = data
        options = {"resume": resume, "device": device, "log": bar.console.print, "progress": on_step}
        options["allow_truncation"] = allow_truncation
        try:
            if len(paths) > 1:
                from rtdecode.data.session import SessionError
                from rtdecode.training.sessions import session_names, train_sessions

                if tokens is not None:
                    fail("--tokens is for one session; multi-session training tokenizes its sessions itself")
                sessions = [load_selected(p, units, behavior, t0, t1, epoch, trials) for p in paths]
                try:
                    result = train_sessions(cfg, sessions, out, names=session_names(paths), **options)
                except SessionError as e:
                    fail(str(e))
            else:
                path = paths[0]
                selected = path.is_dir() or any(x is not None for x in (behavior, t0, t1, epoch, trials))
                result = run_train(
                    cfg,
                    load_selected(path, units, behavior, t0, t1, epoch, trials) if selected else path,
                    out,
                    tokens_dir=tokens,
                    **options,
                )
        except TruncationError as e:
            fail(str(e))
    if result.test:
        print_train_result(result)


def days_folder_sessions(path: Path) -> list[Path] | None:
    """The session files of a `rtdecode simulate --days` folder (its days.json lists them), else None."""
    listing = path / "days.json"
    if not (path.is_dir() and listing.exists()):
        return None
    try:
        description = json.loads(listing.read_text())
        return [path / entry["file"] for entry in description["sessions"]]
    except (ValueError, KeyError, TypeError) as e:
        fail(f"{listing}: not a days listing written by `rtdecode simulate --days` ({e})")
        raise  # fail exits


def print_train_result(result: Any) -> None:
    t = Table(title=f"held-out test windows ({result.run_dir})", title_justify="left")
    t.add_column("metric")
    t.add_column("model", justify="right")
    t.add_column("baseline", justify="right")
    for key, value in result.test.items():
        if key.endswith(("_r", "_r2", "_mae_deg")):
            base = result.baseline.get(f"ridge_{key}")
            t.add_row(
                key.replace("_mae_deg", " error (deg)").replace("_r2", " R^2").replace("_r", " r"),
                f"{value:.3f}",
                f"{base:.3f} (ridge)" if base is not None else "",
            )
    t.add_row(
        "next-ID set F1 (true spike count given)",
        f"{result.test.get('set_f1', float('nan')):.3f}",
        f"{result.baseline.get('rate_set_f1', float('nan')):.3f} (rates)",
    )
    t.add_row(
        "next-ID set F1 (no count given)",
        f"{result.test.get('set_f1_threshold', float('nan')):.3f}",
        f"{result.baseline.get('rate_set_f1_threshold', float('nan')):.3f} (rates)",
    )
    t.add_row("next-ID accuracy", f"{result.test.get('id_accuracy', float('nan')):.3f}", "")
    console.print(t)
    console.print(f"{result.windows_per_s:.0f} training windows/s, {result.data_share:.1%} of the time loading data")


@app.command()
def generate(
    from_run: Annotated[
        Path, typer.Option("--from", help="Run directory (from `rtdecode train`).", exists=True, file_okay=False)
    ],
    data: Annotated[Path, typer.Option(help="Session whose windows to generate.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Output session file (.npz/.nwb) with the generated spikes.")],
    split: Annotated[str, typer.Option(help="Which windows: test, val, train or all.")] = "test",
    history: Annotated[
        str, typer.Option(help="true: condition on recorded history; generated: closed loop on the model's own output.")
    ] = "true",
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    max_windows: Annotated[int, typer.Option(help="Generate at most this many windows (0 = all).")] = 0,
) -> None:
    """Generate spikes window by window with the KV cache, and write them as a session file.

    With --history generated the windows must be consecutive: the longest contiguous run of the split is used.
    """
    import numpy as np

    from rtdecode.core.window_data import WindowData, make_split
    from rtdecode.data.session import Session
    from rtdecode.io import load_session, save_session
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.generate import SamplingConfig, generate_session

    run = LoadedRun(from_run)
    session = load_session(data)
    wd = WindowData(session, run.config)
    parts = make_split(wd, run.config)
    if split not in ("test", "val", "train", "all"):
        fail(f"--split must be test, val, train or all; got {split}")
    windows = np.arange(wd.n_windows) if split == "all" else getattr(parts, split)
    if history == "generated":
        runs = np.split(windows, np.flatnonzero(np.diff(windows) != 1) + 1)
        windows = max(runs, key=len)
    if max_windows:
        windows = windows[:max_windows]
    try:
        times, neurons, timing = generate_session(
            run.model,
            wd,
            windows,
            run.norm,
            history=history,
            sampling=SamplingConfig(temperature=temperature, top_p=top_p, seed=seed),
        )
    except ValueError as e:
        fail(str(e))
    starts = wd.tokens.window_starts()
    t0, t1 = float(starts[windows[0]]), float(starts[windows[-1]] + run.config.window.window)
    save_session(
        Session(
            times,
            neurons,
            session.n_neurons,
            min(t0, t1),
            max(t1, t0 + 1e-9),
            neuron_ids=session.neuron_ids,
            metadata={
                "source": "rtdecode generate",
                "run": str(from_run),
                "history": history,
                "windows": [int(windows[0]), int(windows[-1])],
                **timing,
            },
        ),
        out,
    )
    console.print(
        f"wrote {out}: {times.size:,} spikes in {windows.size} windows; {timing['ms_per_window']:.1f} ms "
        f"per window ({timing['windows_per_s']:.1f} windows/s, KV cache)"
    )


@app.command()
def export(
    from_run: Annotated[
        Path, typer.Option("--from", help="Run directory (from `rtdecode train`).", exists=True, file_okay=False)
    ],
    out: Annotated[Path, typer.Option(help="Bundle directory to write (ONNX graphs + manifest.json).")],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Session for parity checks on held-out windows (else synthetic windows).", exists=True, dir_okay=False
        ),
    ] = None,
    weights: Annotated[
        str, typer.Option(help="Which weights: model (latest), best-val_loss or best-behavior_r.")
    ] = "model",
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
        from rtdecode.core.window_data import WindowData, make_split
        from rtdecode.io import load_session
        from rtdecode.training.checkpoint import LoadedRun

        run = LoadedRun(from_run, weights=weights)
        wd = WindowData(load_session(data), run.config)
        test = make_split(wd, run.config).test
        windows = test[np.linspace(0, test.size - 1, min(parity_windows, test.size)).astype(np.int64)]
    try:
        manifest = export_bundle(
            from_run, out, weights=weights, data=wd, windows=windows, tolerance=tolerance, log=console.print
        )
    except Exception as e:  # an exporter error (torch.onnx, onnxruntime, parity) is one line, not a traceback
        fail(f"export of {from_run} failed: {one_line(e)}")
    p = manifest["parity"]
    console.print(
        f"[green]bundle written[/]: {out} (parity on {p['windows']} windows: "
        + (f"decode {p['decode_max_abs']:.1e}, " if "decode_max_abs" in p else "")
        + f"context {p['context_max_abs']:.1e}, step {p['step_max_abs']:.1e}"
        + (f", stream {p['stream_max_abs']:.1e}" if "stream_max_abs" in p else "")
        + f", greedy generation identical: {p['generation_identical']})"
    )
    if tensorrt:
        from rtdecode.runtime.bundle import Bundle
        from rtdecode.runtime.tensorrt_backend import build_engines, tensorrt_available

        if not tensorrt_available():
            console.print(
                "[yellow]TensorRT or a CUDA GPU is not available here: no engines built[/] "
                "(pip install 'rtdecode[tensorrt]' on a GPU machine, then re-run with --tensorrt)"
            )
            return
        build_engines(Bundle.load(out), fp16=fp16, log=console.print)


@bench_app.command("model")
def bench_model_command(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle directory (from `rtdecode export`).", exists=True, file_okay=False)
    ],
    backends: Annotated[
        str, typer.Option(help="Comma-separated backends to compare (onnxruntime, torch, onnxruntime-cuda, tensorrt).")
    ] = "onnxruntime,torch",
    repeats: Annotated[int, typer.Option(help="Decodes timed per backend.")] = 300,
    gen_windows: Annotated[int, typer.Option(help="Windows generated (KV cache vs full re-forward).")] = 5,
    spikes: Annotated[int, typer.Option(help="Spikes per synthetic window (the simulated session averages ~66).")] = 66,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads (0 = all cores).")] = 0,
    sweep: Annotated[
        bool, typer.Option(help="Also measure onnxruntime threads x spinning x graph optimisation level.")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every number to this JSON file.")] = None,
) -> None:
    """Decode latency (p50/p99/p99.9, batch 1) per backend and generation speed, with this machine's floors."""
    from rtdecode.bench.model import bench_model

    result = bench_model(
        str(bundle),
        backends=backends.split(","),
        repeats=repeats,
        gen_windows=gen_windows,
        spikes=spikes,
        threads=threads,
        sweep=sweep,
        log=console.print,
    )
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_out}")
