"""The report file pair: report.json holds every number, report.html shows them with the figures beside.

Tables are built from the same values that go into the JSON, so the two cannot disagree; figures are PNG files in
the report folder referenced by relative path, so the folder can be copied, zipped or opened offline as is.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtdecode.io.atomic import atomic_write

__all__ = ["Report", "Section"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:.3em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%}figcaption{color:#555;font-size:.9em}
.note{color:#555}.verdict-ok{color:#070}.verdict-no{color:#a00}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


@dataclass
class Section:
    key: str
    title: str
    numbers: dict[str, Any] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)

    def text(self, message: str, css: str = "") -> None:
        self.parts.append(f'<p class="{css}">{html.escape(message)}</p>' if css else f"<p>{html.escape(message)}</p>")

    def table(self, columns: list[str], rows: list[list[Any]]) -> None:
        """Cells are shown with 3 decimals; record the same values in `numbers` so the JSON has them."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def figure(self, folder: Path, filename: str, caption: str) -> None:
        if not (folder / filename).is_file():
            raise FileNotFoundError(f"figure {filename} was not written to {folder}")
        self.parts.append(
            f'<figure><img src="{html.escape(filename)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )


class Report:
    """Sections in order; `write` produces report.html and report.json in `folder`."""

    def __init__(self, folder: Path, title: str, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.title = title
        self.meta = {"created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **meta}
        self.sections: list[Section] = []
        folder.mkdir(parents=True, exist_ok=True)

    def section(self, key: str, title: str) -> Section:
        s = Section(key, title)
        self.sections.append(s)
        return s

    def numbers(self) -> dict[str, Any]:
        return {"title": self.title, "meta": self.meta, **{s.key: s.numbers for s in self.sections}}

    def write(self) -> Path:
        with atomic_write(self.folder / "report.json") as f:
            f.write(json.dumps(_clean(self.numbers()), indent=2).encode())
        meta = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in self.meta.items())
        body = "".join(f'<h2 id="{s.key}">{html.escape(s.title)}</h2>' + "".join(s.parts) for s in self.sections)
        toc = " · ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in self.sections)
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1><table>{meta}</table>"
            f"<p>{toc}</p>{body}<p class='note'>Every number here is in report.json.</p></body></html>"
        )
        path = self.folder / "report.html"
        with atomic_write(path) as f:
            f.write(page.encode())
        return path


def _clean(value: Any) -> Any:
    """JSON without NaN/inf (null instead), numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
