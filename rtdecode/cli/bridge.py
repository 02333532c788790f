"""`rtdecode bridge ...`: the daemon fed from, and republishing to, a rig's acquisition middleware."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from rtdecode.cli.app import app, console, fail

bridge_app = typer.Typer(help="Bridges between the daemon and a rig's middleware (LSL).", no_args_is_help=True)
app.add_typer(bridge_app, name="bridge")


@bridge_app.command("lsl")
def lsl(
    bundle: Annotated[Path, typer.Argument(help="The bundle the daemon serves.", exists=True, file_okay=False)],
    spikes: Annotated[
        str,
        typer.Option(
            help="LSL spike stream name: one sample per spike, (unit, time) or (unit) with the sample's time."
        ),
    ],
    behavior: Annotated[
        list[str] | None,
        typer.Option(help="NAME=STREAM[:CHANNEL], repeatable: a behavior input of the model from an LSL stream."),
    ] = None,
    markers: Annotated[
        str | None, typer.Option(help="LSL marker stream: a 'reset' marker starts a new session.")
    ] = None,
    to: Annotated[str, typer.Option(help="The daemon's input endpoint.")] = "tcp://127.0.0.1:5555",
    sub: Annotated[str, typer.Option(help="The daemon's output endpoint.")] = "tcp://127.0.0.1:5556",
    unit_ids: Annotated[
        bool, typer.Option(help="Spike samples carry acquisition unit IDs (--no-unit-ids: model indices).")
    ] = True,
    time_correction: Annotated[
        bool, typer.Option(help="Add LSL's measured clock offset (senders on other machines; off on one machine).")
    ] = False,
    watermark: Annotated[
        str, typer.Option(help="all: windows close once every stream passed their end; spikes: once the spikes have.")
    ] = "all",
    lag: Annotated[float, typer.Option(help="Windows close at most this long after real time, s.")] = 0.02,
    prefix: Annotated[str, typer.Option(help="Name prefix of the decode and activity outlets.")] = "rtdecode",
) -> None:
    """Feed a running daemon (`rtdecode serve`) from LSL streams and republish its decodes (`<prefix>-decode`) and
    predicted activity (`<prefix>-activity`) as LSL outlets, so LSL tools record them. Needs the lsl extra
    (pylsl, whose wheel ships liblsl)."""
    from rtdecode.bridge.lsl import BehaviorChannel, LslBridge, LslBridgeConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = LslBridgeConfig(
            daemon_input=to,
            daemon_output=sub,
            bundle=str(bundle),
            spikes=spikes,
            behavior=tuple(BehaviorChannel.parse(b) for b in behavior or ()),
            markers=markers,
            unit_ids=unit_ids,
            time_correction=time_correction,
            watermark=watermark,
            lag=lag,
            prefix=prefix,
        )
        bridge = LslBridge(config)
    except (ValueError, ImportError) as e:
        fail(str(e))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        bridge.run(stop)
    except TimeoutError as e:
        fail(str(e))
    console.print(f"bridge stopped: {bridge.counters}")
