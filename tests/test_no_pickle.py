"""Nothing rtdecode reads from a file can run code: no module calls pickle/joblib/dill loaders, torch.load without
weights_only=True, or numpy.load with allow_pickle=True. A static check over every module, so a new loader cannot
slip in unnoticed (the docstring example in io/neuroformer.py, for users converting their own pickles, is text)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("rtdecode", "training", "export", "tools") for p in (ROOT / d).rglob("*.py"))


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def unsafe_loads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") for n in names):
                found.append(f"{path.name}:{node.lineno}: imports a pickle loader")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        if owner == "torch" and node.func.attr == "load" and _keyword(node, "weights_only") is not True:
            found.append(f"{path.name}:{node.lineno}: torch.load without weights_only=True")
        if owner in ("np", "numpy") and node.func.attr == "load" and _keyword(node, "allow_pickle") is True:
            found.append(f"{path.name}:{node.lineno}: numpy.load(allow_pickle=True)")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_can_unpickle(path: Path) -> None:
    assert unsafe_loads(path) == []


def test_the_check_catches_each_kind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport numpy as np, torch\nnp.load('x', allow_pickle=True)\ntorch.load('x')\n")
    assert len(unsafe_loads(bad)) == 3
