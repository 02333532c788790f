"""CLI commands about data: simulate, info, prepare, demo."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from rtdecode.cli.app import app, console, fail
from rtdecode.cli.selection import T0, T1, BehaviorFile, Epoch, Trials, Units, load_selected

SessionPath = Annotated[
    Path,
    typer.Argument(help="Session file (.npz rtdecode native, or .nwb) or a Kilosort/phy output folder.", exists=True),
]


def _window_options(window: float, prev_window: float, dt: float, block_size: int, prev_block_size: int) -> Any:
    from rtdecode.data.tokenizer import WindowConfig

    try:
        return WindowConfig(
            window=window, prev_window=prev_window, dt=dt, block_size=block_size, prev_block_size=prev_block_size
        )
    except ValueError as e:
        fail(str(e))


@app.command()
def info(
    session: SessionPath,
    window: Annotated[float, typer.Option(help="Window length for the token preview, s.")] = 0.05,
    block_size: Annotated[
        int,
        typer.Option(
            help="Token slots per window (SOS+EOS included) for the truncation preview; 0 = derive them as training does."
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")] = False,
    units: Units = "good",
    behavior: BehaviorFile = None,
    t0: T0 = None,
    t1: T1 = None,
    epoch: Epoch = None,
    trials: Trials = None,
) -> None:
    """Summarise a session: neurons, duration, firing rates, modalities, and what tokenization would give."""
    from rtdecode.data.summary import session_summary
    from rtdecode.data.tokenizer import WindowConfig

    s = load_selected(session, units, behavior, t0, t1, epoch, trials)
    summary = session_summary(s, WindowConfig(window=window, block_size=block_size, prev_block_size=0))
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
        f"({'derived: ' if k.get('block_size_derived') else ''}{k['spikes_truncated']} spikes truncated)",
    )
    console.print(t)


@app.command()
def prepare(
    session: SessionPath,
    out: Annotated[Path, typer.Option(help="Directory for the token store (created).")],
    window: Annotated[float, typer.Option(help="Current window length, s.")] = 0.05,
    prev_window: Annotated[float, typer.Option(help="History window before each window, s.")] = 0.05,
    dt: Annotated[float, typer.Option(help="Time quantum inside a window, s.")] = 0.01,
    block_size: Annotated[
        int,
        typer.Option(
            help="Token slots per window, SOS and EOS included; 0 = derived by `rtdecode train` from the training windows."
        ),
    ] = 0,
    prev_block_size: Annotated[int, typer.Option(help="Token slots for the history; 0 = derived at training.")] = 0,
    units: Units = "good",
    behavior: BehaviorFile = None,
    t0: T0 = None,
    t1: T1 = None,
    epoch: Epoch = None,
    trials: Trials = None,
) -> None:
    """Tokenize a session once and store the tokens for training (memory-mapped arrays + tokens.json)."""
    from rtdecode.data.tokenizer import tokenize_session
    from rtdecode.io.token_store import save_tokens

    cfg = _window_options(window, prev_window, dt, block_size, prev_block_size)
    s = load_selected(session, units, behavior, t0, t1, epoch, trials)
    tokens = tokenize_session(s.spike_times, s.spike_neurons, s.n_neurons, s.start, s.stop, cfg, s.neuron_ids)
    save_tokens(tokens, out, source={"session": str(session)})
    from rtdecode.data.budget import budget_report

    budget = budget_report(tokens, np.arange(tokens.n_windows), cfg)
    console.print(
        f"wrote {out}: {tokens.n_windows:,} windows, {tokens.bins.size:,} spikes (every spike stored); "
        + budget.describe()
    )


_DAYS_DEFAULTS = {"overlap": 0.7, "recorded": 0.75, "drift": 0.1}


def _simulate(
    config: Any,
    out: Path | None,
    days: int | None,
    overlap: float | None,
    recorded: float | None,
    drift: float | None,
) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from rtdecode.io import save_session
    from rtdecode.sim.simulator import simulate

    day_options = {"overlap": overlap, "recorded": recorded, "drift": drift}
    if days is None:
        given = [f"--{k}" for k, v in day_options.items() if v is not None]
        if given:
            fail(f"{', '.join(given)}: only for several recording days; add --days K (and --out DIR)")
    else:
        options = {k: _DAYS_DEFAULTS[k] if v is None else v for k, v in day_options.items()}
        _validate_days(config, out, days, options)
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("sim", total=1.0)
        progress = lambda frac: bar.update(task, completed=frac)  # noqa: E731
        if days is not None:
            _simulate_days(config, out or Path("days"), days, options, progress)
            return
        session = simulate(config, progress=progress)
    out = out or Path("session.npz")
    save_session(session, out)
    console.print(
        f"wrote {out}: {session.n_neurons} neurons, {session.duration:.0f} s, {session.n_spikes:,} spikes "
        f"({session.firing_rates().mean():.2f} Hz mean), modalities: {', '.join(session.modalities())}"
    )


def _validate_days(config: Any, out: Path | None, days: int, options: dict[str, float]) -> None:
    """Fail before simulating anything when --days' options cannot be met."""
    from rtdecode.sim.days import check_days

    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; with --days, --out names a folder for day0.npz ... and days.json")
    try:
        check_days(config, days, **options)
    except ValueError as e:
        fail(str(e))


