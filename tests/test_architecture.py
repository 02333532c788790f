"""The folder tree is the architecture, and these tests keep it so: the serve path never reaches into training,
export or the report; no two modules (or folders) import each other; modules stay small enough to read.

Imports are read statically (every `import`, at module level or inside a function), so a lazy import inside a
function counts as a dependency too; one test also imports the serve path and checks what actually loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# installed names of the top-level folders (pyproject.toml [tool.setuptools] package-dir)
FOLDERS = {"rtdecode": ROOT / "rtdecode", "rtdecode.training": ROOT / "training", "rtdecode.export": ROOT / "export"}
# what the live path is made of, and what it must never import (torch-side or report-side code)
SERVE_SIDE = (
    "rtdecode.serve",
    "rtdecode.runtime",
    "rtdecode.wire",
    "rtdecode.data",
    "rtdecode.core",
    "rtdecode.io",
    "rtdecode.sim",
)
FORBIDDEN_FOR_SERVE_SIDE = (
    "rtdecode.training",
    "rtdecode.export",
    "rtdecode.report",
    "rtdecode.bench",
    "rtdecode.cli",
    "rtdecode.demo",
)
MAX_LINES = 400
# modules allowed past MAX_LINES, and why
LONG_MODULES = {
    "rtdecode.serve.recording": "the .rtrec format's writer and reader side by side: one definition of the framing, "
    "checksums and crash repair",
    "rtdecode.io.nwb": "NWB reading and writing side by side, like every format in io/: one module per format",
    "rtdecode.wire.protocol": "every wire message, in and out, encoded and strictly decoded in one module that "
    "mirrors docs/protocol.md: the one place where a message is parsed",
}


def modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file."""
    out = {}
    for prefix, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file (`from a import b` counts as a.b when b is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the groups of nodes that reach each other; a cycle is a group of 2+."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(sorted(group))
    return groups


def folder_of(module: str) -> str:
    """The folder a module lives in, one level below the package (rtdecode.serve.engine -> rtdecode.serve)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_serve_side_never_imports_training_export_or_report():
    graph = import_graph()
    bad = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.startswith(SERVE_SIDE)
        for t in targets
        if t.startswith(FORBIDDEN_FOR_SERVE_SIDE)
    )
    assert not bad, "\n".join(bad)


def test_importing_the_daemon_and_runtime_loads_nothing_from_training_export_or_report():
    code = (
        "import sys, rtdecode.serve.daemon, rtdecode.serve.engine, rtdecode.runtime, rtdecode.runtime.streaming, "
        "rtdecode.runtime.tensorrt_backend, rtdecode.wire.client\n"
        "print(sorted(m for m in sys.modules if m.startswith(('rtdecode.training', 'rtdecode.export', "
        "'rtdecode.report', 'torch'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_no_module_import_cycles():
    cycles = [g for g in strongly_connected(import_graph()) if len(g) > 1]
    assert not cycles, f"modules that import each other: {cycles}"


def test_no_folder_import_cycles():
    """Folders depend one way: e.g. report/ may use bench/, never the other way round. The package root
    (`rtdecode/__init__.py`) and the entry points that tie everything together (cli/, demo) are left out."""
    entry = {"rtdecode", "rtdecode.cli", "rtdecode.demo"}
    graph: dict[str, set[str]] = {}
    for m, targets in import_graph().items():
        if folder_of(m) in entry:
            continue
        graph.setdefault(folder_of(m), set()).update(folder_of(t) for t in targets if folder_of(t) not in entry)
    for folder, targets in graph.items():
        targets.discard(folder)
    cycles = [g for g in strongly_connected(graph) if len(g) > 1]
    assert not cycles, f"folders that import each other: {cycles}"


def test_modules_stay_short():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexplained = {m: n for m, n in long.items() if m not in LONG_MODULES}
    assert not unexplained, f"modules over {MAX_LINES} lines (split them, or say why in LONG_MODULES): {unexplained}"


def test_the_cycle_finder_finds_cycles():
    groups = strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(map(sorted, groups)) == [["a", "b", "c"], ["d"]]
