"""The `rtdecode` command line. Each subcommand is a thin layer over a library function.

Commands live by concern in `data.py` (simulate, info, prepare, demo), `model.py` (train, generate, export,
bench model), `tuning.py` (finetune, adapt), `serve.py` (serve, replay, describe, bench serve), `science.py`
(connectivity, evaluate), `bridge.py` (bridge lsl) and `monitor.py` (monitor), each registering on the one
application in `app.py`; importing this package registers them all.
Heavy imports (torch, pynwb, onnxruntime) happen inside the commands that need them, so `rtdecode --help` and
the serve path stay fast and torch-free.
"""

from __future__ import annotations

from rtdecode.cli import bridge, data, model, monitor, science, serve, tuning  # noqa: F401  (imported to register their commands)
from rtdecode.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
