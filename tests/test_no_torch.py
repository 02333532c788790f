"""The serve side never needs torch: proven in a subprocess where importing torch fails."""

from __future__ import annotations

import subprocess
import sys

SERVE_MODULES = [
    "rtdecode",
    "rtdecode.data.session",
    "rtdecode.io",
    "rtdecode.data.tokenizer",
    "rtdecode.data.window",
    "rtdecode.data.alignment",
    "rtdecode.data.splits",
    "rtdecode.io.token_store",
    "rtdecode.sim.simulator",
    "rtdecode.sim.drives",
    "rtdecode.core.connectivity",
    "rtdecode.data.summary",
    "rtdecode.cli",
    "rtdecode.cli.options",
    "rtdecode.demo",
    "rtdecode.runtime",
    "rtdecode.runtime.bundle",
    "rtdecode.runtime.backends",
    "rtdecode.runtime.decoder",
    "rtdecode.bench.model",
    "rtdecode.wire.protocol",
    "rtdecode.serve.rings",
    "rtdecode.serve.daemon",
    "rtdecode.wire.client",
    "rtdecode.wire.replay",
    "rtdecode.serve.recording",
    "rtdecode.wire.auth",
    "rtdecode.wire.hostile",
]


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\nsys.modules['torch'] = None\n"  # `import torch` now raises ImportError
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)


def test_serve_modules_import_without_torch():
    r = run_without_torch("\n".join(f"import {m}" for m in SERVE_MODULES))
    assert r.returncode == 0, r.stderr


def test_import_rtdecode_pulls_in_no_heavy_package():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, rtdecode, rtdecode.cli, rtdecode.data.window; "
            "print(sorted(m for m in ('torch', 'rtdecode.training', 'rtdecode.export', 'onnx', 'pynwb') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_cli_help_works_without_torch():
    r = run_without_torch(
        "from rtdecode.cli import app\nfrom typer.testing import CliRunner\n"
        "res = CliRunner().invoke(app, ['--help'])\nassert res.exit_code == 0, res.output\n"
    )
    assert r.returncode == 0, r.stderr
