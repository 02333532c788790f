"""The typer application every command registers on, the console it prints to and the one way it fails."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

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
bench_app = typer.Typer(
    help="Benchmarks: latency percentiles and throughput, measured in one run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
console = Console()


def fail(message: str) -> None:
    """Print an error the user can act on and exit with status 2. The message is printed as written: brackets in
    it (`rtdecode[nwb]`, `[Errno 98]`) are text, not rich markup."""
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)


def one_line(error: BaseException, limit: int = 400) -> str:
    """An exception as one line: its type (when the message does not say it) and its message, whitespace
    collapsed and cut at `limit` characters. Third-party errors (onnxruntime, torch.onnx) span many lines."""
    text = " ".join(str(error).split()) or type(error).__name__
    if not text.startswith(type(error).__name__) and not isinstance(error, (RuntimeError, ValueError, OSError)):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
