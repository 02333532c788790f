"""Smoke runs of the benchmark tools on the built-in simulated session (tiny settings: they prove the tools run
and their checks pass; the figures themselves mean nothing at this size). bench_train takes ~6 s here, under
the 10 s at which a test gets the `slow` marker, so the greedy cached-vs-uncached token check runs by default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def run_tool(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(TOOLS / name), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_bench_tokenizer_runs() -> None:
    out = run_tool("bench_tokenizer.py", "--duration", "10", "--repeats", "1")
    assert "spikes/s" in out and "live push" in out


def test_bench_train_runs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    report = tmp_path / "bench.json"
    out = run_tool(
        "bench_train.py",
        "--duration",
        "20",
        "--configs",
        "small",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--latency-windows",
        "3",
        "--gen-windows",
        "2",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--json",
        str(report),
    )
    assert "windows/s" in out
    assert "tokens identical: True" in out
    assert "% of the time outside the model" in out
    (result,) = json.loads(report.read_text())["results"]
    assert result["config"] == "small" and result["train_wps"] > 0 and 0 <= result["data_share"] < 1
    assert result["tokens_identical"] is True and result["gen_tokens_per_window"] > 0


def test_bench_train_help() -> None:
    pytest.importorskip("torch")
    out = run_tool("bench_train.py", "--help")
    assert "default: 120.0" in out and "--json" in out


@pytest.mark.slow
def test_soak_runs_the_real_daemon(tiny_bundle: Path, tiny_session_path: Path, tmp_path: Path) -> None:
    """15 s in 5-s rows: the tool streams, samples and reports (its bars are for 10-minute runs: --report-only)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "soak.py"),
            "--minutes",
            "0.25",
            "--period",
            "5",
            "--warmup",
            "2",
            "--report-only",
            "--bundle",
            str(tiny_bundle),
            "--data",
            str(tiny_session_path),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "soak.json").read_text())
    assert len(result["rows"]) >= 3 and sum(r["windows"] for r in result["rows"]) > 200
    assert all(r["rss_mb"] > 10 for r in result["rows"]) and (tmp_path / "soak.png").is_file()
    assert "RSS after warm-up" in proc.stdout
    assert isinstance(result["verdict"]["memory_flat"], bool) and isinstance(result["verdict"]["p99_stable"], bool)


def test_bench_lsl_runs(tiny_bundle: Path, tiny_session_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("pylsl")
    out = tmp_path / "lsl.json"
    args = ["--bundle", str(tiny_bundle), "--data", str(tiny_session_path), "--seconds", "3", "--out", str(out)]
    run_tool("bench_lsl.py", *args)
    report = json.loads(out.read_text())
    assert report["windows"] > 20 and report["input_leg_ms"]["n"] > 0 and report["output_leg_ms"]["n"] > 0


def test_adapt_curve_runs(tmp_path: Path) -> None:
    """The whole measurement on a 30-s day with second-long budgets: every stage runs and writes its outputs."""
    pytest.importorskip("torch")
    out = run_tool(
        "adapt_curve.py",
        *("--out", str(tmp_path), "--duration", "30", "--circuit", "200", "--recorded", "150"),
        *("--train-minutes", "0.02", "--minutes", "0.1", "--adapt-seconds", "2", "--same-units"),
    )
    assert "from scratch on the day" in out
    result = json.loads((tmp_path / "adapt.json").read_text())
    (row,) = result["rows"]
    assert row["minutes"] == 0.1 and {"unlabeled_speed_r", "labeled_speed_r", "ridge_speed_r"} <= set(row)
    assert (tmp_path / "adapt.png").exists() and (tmp_path / "unit-map.json").exists()


def test_adapt_curve_pretrains_on_several_days(tmp_path: Path) -> None:
    """--pretrain-days 2: one multi-session model on days 0-1, adapted to day 2 (known units via day 1's run)."""
    pytest.importorskip("torch")
    out = run_tool(
        "adapt_curve.py",
        *("--out", str(tmp_path), "--duration", "30", "--circuit", "200", "--recorded", "150", "--pretrain-days", "2"),
        *("--train-minutes", "0.02", "--minutes", "0.1", "--adapt-seconds", "2", "--same-units"),
    )
    assert "from scratch on the day" in out
    result = json.loads((tmp_path / "adapt.json").read_text())
    assert result["pretrain_days"] == ["day0", "day1"] and result["new_day"] == 2
    assert (tmp_path / "days0-1" / "sessions" / "day1" / "model.safetensors").exists()
