"""`rtdecode monitor`: a local web page showing a running daemon's decodes, spikes, latency and counters."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from rtdecode.cli.app import app, console, fail, one_line
from rtdecode.cli.options import ClientKeys, ServerKey
from rtdecode.cli.selection import load_selected


@app.command()
def monitor(
    output: Annotated[str, typer.Option(help="The daemon's output (PUB) endpoint: the monitor subscribes to it.")] = (
        "tcp://127.0.0.1:5556"
    ),
    input_endpoint: Annotated[
        str,
        typer.Option(
            "--input",
            help="The daemon's input endpoint, used only to ask for its description (a control 'describe'); "
            "'' sends nothing.",
        ),
    ] = "tcp://127.0.0.1:5555",
    session: Annotated[
        Path | None,
        typer.Option(
            help="The session (.npz/.nwb) being replayed into the daemon: its recorded behavior is drawn beside "
            "each decode, and its recorded spikes as a raster.",
            exists=True,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the web page is served on (loopback: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port of the web page (0: any free port).")] = 8765,
    history: Annotated[int, typer.Option(help="Decodes kept and drawn (600 = 30 s of 50-ms windows).")] = 600,
    rate: Annotated[float, typer.Option(help="Most page updates per second (changes are batched; at most 20).")] = 10.0,
    server_key: ServerKey = None,
    client_keys: ClientKeys = None,
) -> None:
    """Serve a web page that watches a running daemon (`rtdecode serve`): live traces of every decoded variable
    (beside the recorded value when --session names the replayed session), spikes per window, the recorded and
    predicted spike rasters, a latency histogram with p50/p99, the daemon's counters with rejections
    highlighted, and the model's description; with `serve --publish-windows`, also the spikes as the daemon
    windowed them. The monitor is a separate process and one more subscriber of the daemon's outputs: it never
    blocks the daemon (a PUB socket does not wait for a slow subscriber), runs at lower priority (nice 10) so it
    yields the CPU to the daemon, updates the page at most --rate times a second, and sends the daemon nothing
    but a request for its description. Needs the monitor extra (pip install 'rtdecode\\[monitor]'). Stop with
    Ctrl-C.
    """
    with contextlib.suppress(OSError, AttributeError):  # best effort: leave the CPU to the daemon on a small rig
        os.nice(10)
    import zmq

    try:
        from rtdecode.monitor.server import MonitorServer
    except ImportError as e:
        fail(str(e))
    from rtdecode.monitor.feed import Feed, FeedOptions, MonitorState
    from rtdecode.monitor.recorded import Recorded
    from rtdecode.wire.auth import is_loopback

    if history < 1:
        fail(f"--history must be at least 1, got {history}")
    recorded = Recorded(load_selected(session), session) if session is not None else None
    options = FeedOptions(
        output=output,
        input=input_endpoint or None,
        history=history,
        curve_server_key=server_key,
        curve_keys=client_keys,
    )
    state = MonitorState(options, recorded)
    feed = Feed(state)
    server = MonitorServer(state, host=host, port=port, rate_hz=rate)
    try:
        feed.start()
        url = server.start()
    except zmq.ZMQError as e:  # an endpoint ZeroMQ cannot use
        feed.stop()
        fail(f"cannot connect to the daemon (--output {output!r}, --input {input_endpoint!r}): {one_line(e)}")
    except (ValueError, OSError, RuntimeError) as e:  # bad endpoint or key file, port in use
        feed.stop()
        fail(one_line(e))
    if not is_loopback(f"tcp://{host}:0"):
        console.print(f"[bold red]WARNING[/] the page is served on {host}: anyone who reaches it sees the decodes")
    console.print(f"monitoring {output}: open {url}")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(0.5):
        pass
    server.stop()
    feed.stop()
    counts = state.snapshot()
    console.print(f"monitor stopped: {counts['decode_count']} decodes received")
