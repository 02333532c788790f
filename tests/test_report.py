"""The evaluation report: its writer, its MLP baseline, and `rtdecode evaluate` / `rtdecode embed` end to end on the
tiny session (real run, real bundle, real daemon for the latency section)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from rtdecode.core.metrics import pearson_r, ridge_decode
from rtdecode.report.document import Report
from rtdecode.report.mlp import fit_mlp


def _json_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _json_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _json_numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


def check_report(folder) -> dict:
    """report.html references only images that exist, and every number in its tables is in report.json."""
    html = (folder / "report.html").read_text()
    numbers = json.loads((folder / "report.json").read_text())
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (folder / src).is_file() and (folder / src).stat().st_size > 1000, src
    known = _json_numbers(numbers)
    for cell in re.findall(r"<td>([^<]*)</td>", html):
        text = cell.replace(",", "").rstrip("%")
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            value = float(text)
            places = len(text.split(".")[1]) if "." in text else 0
            scale = 100 if cell.endswith("%") else 1
            assert any(abs(round(k * scale, places) - value) <= 10**-places for k in known), (
                f"{cell} not in report.json"
            )
    return numbers


def test_report_writer_round_trip(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = Report(tmp_path, "t", {"session": "x"})
    sec = report.section("a", "A <section>")
    sec.numbers.update({"r": 0.91234, "missing": float("nan"), "n": 12})
    sec.table(["name", "r", "n"], [["x", 0.91234, 12]])
    plt.plot([1, 2])
    plt.savefig(tmp_path / "a.png")
    sec.figure(tmp_path, "a.png", "a line")
    with pytest.raises(FileNotFoundError):
        sec.figure(tmp_path, "absent.png", "no such file")
    report.write()
    numbers = check_report(tmp_path)
    assert numbers["a"]["missing"] is None and numbers["a"]["r"] == 0.91234
    assert "A &lt;section&gt;" in (tmp_path / "report.html").read_text()


def test_mlp_baseline_fits_what_ridge_cannot():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 5))
    y = (x[:, 0] ** 2 + 0.1 * rng.normal(size=3000))[:, None]
    tr, va, te = slice(0, 2000), slice(2000, 2500), slice(2500, 3000)
    mlp = fit_mlp(x[tr], y[tr], x[va], y[va], x[te], hidden=32, lr=3e-3)
    ridge, _ = ridge_decode(x[tr], y[tr, 0], x[va], y[va, 0], x[te])
    assert pearson_r(y[te, 0], mlp[:, 0]) > 0.9 > 0.3 > abs(pearson_r(y[te, 0], ridge))


def test_a_model_that_decodes_the_behavior_is_told_why_its_loop_cannot_follow(tiny_config, tiny_session):
    """The demo's model decodes speed and eye position and reads none of them: its report names what to train."""
    import dataclasses

    from rtdecode.report.generation_section import unread_behavior_note

    note = unread_behavior_note(tiny_config, tiny_session)  # decodes speed and phi, reads theta only
    assert note and "small_behavior_input" in note and "speed" in note and "theta" not in note
    only_theta = dataclasses.replace(tiny_session, behavior={"theta": tiny_session.behavior["theta"]})
    assert unread_behavior_note(tiny_config, only_theta) is None  # reads every behavior the session has
    spikes_only = dataclasses.replace(
        tiny_config, behavior=(), contrastive=dataclasses.replace(tiny_config.contrastive, enabled=False)
    )
    assert unread_behavior_note(spikes_only, tiny_session) is None  # decodes nothing: nothing to point it to
    assert unread_behavior_note(tiny_config, dataclasses.replace(tiny_session, behavior={})) is None


def test_evaluate_from_a_run_writes_every_section(tiny_run, tiny_session_path, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from rtdecode.report.evaluate import evaluate_report

    out = tmp_path / "report"
    numbers = evaluate_report(
        tiny_run,
        tiny_session_path,
        out,
        max_windows=40,
        latency_seconds=3.0,
        connectivity_windows=64,
        log=lambda _: None,
    )
    check_report(out)
    assert (out / "bundle" / "manifest.json").is_file()  # the run was exported, parity-checked
    speed = numbers["decoding"]["variables"]["speed"]
    assert set(speed) == {"model", "ridge", "mlp", "shuffle"} and all(math.isfinite(v["r"]) for v in speed.values())
    for source in ("generated", "poisson"):
        g = numbers["generation"][source]
        assert 0 <= g["set_f1"] <= 1 and math.isfinite(g["rate_correlation"])
    assert numbers["generation"]["windows"] == 40
    assert set(numbers["connectivity"]["scores"]) == {
        "attention",
        "attention (predicted)",
        "attention (lag contrast)",
        "attention (gradient-weighted)",
        "correlation",
        "lagged correlation",
        "cross-correlogram",
        "cross-correlogram (slow-corrected)",
    }
    assert set(numbers["stimulus"]["scores"]) == {
        "gradient-weighted attention",
        "attention",
        "spike-triggered average",
        "input gradient (not attention)",
    }
    assert "ceiling_unseen_redrawn" in numbers["generation"]["targets"]["closed loop: per-neuron rate r"]
    assert numbers["embedding"]["kind"] == "contrastive" and math.isfinite(
        numbers["embedding"]["decodability"]["speed"]["r"]
    )
    assert numbers["latency"]["real_time"]["windows"] > 20
    assert numbers["latency"]["real_time"]["latency_ms"]["p99"] > 0
    latents = np.load(out / "latents.npz")
    assert latents["latent"].shape[0] == latents["window"].size == latents["behavior_speed"].size
    for png in ("decoding.png", "generation.png", "connectivity.png", "stimulus.png", "embedding.png", "latency.png"):
        assert png in (out / "report.html").read_text()
    from rtdecode.report.targets import science_targets

    rows = science_targets(numbers)  # what `rtdecode demo` prints: every target of the report, one row each
    # + hub circuit and visual edges, each against the baselines and against every one, + stimulus
    assert len(rows) == len(numbers["generation"]["targets"]) + 5
    assert all(isinstance(r["met"], bool) and r["value"] and r["bar"] for r in rows)
    assert len({r["target"] for r in rows}) == len(rows)  # a row is found by its name (demo-summary.json)


def test_evaluate_command_from_a_bundle_and_embed(tiny_bundle, tiny_session_path, tmp_path):
    pytest.importorskip("torch")
    from rtdecode.cli import app

    out = tmp_path / "r"
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--from",
            str(tiny_bundle),
            "--data",
            str(tiny_session_path),
            "--out",
            str(out),
            "--max-windows",
            "16",
            "--latency-seconds",
            "0",
            "--connectivity-windows",
            "32",
        ],
    )
    assert r.exit_code == 0, r.output
    numbers = check_report(out)
    assert not (out / "bundle").exists()  # a bundle is evaluated as given
    assert "speed" in numbers["decoding"]["variables"] and numbers["latency"] == {}
    r = CliRunner().invoke(
        app,
        [
            "embed",
            "--from",
            str(json.loads((tiny_bundle / "manifest.json").read_text())["source"]["run"]),
            "--data",
            str(tiny_session_path),
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "e" / "latents.npz").is_file() and (tmp_path / "e" / "embedding.png").is_file()
    check_report(tmp_path / "e")


def test_evaluate_refuses_a_folder_that_is_neither(tmp_path, tiny_session_path):
    from rtdecode.cli import app

    r = CliRunner().invoke(
        app, ["evaluate", "--from", str(tmp_path), "--data", str(tiny_session_path), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code != 0 and "neither" in r.output and "checkpoint.json" in r.output
