"""A recording with no behavior and no video (a spike-sorted session on its own) trains, exports and serves its
predicted activity: the bundle has the generation graphs only, and the daemon publishes activity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtdecode.cli.app import one_line
from rtdecode.data.session import Session
from rtdecode.io import save_session
from tests.conftest import tiny_config_dict


@pytest.fixture(scope="module")
def spikes_only(tiny_session: Session, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny session without behavior, video or truth, and a spikes-only model trained on it for 10 steps."""
    pytest.importorskip("torch")
    from rtdecode.core.config import RunConfig
    from rtdecode.training.train import train

    root = tmp_path_factory.mktemp("spikes-only")
    session = dataclasses.replace(tiny_session, behavior={}, frames=None, frame_times=None, truth={})
    save_session(session, root / "spikes.npz")
    d = tiny_config_dict(max_steps=10, eval_every=10)
    d.update(frames={"enabled": False}, behavior=[], contrastive={"enabled": False})
    train(RunConfig.from_dict(d), root / "spikes.npz", root / "run", log=lambda _: None)
    return {"session": root / "spikes.npz", "run": root / "run", "root": root}


@pytest.fixture(scope="module")
def spikes_only_bundle(spikes_only: dict[str, Path]) -> Path:
    """The spikes-only run exported once by the CLI, as a user would."""
    pytest.importorskip("onnxscript")
    from rtdecode.cli import app

    bundle = spikes_only["root"] / "bundle"
    args = ["export", "--from", str(spikes_only["run"]), "--out", str(bundle), "--data", str(spikes_only["session"])]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # rich wraps long lines at the runner's 80 columns
    assert "bundle written" in text and "identical: True" in text
    return bundle


def test_a_spikes_only_run_exports_the_generation_graphs(spikes_only_bundle):
    manifest = json.loads((spikes_only_bundle / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"context", "step"} and manifest["parity"]["passed"]
    assert manifest["parity"]["generation_identical"] and "decode_max_abs" not in manifest["parity"]


def test_the_daemon_serves_a_spikes_only_bundle_as_predicted_activity(spikes_only_bundle):
    pytest.importorskip("onnxruntime")
    from tests.test_daemon import collect, connected, running_daemon

    with running_daemon(spikes_only_bundle) as daemon, connected(daemon) as (prod, sub):
        assert daemon.config.generate and not daemon.streaming and not daemon.decoder.can_decode
        prod.spikes(np.array([0.01, 0.03]), np.array([1, 2], np.int32))
        prod.clock(0.05)
        messages = collect(sub, "activity", lambda out: len(out) >= 1)
    (act,) = messages
    assert act["window"] == 1 and ((act["times"] >= 0.05) & (act["times"] < 0.1)).all()
    with pytest.raises(RuntimeError, match="decodes no behavior"):
        daemon.decoder.decode({})


def test_an_exporter_error_reaches_the_user_as_one_line(spikes_only, tmp_path):
    """A parity failure (a tolerance no export can meet) is one line: what failed and why, no traceback."""
    pytest.importorskip("onnxscript")
    from rtdecode.cli import app

    args = ["export", "--from", str(spikes_only["run"]), "--out", str(tmp_path / "b"), "--tolerance", "-1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "export of" in r.output and "differ from PyTorch" in r.output


def test_one_line_collapses_a_multi_line_third_party_error():
    text = one_line(RuntimeError("[ONNXRuntimeError] : 1 : FAIL :\n  indexes\n\tshould have been populated"))
    assert text == "[ONNXRuntimeError] : 1 : FAIL : indexes should have been populated"
    assert one_line(KeyError("x")) == "KeyError: 'x'" and len(one_line(ValueError("y" * 1000))) == 400


def test_connectivity_of_a_model_without_frames_leaves_the_visual_bar_out(spikes_only, tiny_session_path, tmp_path):
    """The visual-edge bar asks whether seeing the stimulus separates its drive from edges: it does not apply to a
    model that does not see the frames, and the report says which config does."""
    from rtdecode.cli import app

    args = ["connectivity", "--from", str(spikes_only["run"]), "--data", str(tiny_session_path)]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--windows", "32"])
    assert r.exit_code == 0, r.output
    section = json.loads((tmp_path / "report.json").read_text())["connectivity"]
    assert section["sees_frames"] is False and section["spikes_only_model"]
    assert section["stimulus_bar"] is None and section["stimulus_bar_uncorrected"] is None
    assert "visual" in section["scores"]["attention (gradient-weighted)"]  # scored all the same, not judged
    assert "spikes_frames" in (tmp_path / "report.html").read_text()
    assert "weights into the visual neurons" not in " ".join(r.output.split())
