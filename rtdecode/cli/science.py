"""CLI commands about the science: the evaluation report, connectivity from attention, stimulus attention maps,
embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rtdecode.cli.app import app, console, fail


@app.command()
def evaluate(
    from_: Annotated[
        Path,
        typer.Option(
            "--from",
            help="Run directory (`rtdecode train`) or bundle (`rtdecode export`).",
            exists=True,
            file_okay=False,
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(help="Session to evaluate on (its held-out split, as in training).", exists=True, dir_okay=False),
    ],
    out: Annotated[Path, typer.Option(help="Report folder: report.html, report.json, PNGs, latents.npz.")] = Path(
        "report"
    ),
    max_windows: Annotated[
        int, typer.Option(help="Held-out windows to generate from the recorded previous window (consecutive).")
    ] = 400,
    closed_loop_s: Annotated[
        float,
        typer.Option(
            help="Seconds of held-out windows generated in closed loop, each from the generated ones before it."
        ),
    ] = 60.0,
    latency_seconds: Annotated[
        float, typer.Option(help="Seconds of held-out data served at real time for the latency histogram (0 = skip).")
    ] = 20.0,
    fewshot: Annotated[
        Path | None,
        typer.Option(help="Folder of `tools/fewshot_curve.py` results to include.", exists=True, file_okay=False),
    ] = None,
    connectivity_windows: Annotated[
        int, typer.Option(help="Training windows whose attention is averaged (connectivity and stimulus maps).")
    ] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of sampling, the MLP and the shuffle control.")] = 0,
) -> None:
    """A self-contained HTML report (plus PNGs and a JSON of every number): behavior decoding vs ridge / MLP /
    shuffle, generation (teacher-forced and closed loop) vs Poisson and GLM baselines, connectivity vs ground truth, embeddings, few-shot, latency."""
    from rtdecode.report.evaluate import evaluate_report

    try:
        evaluate_report(
            from_,
            data,
            out,
            max_windows=max_windows,
            closed_loop_s=closed_loop_s,
            latency_seconds=latency_seconds,
            fewshot_dir=fewshot,
            connectivity_windows=connectivity_windows,
            seed=seed,
            log=console.print,
        )
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    console.print(f"open {out / 'report.html'} in a browser")


@app.command()
def connectivity(
    from_run: Annotated[
        Path,
        typer.Option(
            "--from",
            help="Run directory (spikes_only or, to see the stimulus too, spikes_frames works best).",
            exists=True,
            file_okay=False,
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="Session with ground truth (truth/W, truth/hubs) from `rtdecode simulate`.",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for connectivity.npz, report.json/html and connectivity.png.")
    ] = Path("connectivity-out"),
    windows: Annotated[int, typer.Option(help="Training windows whose attention is averaged.")] = 3000,
) -> None:
    """Directed connectivity from the model's causal self-attention, scored against the simulator's true W
    (AUROC/AUPRC of true edges, hub recovery, direction index) beside correlation and lagged-correlation baselines,
    on the hub circuit and on all non-zero weights."""
    from rtdecode.io import load_session
    from rtdecode.report.document import Report
    from rtdecode.report.run_sections import connectivity_section
    from rtdecode.training.checkpoint import LoadedRun

    session = load_session(data)
    if not {"W", "hubs", "community"} <= set(session.truth):
        fail(f"{data} has no ground truth (truth/W, hubs, community): simulate one with `rtdecode simulate`")
    report = Report(out, "rtdecode connectivity", {"run": str(from_run), "session": str(data)})
    sec = report.section("connectivity", "Connectivity from attention")
    connectivity_section(sec, out, LoadedRun(from_run), session, windows, log=lambda _: None)
    report.write()
    for edges in ("hub_circuit", "all_weights", "visual"):
        if edges not in sec.numbers["scores"]["attention"]:
            continue
        t = Table(
            title=f"{edges.replace('_', ' ')}: connectivity vs ground truth ({windows} windows)", title_justify="left"
        )
        for col in ("matrix", "AUROC", "AUPRC", "hubs found", "direction index"):
            t.add_column(col, justify="left" if col == "matrix" else "right")
        for name, s in sec.numbers["scores"].items():
            e = s[edges]
            t.add_row(
                name,
                f"{e['auroc']:.3f}",
                f"{e['auprc']:.3f}",
                f"{e['hubs_found']}/{e['hubs_total']}",
                f"{e['direction_index']:.2f}",
            )
        console.print(t)
    bar, judged = sec.numbers["bar"], sec.numbers["judged_reading"]
    console.print(
        f"bar ({judged}, hub circuit: AUROC >= 0.85, hubs found, direction > 1, beats every baseline): "
        f"{'met' if bar['met'] else 'NOT met: ' + ', '.join(k for k, v in bar.items() if k != 'met' and not v)}"
    )
    auprc_bar = sec.numbers["auprc_bar"]
    console.print(
        f"bar ({judged}, hub circuit: AUPRC within 0.05 of the best directed baseline, "
        f"{auprc_bar['best_baseline']}, and a "
        f"direction index at least its): {'met' if auprc_bar['met'] else 'NOT met'}"
    )
    for reading, bars in sec.numbers["auprc_bar_by_reading"].items():
        verdicts = [f"{'met' if b['met'] else 'NOT met'} vs {b['best_baseline']} ({kind})" for kind, b in bars.items()]
        console.print(f"  AUPRC bar, {reading}: " + "; ".join(verdicts))
    for key, against in (
        ("stimulus_bar_uncorrected", "the lagged correlation and the cross-correlogram"),
        ("stimulus_bar", "every baseline"),
    ):
        visual_bar = sec.numbers[key]
        if visual_bar is not None:
            console.print(
                f"bar ({judged}, weights into the visual neurons: AUPRC above {against}, for a model that sees the "
                f"frames): {'met' if visual_bar['met'] else 'NOT met'} ({visual_bar['auprc']:.3f} vs "
                f"{visual_bar['best_auprc']:.3f}, {visual_bar['best_baseline']})"
            )
    console.print(f"wrote {out / 'report.json'}, {out / 'connectivity.npz'} and {out / 'connectivity.png'}")


@app.command()
def stimulus(
    from_run: Annotated[
        Path,
        typer.Option("--from", help="Run directory of a model that takes video.", exists=True, file_okay=False),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="Session with true receptive fields (truth/receptive_fields) from `rtdecode simulate`.",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for report.json/html and stimulus.png.")] = Path("stimulus-out"),
    windows: Annotated[int, typer.Option(help="Training windows whose attention is averaged.")] = 3000,
) -> None:
    """Stimulus attention maps (the paper's visual-attention figure): where in the video the model looks when it
    predicts each visual neuron's spikes (gradient-weighted frame cross-attention, keyed by the predicted neuron;
    raw attention beside it), scored against the simulator's true receptive fields beside a spike-triggered
    average of the same frames, and beside the model's input gradient (how much each patch's pixels move each
    neuron's predicted spikes: if that does not follow the fields, the model holds none to attend to)."""
    from rtdecode.io import load_session
    from rtdecode.report.document import Report
    from rtdecode.report.run_sections import stimulus_section
    from rtdecode.training.checkpoint import LoadedRun

    session = load_session(data)
    if not {"receptive_fields", "visual_neurons"} <= set(session.truth) or session.frames is None:
        fail(f"{data} has no video or no true receptive fields: simulate one with `rtdecode simulate` (.npz)")
    run = LoadedRun(from_run)
    if not run.config.frames.enabled:
        fail(f"{from_run} takes no video ([frames] enabled = false): there is no stimulus attention to map")
    report = Report(out, "rtdecode stimulus attention", {"run": str(from_run), "session": str(data)})
    sec = report.section("stimulus", "Stimulus attention")
    stimulus_section(sec, out, run, session, windows, log=console.print)
    report.write()
    console.print(f"wrote {out / 'report.json'}, {out / 'report.html'} and {out / 'stimulus.png'}")


@app.command()
def embed(
    from_run: Annotated[
        Path, typer.Option("--from", help="Run directory (`rtdecode train`).", exists=True, file_okay=False)
    ],
    data: Annotated[Path, typer.Option(help="Session whose windows are embedded.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Folder for latents.npz, embedding.png and report.json/html.")] = Path(
        "embed-out"
    ),
) -> None:
    """Per-window contrastive latents (npz), a 3-D projection coloured by speed, and how linearly speed can be read
    from them (ridge fitted on training windows, scored on held-out windows)."""
    from rtdecode.core.window_data import WindowData, make_split
    from rtdecode.io import load_session
    from rtdecode.report.document import Report
    from rtdecode.report.run_sections import embedding_section
    from rtdecode.training.checkpoint import LoadedRun

    run = LoadedRun(from_run)
    session = load_session(data)
    wd = WindowData(session, run.config)
    report = Report(out, "rtdecode embed", {"run": str(from_run), "session": str(data)})
    sec = report.section("embedding", "Embeddings")
    embedding_section(sec, out, run, wd, make_split(wd, run.config), log=console.print)
    report.write()
    console.print(f"wrote {out / 'latents.npz'}, {out / 'embedding.png'} and {out / 'report.json'}")