def _simulate_days(config: Any, out: Path, days: int, options: dict[str, float], progress: Any) -> None:
    from rtdecode.sim.days import save_days, simulate_days

    sessions = simulate_days(config, days, progress=progress, **options)
    description = save_days(sessions, out)
    for entry, s in zip(description["sessions"], sessions):
        shared = entry["shared_with_previous_day"]
        console.print(
            f"wrote {out / entry['file']}: {s.n_neurons} units, {s.duration:.0f} s, {s.n_spikes:,} spikes "
            f"({s.firing_rates().mean():.2f} Hz mean)"
            + ("" if shared is None else f", {shared} units shared with day {entry['day'] - 1}")
        )
    console.print(f"wrote {out / 'days.json'}: {days} days of one circuit of {config.n_neurons} neurons")


def _register_simulate() -> None:
    from rtdecode.cli.options import dataclass_options
    from rtdecode.sim.simulator import SimulationConfig

    def option(name: str, annotation: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)

    extra = [
        option(
            "out",
            Annotated[
                Path | None,
                typer.Option(
                    help="Output session file (.npz keeps the ground truth; .nwb drops it) (default session.npz); "
                    "with --days, a folder for day0.npz ... and days.json (default days/)."
                ),
            ],
        ),
        option(
            "days",
            Annotated[
                int | None,
                typer.Option(
                    help="Simulate K recording days of one circuit (n_neurons is the whole circuit): each day "
                    "records a different subset of its neurons under new unit IDs, with its own stimulus, "
                    "behavior and spikes, and rates and tuning drifting; truth/circuit_neuron maps units to the "
                    "circuit.",
                    show_default=False,
                ),
            ],
        ),
        option(
            "overlap",
            Annotated[
                float | None,
                typer.Option(
                    help="With --days: fraction in (0, 1] of a day's units recorded again the next day (default 0.7).",
                    show_default=False,
                ),
            ],
        ),
        option(
            "recorded",
            Annotated[
                float | None,
                typer.Option(
                    help="With --days: units recorded per day, a count (e.g. 300) or a fraction of "
                    "n_neurons (e.g. 0.75) (default 0.75).",
                    show_default=False,
                ),
            ],
        ),
        option(
            "drift",
            Annotated[
                float | None,
                typer.Option(
                    help="With --days: SD per day of a random walk on each neuron's log base rate and log "
                    "tuning gain (0.1 = ~10% a day; day k is off by drift x sqrt(k)) (default 0.1).",
                    show_default=False,
                ),
            ],
        ),
    ]
    command = dataclass_options(
        SimulationConfig,
        _simulate,
        "Simulate a ground-truth session: a hub network (known weights W, target x source) driven by a visual "
        "stimulus and coupled to running speed and eye position. Writes .npz (with the truth) or .nwb. With "
        "--days K: K recording days of that circuit, units resampled and drifting, in a folder.",
        extra=extra,
    )
    app.command(name="simulate")(command)


