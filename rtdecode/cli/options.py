"""Command-line options generated from a config dataclass, so `--help` documents every knob and never drifts.

Each field becomes `--field-name` with its type, its default and the help text written for it in the class
docstring's "Attributes:" section. A field's `metadata={"flags": (...)}` names the option differently (e.g.
"--skip-backlog/--no-skip" for a boolean with a short negative form). Fixed-length tuples (frame_shape) are given as
comma-separated values; variable-length ones (`tuple[Path, ...]`) by repeating the option.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["ClientKeys", "ServerKey", "dataclass_options", "field_docs"]


def field_docs(cls: type) -> dict[str, str]:
    """Attribute descriptions from a Google-style "Attributes:" docstring section (names joined by ', ' allowed)."""
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" not in doc:
        return {}
    body = doc.split("Attributes:", 1)[1]
    docs: dict[str, str] = {}
    current: list[str] = []
    for line in body.splitlines():
        m = re.match(r"^    ([a-z_][a-z0-9_, ]*):\s*(.*)$", line)
        if m:
            current = [n.strip() for n in m.group(1).split(",")]
            for name in current:
                docs[name] = m.group(2).strip()
        elif line.startswith("        ") and current:
            for name in current:
                docs[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return docs


def dataclass_options(
    cls: type, body: Callable[..., None], doc: str, extra: Sequence[inspect.Parameter] = ()
) -> Callable[..., None]:
    """A typer command whose options are `extra` then `cls`'s fields; it calls `body(cls(**fields), **extras)`.

    Tuple fields (e.g. frame_shape) are given as comma-separated values: `--frame-shape 32,64`.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    params = list(extra)
    annotations: dict[str, Any] = {p.name: p.annotation for p in extra}
    for f in dataclasses.fields(cls):
        typ: Any = hints[f.name]  # built at run time: typer reads the annotation, not mypy
        default: Any = f.default
        if _repeated(typ):
            typ, default = Optional[list[typing.get_args(typ)[0]]], None  # type: ignore[misc]  # noqa: UP045 (a type built at run time, for typer)
        elif typing.get_origin(typ) is tuple:
            typ, default = str, ",".join(str(v) for v in default)
        flags = f.metadata.get("flags", ())
        metavar = typing.get_args(hints[f.name])[0].__name__.upper() if _repeated(hints[f.name]) else None
        ann = Annotated[
            typ, typer.Option(*flags, help=docs.get(f.name, ""), show_default=default is not None, metavar=metavar)
        ]
        annotations[f.name] = ann
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))

    def command(**kwargs: Any) -> None:
        extras = {p.name: kwargs.pop(p.name) for p in extra}
        for f in dataclasses.fields(cls):
            if _repeated(hints[f.name]):
                kwargs[f.name] = tuple(kwargs[f.name] or ())
            elif typing.get_origin(hints[f.name]) is tuple:
                elem = typing.get_args(hints[f.name])[0]
                kwargs[f.name] = tuple(elem(v) for v in str(kwargs[f.name]).split(","))
        try:
            config = cls(**kwargs)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        body(config, **extras)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__doc__ = doc
    return command


def _repeated(typ: Any) -> bool:
    """A variable-length tuple (`tuple[X, ...]`): an option given once per value."""
    return typing.get_origin(typ) is tuple and typing.get_args(typ)[-1:] == (Ellipsis,)


# the CURVE options of every client command (replay, describe, monitor): the daemon's key, this client's pair
ServerKey = Annotated[
    Path | None,
    typer.Option(help="The daemon's public key file, for a daemon run with --curve-secret.", dir_okay=False),
]
ClientKeys = Annotated[
    Path | None,
    typer.Option(help="This client's .key_secret file (its public key must be allowed by the daemon).", dir_okay=False),
]
