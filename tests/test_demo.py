"""`rtdecode demo`, the README's first command, end to end (short version), and its data-only mode."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rtdecode.cli import app


def test_demo_data_stages_only(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--quick", "--skip-training", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "demo-summary.json").read_text())
    assert summary["live_check"]["identical"] and summary["session"]["neurons"] == 300


@pytest.mark.slow
def test_demo_quick_runs_the_whole_pipeline(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    r = CliRunner().invoke(app, ["demo", "--quick", "--connectivity-minutes", "0.05", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "demo-summary.json").read_text())
    assert s["serve"]["windows"] == s["serve"]["expected"] > 50
    assert set(s["decoding"]) == {"speed", "phi", "theta", "direction"}  # direction: the gratings', circular
    assert all(s["decoding"][v]["live_r"] > 0.3 for v in ("speed", "phi", "theta"))  # 60 steps: well above chance
    assert 0 <= s["decoding"]["direction"]["live_mae_deg"] <= 180
    for name in (
        "session.npz",
        "tokens/tokens.json",
        "run/checkpoint.json",
        "bundle/manifest.json",
        "report/report.html",
        "report/report.json",
        "report/latency.png",
        "report/decoding.png",
    ):
        assert (tmp_path / name).exists(), name
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["latency"]["demo_real_time"]["windows"] == s["serve"]["windows"]  # the live latencies, not a re-run
    assert s["report"]["generation"]["generated"]["set_f1"] > 0
    targets = {row["target"]: row for row in s["report"]["science_targets"]}
    assert "generation, closed loop: per-neuron rate r" in targets and "science targets" in r.output
    assert any(t.startswith("connectivity") for t in targets) and any(t.startswith("stimulus") for t in targets)
    # --connectivity-minutes: a model that learns only the spikes, seeing the video, scored for connectivity
    model = s["connectivity_model"]
    assert (tmp_path / "run-connectivity" / "checkpoint.json").is_file()
    assert json.loads((tmp_path / "connectivity" / "report.json").read_text())["connectivity"]["sees_frames"]
    assert len(model["science_targets"]) == 4  # hub circuit and visual edges, each against both baseline sets
    assert all(row["target"].startswith("connectivity (spikes_frames model)") for row in model["science_targets"])
    assert "connectivity of the spikes_frames model" in " ".join(r.output.split())

    # --reuse serves and reports again without simulating or training
    r = CliRunner().invoke(app, ["demo", "--quick", "--reuse", "--no-report", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "reusing the run" in r.output and "training the small config" not in r.output
