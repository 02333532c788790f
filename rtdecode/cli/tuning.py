"""CLI commands that start from a trained run: finetune (few labels) and adapt (a new recording day)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rtdecode.cli.app import app, console, fail
from rtdecode.cli.model import print_train_result
from rtdecode.cli.selection import BehaviorFile, Units, load_selected


@app.command()
def finetune(
    from_run: Annotated[
        Path,
        typer.Option("--from", help="Pretrained run directory (from `rtdecode train`).", exists=True, file_okay=False),
    ],
    data: Annotated[Path, typer.Option(help="Session file to fine-tune on.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Run directory for the fine-tuned model.")],
    fraction: Annotated[
        float, typer.Option(help="Fraction of training windows with behavior labels to use (0-1].")
    ] = 0.01,
    freeze: Annotated[
        str, typer.Option(help="none: train all; top: fused stack + behavior heads; backbone: behavior heads only.")
    ] = "backbone",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 300,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    from_scratch: Annotated[
        bool, typer.Option(help="Same architecture from random weights (the baseline to beat).")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Few-shot fine-tuning: decode behavior from a pretrained model using a small labelled fraction of windows."""
    from rtdecode.training.finetune import finetune as run_finetune

    try:
        result = run_finetune(
            from_run,
            data,
            out,
            fraction=fraction,
            freeze=freeze,
            steps=steps,
            lr=lr,
            from_scratch=from_scratch,
            device=device,
            log=console.print,
        )
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    print_train_result(result)


@app.command()
def adapt(
    from_run: Annotated[
        Path,
        typer.Option("--from", help="Pretrained run directory (from `rtdecode train`).", exists=True, file_okay=False),
    ],
    data: Annotated[Path, typer.Option(help="The new recording day (a session file or a phy folder).", exists=True)],
    out: Annotated[Path, typer.Option(help="Run directory for the adapted model (export and serve it as any run).")],
    minutes: Annotated[float, typer.Option(help="Minutes from the start of the new day to adapt on.")] = 2.0,
    labels: Annotated[
        float,
        typer.Option(
            help="Fraction of those windows whose behavior labels to use: 0 learns the new units from spikes alone "
            "(the heads stay as pretrained); above 0 also fine-tunes the behavior heads and the fused stack."
        ),
    ] = 0.0,
    same_units: Annotated[
        bool,
        typer.Option(
            help="A unit ID the new day shares with the pretrained run is the same unit: start from its rows."
        ),
    ] = False,
    unit_map: Annotated[
        Path | None,
        typer.Option(
            help='JSON {"new unit ID": pretrained unit ID, ...}: which new units are pretrained ones.',
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps at most.")] = 400,
    max_seconds: Annotated[float, typer.Option(help="Wall-clock budget of the adaptation, seconds.")] = 60.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    units: Units = "good",
    behavior: BehaviorFile = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """Adapt a pretrained run to a new recording day with other sorted units, in about a minute.

    Learns only the new day's unit embeddings (and their rows of the next-unit head) from its first --minutes of
    spikes, with everything else frozen: no labels needed, the pretrained behavior heads decode the new day.
    Say which units are the same as pretrained ones with --same-units or --unit-map; the others start from the
    pretrained units' mean.
    """
    from rtdecode.data.session import SessionError
    from rtdecode.training.adapt import adapt as run_adapt

    session = load_selected(data, units, behavior) if data.is_dir() or behavior is not None else data
    try:
        result = run_adapt(
            from_run,
            session,
            out,
            minutes=minutes,
            labels=labels,
            same_units=same_units,
            unit_map=unit_map,
            steps=steps,
            max_seconds=max_seconds,
            lr=lr,
            device=device,
            log=console.print,
        )
    except (ValueError, FileNotFoundError, SessionError) as e:
        fail(str(e))
    print_train_result(result)
