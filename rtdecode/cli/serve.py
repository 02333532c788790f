"""CLI commands about serving: serve, keys, replay, describe, bench serve."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from rtdecode.cli.app import app, bench_app, console, fail
from rtdecode.cli.options import ClientKeys, ServerKey, dataclass_options
from rtdecode.serve.config import ServeConfig

err_console = Console(stderr=True)


@bench_app.command("serve")
def bench_serve_command(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle directory (from `rtdecode export`).", exists=True, file_okay=False)
    ],
    data: Annotated[
        Path | None,
        typer.Option(help="Session to replay (default: simulate one matching the model).", exists=True, dir_okay=False),
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of simulated session when --data is not given.")] = 60.0,
    speeds: Annotated[
        str, typer.Option(help="Comma-separated replay speeds: 1 = real time, 0 = as fast as possible.")
    ] = "1,0",
    threads: Annotated[int, typer.Option(help="Daemon inference threads (0 = all cores).")] = 1,
    generate: Annotated[bool, typer.Option(help="Run the daemon with --generate.")] = False,
    modes: Annotated[
        str,
        typer.Option(
            help="Comma-separated daemon modes, measured one after the other: window (decode at close), streaming (--streaming), streaming-warm (streaming with the pre-close cache warm-up, --warm-lead-ms 2)."
        ),
    ] = "window",
    block: Annotated[
        float,
        typer.Option(
            help="Seconds of data per spike message, each followed by its clock watermark: the rig's acquisition block. A close waits for its last block; with a model whose tokens are in spike-time order (the rig config) streaming runs every earlier block before the close."
        ),
    ] = 0.005,
    out: Annotated[Path, typer.Option(help="Folder for latency.json (raw latencies) and latency.png.")] = Path(
        "bench-serve"
    ),
) -> None:
    """End-to-end latency of the real daemon (producer send -> subscriber receive) and post-close latency (closing
    message received -> decode published): p50/p99/p99.9/max, windows/s, deadline misses, CPU use, per daemon mode,
    with a bare ZMQ round trip and a bare model decode measured in the same run."""
    from rtdecode.bench.serve import bench_serve
    from rtdecode.io import load_session
    from rtdecode.runtime import Bundle
    from rtdecode.sim.simulator import SimulationConfig, simulate

    if data is not None:
        session = load_session(data)
    else:
        b = Bundle.load(bundle)
        session = simulate(SimulationConfig(n_neurons=b.vocab.n_neurons, duration=duration))
    try:
        bench_serve(
            bundle,
            session,
            speeds=tuple(float(x) for x in speeds.split(",")),
            threads=threads,
            generate=generate,
            modes=tuple(m.strip() for m in modes.split(",")),
            block=block,
            out_dir=out,
            log=console.print,
        )
    except ValueError as e:
        fail(str(e))


def _serve(config: ServeConfig, bundle: Path) -> None:
    import logging
    import signal
    import threading

    from rtdecode.serve.daemon import Daemon, serve_in_thread
    from rtdecode.wire.auth import exposure_warnings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for warning in exposure_warnings((config.input, config.output), curve=config.curve_secret is not None):
        err_console.print(f"[bold red on white] WARNING [/] [bold red]{warning}[/]")
    try:
        daemon = Daemon(bundle, config)
    except (ValueError, RuntimeError, ImportError) as e:
        fail(str(e))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with serve_in_thread(daemon):
        mode = "streaming decode" if daemon.streaming else "decoding each window at close"
        console.print(
            f"serving {bundle} on {daemon.decoder.backend.name} ({mode}): input {daemon.input_endpoint}, "
            f"output {daemon.output_endpoint}"
            + (f", recording to {daemon.recorder.path}" if daemon.recorder else "")
            + (f", CURVE on ({len(daemon.curve.allow.keys)} client keys allowed)" if daemon.curve else "")
        )
        while not stopping.wait(0.2) and not daemon.stopped.is_set():
            pass
    s = daemon.status()
    console.print(
        f"stopped: {s['windows']} windows decoded, latency p50 {s['latency_ms']['p50']:.2f} ms, "
        f"p99 {s['latency_ms']['p99']:.2f} ms, deadline misses {s['deadline_misses']}"
    )


_BUNDLE = inspect.Parameter(
    "bundle",
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=Annotated[
        Path, typer.Argument(help="Bundle directory (from `rtdecode export`).", exists=True, file_okay=False)
    ],
)
app.command(name="serve")(
    dataclass_options(
        ServeConfig,
        _serve,
        """Run the live decoding daemon: spikes, frames and behavior in over ZeroMQ; decodes and activity out.

    Protocol: docs/protocol.md (Security: CURVE keys). Stops cleanly on Ctrl-C or SIGTERM (the recording is
    flushed first).
    """,
        extra=[_BUNDLE],
    )
)


@app.command()
def keys(
    out: Annotated[Path, typer.Option(help="Folder for the key files (created if missing).", file_okay=False)],
    name: Annotated[
        str, typer.Option(help="File name stem: writes NAME.key (public) and NAME.key_secret (private, mode 0600).")
    ] = "rtdecode",
    force: Annotated[
        bool, typer.Option(help="Replace an existing key pair (peers holding the old public key are then refused).")
    ] = False,
) -> None:
    """Make a CURVE key pair for `rtdecode serve --curve-secret` (the daemon) or a client (`--allow-client`).

    Give the daemon's NAME.key to clients and each client's NAME.key to the daemon; secret files never leave
    their machine.
    """
    from rtdecode.wire.auth import AuthError, write_keypair

    try:
        public, secret = write_keypair(out, name, force=force)
    except AuthError as e:
        fail(str(e))
    console.print(f"public key {public} (share it), secret key {secret} (mode 0600, keep it private)")


@app.command()
def replay(
    source: Annotated[
        Path,
        typer.Argument(help="A session (.npz/.nwb) or a recording (.rtrec) to stream.", exists=True, dir_okay=False),
    ],
    to: Annotated[str, typer.Option(help="The daemon's input endpoint.")] = "tcp://127.0.0.1:5555",
    speed: Annotated[float, typer.Option(help="1 = real time, 2 = twice as fast, 0 = as fast as possible.")] = 1.0,
    batch: Annotated[float, typer.Option(help="Seconds of data per spike message (sessions only).")] = 0.005,
    behavior: Annotated[
        str, typer.Option(help="Comma-separated behavior variables to stream as inputs (sessions only).")
    ] = "",
    t0: Annotated[float | None, typer.Option(help="Start of the replayed span, s (sessions only).")] = None,
    t1: Annotated[float | None, typer.Option(help="End of the replayed span, s (sessions only).")] = None,
    server_key: ServerKey = None,
    client_keys: ClientKeys = None,
) -> None:
    """Stream a session or a recording to a daemon as a real producer would: time-ordered, paced, batched."""
    import time

    from rtdecode.wire.client import Producer

    try:
        producer = Producer(to, curve_server_key=server_key, curve_keys=client_keys)
    except ValueError as e:  # rtdecode.wire.auth.AuthError included: a missing or malformed key file
        fail(str(e))
    with producer:
        if source.suffix == ".rtrec":
            from rtdecode.serve.recording import replay_messages

            start, n = time.monotonic(), 0
            for offset, frames in replay_messages(source):
                if speed > 0 and (delay := start + offset / speed - time.monotonic()) > 0:
                    time.sleep(delay)
                producer.send(frames)
                n += 1
            console.print(f"replayed {n} recorded input messages to {to} ({producer.dropped} dropped)")
            return
        from rtdecode.io import load_session
        from rtdecode.wire.replay import send_paced, session_messages

        session = load_session(source)
        names = tuple(b for b in behavior.split(",") if b)
        counts = send_paced(producer, session_messages(session, batch=batch, behavior=names, t0=t0, t1=t1), speed=speed)
    console.print(
        f"replayed {counts['data_seconds']:.1f} s of data in {counts['wall_seconds']:.1f} s to {to}: "
        + ", ".join(f"{int(v)} {k}" for k, v in counts.items() if k in ("spikes", "frame", "behavior", "clock"))
        + f", {int(counts['dropped'])} dropped"
    )


@app.command()
def describe(
    to: Annotated[
        str, typer.Option(help="The daemon's input endpoint (the request goes there).")
    ] = "tcp://127.0.0.1:5555",
    output: Annotated[
        str, typer.Option(help="The daemon's output endpoint (the answer comes from there).")
    ] = "tcp://127.0.0.1:5556",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the daemon.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole description as JSON.")] = False,
    server_key: ServerKey = None,
    client_keys: ClientKeys = None,
) -> None:
    """Ask a running daemon what it serves (protocol 1.1 `describe`): window grid, unit IDs, accepted behavior
    inputs, targets with units, frame size and rate, limits. Waits until the daemon is ready; exit status 1 when
    no answer comes (no daemon there, or one older than protocol 1.1)."""
    import json

    from rtdecode.wire.client import Producer, Subscriber

    try:
        with (
            Producer(to, curve_server_key=server_key, curve_keys=client_keys) as producer,
            Subscriber(output, topics=(), curve_server_key=server_key, curve_keys=client_keys) as sub,
        ):
            d = sub.describe(producer, timeout=timeout)
    except ValueError as e:  # a missing or malformed key file
        fail(str(e))
    except TimeoutError as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    d = {k: v for k, v in d.items() if k not in ("topic", "v", "seq", "t_send", "t_receive")}
    if as_json:
        print(json.dumps(d, indent=2))
        return
    w, n, m = d["window"], d["neurons"], d["model"]
    ids = n["unit_ids"]
    shown = ", ".join(map(str, ids[:6])) + (f", ... {ids[-1]}" if len(ids) > 6 else "")
    rows = [
        ("protocol", f"{d['protocol']} (ready)"),
        (
            "model",
            f"step {m['step']}, sha256 {m['sha256'][:12]}, {m['backend']}, streaming {m['streaming']}, generate {m['generate']}",
        ),
        (
            "window",
            f"{w['length_s'] * 1e3:g} ms from origin {w['origin_s']:g} s (quanta {w['quantum_s'] * 1e3:g} ms, history {w['history_s'] * 1e3:g} ms, context at {w['context_at']})",
        ),
        ("neurons", f"{n['n']}: unit IDs {shown}"),
        (
            "behavior inputs",
            ", ".join(f"{b['name']} ({b['unit'] or 'no unit'})" for b in d["behavior_inputs"]) or "none",
        ),
        (
            "targets",
            ", ".join(f"{t['name']} ({t['unit'] or 'no unit'}, {t['kind']})" for t in d["targets"])
            or "none (predicted activity only)",
        ),
        ("frames", _frames_line(d["frames"])),
        ("limits", ", ".join(f"{k} {v:,}" for k, v in d["limits"].items())),
        ("deadline", f"{d['deadline_ms']:g} ms per window"),
    ]
    for name, text in rows:  # names and units come from the wire: printed as text, never as rich markup
        console.print(f"[bold]{name:>16}[/bold]  {escape(text)}")


def _frames_line(frames: dict | None) -> str:
    if frames is None:
        return "none"
    rate = f" at {frames['rate_hz']:g} Hz" if frames.get("rate_hz") else ""
    return f"{frames['height']} x {frames['width']} uint8, {frames['n_frames']} per window{rate}"
