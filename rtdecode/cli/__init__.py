"""The `rtdecode` command line. Each subcommand is a thin layer over a library function.

Commands live by concern in `data.py` (simulate, info, prepare, demo), `model.py` (train, finetune, generate,
export, bench model) and `serve.py` (serve, replay, bench serve) and `science.py` (connectivity); importing this package registers them all.
Heavy imports (torch, pynwb, onnxruntime) happen inside the commands that need them, so `rtdecode --help` and
the serve path stay fast and torch-free.
"""

from __future__ import annotations

import typer
from rich.console import Console

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
bench_app = typer.Typer(help="Benchmarks: latency percentiles and throughput, measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()


def fail(message: str) -> None:
    """Print an error the user can act on and exit with status 2."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def main() -> None:
    app()


# registering the commands (after `app` exists: the modules import it)
from rtdecode.cli import data, model, science, serve  # noqa: E402,F401  (imported for their side effect)
