"""The options that say which part of a recording a command reads: which sorted units (a Kilosort/phy folder),
which behavior file joins them, which stretch of time, which NWB epochs or trials. Shared by `info`, `prepare`
and `train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rtdecode.cli.app import fail

Units = Annotated[
    str,
    typer.Option(help="Kilosort/phy folder only: good (units labelled good), mua (good and multi-unit) or all."),
]
BehaviorFile = Annotated[
    Path | None,
    typer.Option(
        "--behavior",
        help="Kilosort/phy folder only: a session file (.npz/.nwb) on the recording's clock whose behavior, "
        "frames and trials join the spikes.",
        exists=True,
        dir_okay=False,
    ),
]
T0 = Annotated[float | None, typer.Option("--t0", help="Keep the recording from this time on, s.")]
T1 = Annotated[float | None, typer.Option("--t1", help="Keep the recording before this time, s.")]
Epoch = Annotated[
    str | None,
    typer.Option(
        help="NWB only: keep the epochs tagged NAME (or the intervals table NAME), e.g. --epoch gratings. The "
        "session spans them and they become its trials: with 3 or more, training splits whole epochs.",
        metavar="NAME",
    ),
]
Trials = Annotated[
    str | None,
    typer.Option(
        help="NWB only: keep the trials whose COLUMN reads VALUE, e.g. --trials stimulus=grating (inside --epoch "
        "if given). They become the session's trials: training splits whole trials.",
        metavar="COLUMN=VALUE",
    ),
]


def load_selected(
    path: Path,
    units: str = "good",
    behavior: Path | None = None,
    t0: Any = None,
    t1: Any = None,
    epoch: str | None = None,
    trials: str | None = None,
) -> Any:
    """`load_session` with the selection, or a one-line error and exit status 2."""
    from rtdecode.data.session import SessionError
    from rtdecode.io import load_session

    try:
        return load_session(path, units=units, behavior=behavior, t0=t0, t1=t1, epoch=epoch, trials=trials)
    except (SessionError, ImportError, FileNotFoundError) as e:
        fail(str(e))