_register_simulate()


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo-out"),
    quick: Annotated[
        bool, typer.Option(help="A first look in about 2 minutes: 60-s session, 60 training steps.")
    ] = False,
    duration: Annotated[float, typer.Option(help="Simulated seconds (ignored with --quick).")] = 600.0,
    train_minutes: Annotated[float, typer.Option(help="Training time budget, minutes (ignored with --quick).")] = 5.0,
    skip_training: Annotated[bool, typer.Option(help="Stop after the data stages (no torch needed).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the simulated session and the split.")] = 0,
    reuse: Annotated[
        bool,
        typer.Option(
            help="Reuse the session, run and bundle already in --out (skip simulating, training and exporting)."
        ),
    ] = False,
    report: Annotated[bool, typer.Option(help="Write the evaluation report to <out>/report/ at the end.")] = True,
    connectivity_minutes: Annotated[
        float,
        typer.Option(
            help="Also train a model that learns only the spikes while seeing the video (config spikes_frames) for "
            "this many minutes (10 reaches the figures in the docs) and score its attention against the true "
            "connectivity in <out>/connectivity/ (at most 60 steps with --quick; 0: skip; the demo's own model "
            "decodes behavior, and its attention carries no connectivity)."
        ),
    ] = 0.0,
) -> None:
    """Run the whole pipeline on the built-in simulated session and print a summary.

    Simulates a ground-truth hub network with video and behavior -> tokenizes it (checking the live window against
    offline tokenization) -> trains the small model -> exports a bundle -> serves it with the daemon -> replays the
    held-out block in real time over ZeroMQ -> scores the live decodes against the truth and a ridge baseline ->
    writes the evaluation report (<out>/report/report.html).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from rtdecode.demo import run_demo

    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("sim", total=1.0)
        result = run_demo(
            out,
            duration=60.0 if quick else duration,
            seed=seed,
            log=bar.console.print,
            progress=lambda frac: bar.update(task, completed=frac),
            train_steps=0 if skip_training else (60 if quick else -1),
            train_minutes=0.0 if quick else train_minutes,
            parity_windows=4 if quick else 16,
            reuse=reuse,
            report=report,
            connectivity_minutes=0.0 if skip_training else connectivity_minutes,
        )
    _print_summary(result["session"], title=f"simulated session ({out / 'session.npz'})")
    if "decoding" in result:
        t = Table(title="live decoding of the held-out block (through the daemon)", title_justify="left")
        for col in ("variable", "live decode r", "ridge r (offline)", "angular error, live / ridge"):
            t.add_column(col, justify="right" if col != "variable" else "left")
        for name, sc in result["decoding"].items():
            mae = f"{sc['live_mae_deg']:.1f} / {sc['ridge_mae_deg']:.1f} deg" if "live_mae_deg" in sc else ""
            t.add_row(name, f"{sc['live_r']:.3f}", f"{sc['ridge_r']:.3f}", mae)
        console.print(t)
        sv = result["serve"]
        console.print(
            f"served {sv['windows']}/{sv['expected']} windows: end-to-end latency p50 {sv['latency_p50_ms']:.2f} ms, "
            f"p99 {sv['latency_p99_ms']:.2f} ms, deadline misses {sv['deadline_misses']}"
        )
    if "report" in result:
        g = result["report"]["generation"]
        console.print(
            f"generation (held-out, vs Poisson at training rates): set F1 {g['generated']['set_f1']:.3f} vs "
            f"{g['poisson']['set_f1']:.3f}, per-neuron rate r {g['generated']['rate_correlation']:.3f} vs "
            f"{g['poisson']['rate_correlation']:.3f}"
        )
        _print_targets(result["report"]["science_targets"])
        console.print(f"report: {result['report']['path']}")
        if "connectivity_model" not in result:
            console.print(
                "connectivity: the demo's model decodes behavior, and its attention carries no connectivity; "
                "--connectivity-minutes 10 also trains a model that learns only the spikes (seeing the video) and "
                "scores its attention"
            )
    if "connectivity_model" in result:
        _print_targets(result["connectivity_model"]["science_targets"])
        console.print(f"connectivity of the spikes_frames model: {result['connectivity_model']['path']}")
    console.print(f"[green]demo finished[/]: summary in {out / 'demo-summary.json'}")


def _print_targets(rows: list[dict[str, Any]]) -> None:
    """The science targets of a report as a table: this run's figure, the bar, met or not."""
    t = Table(title="science targets (the report explains each)", title_justify="left")
    for col in ("target", "this run", "bar", "met"):
        t.add_column(col)
    for row in rows:
        t.add_row(row["target"], row["value"], row["bar"], "[green]yes[/]" if row["met"] else "[red]no[/]")
    console.print(t)
