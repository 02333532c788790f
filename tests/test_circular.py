"""Circular (angle) targets: config, loss, the (cos, sin) -> angle conversion, scoring, NWB CompassDirection, and
one angle decoded end to end: trained, exported (parity-checked), served by the real daemon (window at a time and
streamed) and published equal to offline `Decoder.decode`."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rtdecode.core.config import BehaviorSpec, RunConfig
from rtdecode.core.metrics import angle_of, angular_error_deg, circular_r, wrap_angle
from rtdecode.core.window_data import WindowData
from rtdecode.data.session import Behavior, Session
from rtdecode.io import load_session, save_session
from tests.conftest import tiny_config_dict

PI = np.pi


# ------------------------------------------------------------------------------------------------ config
def test_config_accepts_circular_targets_only() -> None:
    spec = BehaviorSpec("heading", kind="circular")
    assert spec.n_outputs == 2
    assert BehaviorSpec("speed").n_outputs == 1
    assert BehaviorSpec("phi", kind="classification", bins=(0.0, 1.0)).n_outputs == 3
    cfg = RunConfig.from_dict({"behavior": [{"name": "heading", "kind": "circular"}, {"name": "speed"}]})
    assert [t.kind for t in cfg.targets] == ["circular", "regression"]
    with pytest.raises(ValueError, match="targets only"):
        BehaviorSpec("heading", role="input", kind="circular")
    with pytest.raises(ValueError, match="no bins"):
        BehaviorSpec("heading", kind="circular", bins=(0.0, 1.0))
    with pytest.raises(ValueError, match="'circular'"):
        RunConfig.from_dict({"behavior": [{"name": "heading", "kind": "angle"}]})


# ------------------------------------------------------------------------------------------------ numbers
def test_angles_wrap_into_minus_pi_pi() -> None:
    np.testing.assert_allclose(
        angle_of(np.array([1.0, 0.0, -1.0, -1.0, 0.0, 3.0, -2.0]), np.array([0.0, 2.0, 0.0, -0.0, -1.0, 3.0, -1e-9])),
        [0.0, PI / 2, PI, PI, -PI / 2, PI / 4, -PI + 5e-10],
        atol=1e-12,
    )
    assert angle_of(np.array([-1.0]), np.array([-0.0]))[0] == PI  # never -pi
    w = wrap_angle(np.array([PI, -PI, 3 * PI + 0.1, -3 * PI + 0.1, 0.5, np.nan]))
    np.testing.assert_allclose(w[:5], [PI, PI, -PI + 0.1, -PI + 0.1, 0.5], atol=1e-12)
    assert np.isnan(w[5]) and np.all(w[:5] > -PI) and np.all(w[:5] <= PI)
    # errors go the short way round: 179 deg and -179 deg are 2 deg apart
    assert angular_error_deg(np.radians([179.0, 10.0]), np.radians([-179.0, 10.0])) == pytest.approx(1.0)
    assert angular_error_deg(np.array([0.0, np.nan]), np.array([PI, 0.0])) == pytest.approx(180.0)
    y = np.random.default_rng(0).uniform(-PI, PI, 500)
    assert circular_r(y, wrap_angle(y + 2 * PI)) == pytest.approx(1.0)
    assert abs(circular_r(y, np.random.default_rng(1).uniform(-PI, PI, 500))) < 0.15


def test_circular_loss_on_known_vectors() -> None:
    torch = pytest.importorskip("torch")
    from rtdecode.training.losses import circular_loss

    def loss(pred: list[list[float]], angle: list[float]) -> float:
        return float(circular_loss(torch.tensor(pred, dtype=torch.float32), torch.tensor(angle)))

    assert loss([[1, 0], [0, 5], [-0.1, 0]], [0.0, PI / 2, PI]) == pytest.approx(0.0, abs=1e-6)  # length-blind
    assert loss([[1, 0]], [PI]) == pytest.approx(2.0)
    assert loss([[0, 1]], [0.0]) == pytest.approx(1.0)
    assert loss([[1, 0]], [2 * PI]) == pytest.approx(0.0, abs=1e-6)  # any turn of the target
    # across the seam: predicted pi - 0.1, true -pi + 0.1 are 0.2 rad apart, not 2 pi - 0.2
    across = [[np.cos(PI - 0.1), np.sin(PI - 0.1)]]
    assert loss(across, [-PI + 0.1]) == pytest.approx(1 - np.cos(0.2), abs=1e-6)
    assert loss([[1, 0], [0, 1]], [float("nan"), PI / 2]) == pytest.approx(0.0, abs=1e-6)  # NaN masked
    pred = torch.tensor([[0.3, -0.2]], requires_grad=True)
    out = circular_loss(pred, torch.tensor([float("nan")]))
    out.backward()
    assert float(out.detach()) == 0.0 and pred.grad is not None and torch.isfinite(pred.grad).all()


# ------------------------------------------------------------------------------------------------ data
def with_heading(session: Session, rate: float = 100.0) -> Session:
    """The session plus "heading": an angle (radians) that wraps several times, a function of the eye angle phi
    (so the simulator's phi neurons carry it), sampled at `rate` Hz (several samples per 50-ms window)."""
    phi = session.behavior["phi"]
    t = np.arange(phi.times[0], phi.times[-1], 1.0 / rate)
    heading = wrap_angle(np.radians(np.interp(t, phi.times, phi.values)) * 20.0)
    return dataclasses.replace(session, behavior={**session.behavior, "heading": Behavior(t, heading, "radians")})


def circular_config(budgets: bool = False, **train: object) -> RunConfig:
    """The tiny config, video off, with targets speed and heading (circular); `budgets`: the token budgets
    training derives for the tiny session (64/64) written out, so batches can be built without training."""
    d = tiny_config_dict(**train)
    if budgets:
        d["window"] = {**d["window"], "block_size": 64, "prev_block_size": 64}
    d["frames"] = {"enabled": False}
    d["contrastive"] = {"enabled": False}
    d["behavior"] = [{"name": "speed"}, {"name": "heading", "kind": "circular"}]
    return RunConfig.from_dict(d)


def test_window_targets_are_circular_means_and_never_z_scored(tiny_session: Session) -> None:
    s = with_heading(tiny_session)
    n = s.behavior["heading"].times.size
    near_seam = np.where(np.arange(n) % 2 == 0, PI - 0.05, -PI + 0.05)  # alternate sides of +-pi
    s = dataclasses.replace(s, behavior={**s.behavior, "heading": Behavior(s.behavior["heading"].times, near_seam)})
    data = WindowData(s, circular_config(budgets=True))
    y = data.targets["heading"]
    ok = np.isfinite(y)
    assert ok.mean() > 0.9
    assert np.all(np.abs(y[ok]) > PI - 0.051)  # the arithmetic mean would be about 0
    norm = data.normalisation(np.arange(data.n_windows))
    assert norm.behavior["heading"] == (0.0, 1.0)
    batch = data.batch(np.arange(10), norm)
    np.testing.assert_allclose(batch["y_heading"], y[:10].astype(np.float32))  # radians


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def circular_bundle(tiny_session: Session, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rtdecode.export.onnx import export_bundle
    from rtdecode.training.train import train

    root = tmp_path_factory.mktemp("circular")
    session = dataclasses.replace(with_heading(tiny_session), frames=None, frame_times=None)  # frames unused
    save_session(session, root / "s.npz")
    result = train(circular_config(max_steps=10, eval_every=10), root / "s.npz", root / "run", log=lambda _: None)
    data = WindowData(session, RunConfig.from_dict(result_config(root / "run")))
    windows = np.arange(data.n_windows - 60, data.n_windows, 10)
    manifest = export_bundle(root / "run", root / "bundle", data=data, windows=windows, log=lambda _: None)
    return {"session": session, "data": data, "result": result, "manifest": manifest, "bundle": root / "bundle"}


def result_config(run: Path) -> dict[str, Any]:
    from rtdecode.training.checkpoint import read_meta

    return read_meta(run)["config"]


def test_training_summary_scores_angles(circular_bundle: dict[str, Any]) -> None:
    res = circular_bundle["result"]
    for figures in (res.test, res.val):
        assert {"heading_r", "heading_mae_deg", "speed_r", "behavior_r_mean"} <= set(figures)
        assert 0.0 <= figures["heading_mae_deg"] <= 180.0 and -1.0 <= figures["heading_r"] <= 1.0
        assert "heading_r2" not in figures
    assert {"ridge_heading_r", "ridge_heading_mae_deg", "ridge_speed_r"} <= set(res.baseline)
    assert 0.0 <= res.baseline["ridge_heading_mae_deg"] <= 180.0
    assert circular_bundle["manifest"]["normalisation"]["behavior"]["heading"] == [0.0, 1.0]


def test_export_parity_and_to_units(circular_bundle: dict[str, Any]) -> None:
    from rtdecode.runtime import Bundle, Decoder

    parity = circular_bundle["manifest"]["parity"]
    assert parity["passed"] and parity["stream_max_abs"] <= parity["tolerance"]
    bundle = Bundle.load(circular_bundle["bundle"])
    assert bundle.output_names("decode") == ["behavior_speed", "behavior_heading"]  # one tensor per target
    decoder = Decoder(bundle, backend="onnxruntime")
    batch = circular_bundle["data"].batch(np.arange(8), bundle.norm)
    raw = decoder.backend.run("decode", {n: batch[n] for n in bundle.input_names("decode")})
    assert raw[0].shape == (8,) and raw[1].shape == (8, 2)  # the circular head's (cos, sin)
    units = decoder.to_units([np.zeros((4, 1)), np.array([[2.0, 0.0], [0.0, 0.5], [-1.0, -0.0], [-1.0, -1e-7]])])
    np.testing.assert_allclose(units["heading"], [0.0, PI / 2, PI, -PI + 1e-7], atol=1e-12)
    assert np.all(units["heading"] > -PI)
    decoded = decoder.decode(batch)["heading"]
    expected = np.arctan2(raw[1][:, 1].astype(np.float64), raw[1][:, 0].astype(np.float64))  # as to_units: float64
    np.testing.assert_allclose(decoded, expected, atol=1e-12)


def test_evaluate_decoding_section_scores_angles(circular_bundle: dict[str, Any], tmp_path: Path) -> None:
    from rtdecode.report.document import Report
    from rtdecode.report.evaluate import _decoding
    from rtdecode.runtime import Bundle, Decoder

    data = circular_bundle["data"]
    w = np.arange(data.n_windows)
    split = SimpleNamespace(train=w[: w.size // 2], val=w[w.size // 2 + 20 : 3 * w.size // 4], test=w[-100:])
    decoder = Decoder(Bundle.load(circular_bundle["bundle"]), backend="onnxruntime")
    sec = Report(tmp_path, "t", {}).section("decoding", "Behavior decoding")
    _decoding(sec, tmp_path, decoder, data, decoder.bundle.norm, split, split.test, 0, lambda _: None)
    scores = sec.numbers["variables"]
    assert set(scores["heading"]) == {"model", "ridge", "mlp", "shuffle"}
    for method in scores["heading"].values():
        assert set(method) == {"r", "mae_deg"} and 0.0 <= method["mae_deg"] <= 180.0
    assert set(scores["speed"]["ridge"]) == {"r", "r2"}
    # the ridge baseline: cos and sin fitted separately on the same features, angle = atan2, scored on the truth
    assert scores["heading"]["ridge"]["mae_deg"] < scores["heading"]["shuffle"]["mae_deg"] + 30


@pytest.mark.parametrize("streaming, speed, t1", [(False, 0, 3.0), (True, 1, 2.0)], ids=["window", "streamed"])
def test_daemon_publishes_angles_equal_to_offline_decode(
    circular_bundle: dict[str, Any], streaming: bool, speed: float, t1: float
) -> None:
    pytest.importorskip("zmq")
    from test_daemon import collect, connected, final_status, offline_decodes, running_daemon

    from rtdecode.wire.replay import send_paced, session_messages

    s, bundle = circular_bundle["session"], circular_bundle["bundle"]
    n = int(round(t1 / 0.05))
    with running_daemon(bundle, skip_backlog=False, streaming=streaming) as daemon, connected(daemon) as (prod, sub):
        sent = send_paced(prod, session_messages(s, batch=0.005, t1=t1), speed=speed)
        decodes = collect(sub, "decode", lambda out: out[-1]["window"] >= n - 1)
        status = final_status(prod, sub)
    assert sent["dropped"] == 0
    windows = np.array([d["window"] for d in decodes])
    np.testing.assert_array_equal(windows, np.arange(n))
    live = np.array([d["values"]["heading"] for d in decodes])
    assert all(isinstance(d["values"]["heading"], float) for d in decodes)
    assert np.all(live > -PI) and np.all(live <= PI)
    offline = offline_decodes(bundle, s, windows)
    np.testing.assert_allclose(wrap_angle(live - offline["heading"]), 0.0, atol=1e-5)
    np.testing.assert_allclose([d["values"]["speed"] for d in decodes], offline["speed"], atol=1e-5, rtol=0)
    if streaming:
        assert status["counters"].get("windows_streamed", 0) > 0  # the stream graph's (cos, sin) went through to_units


# ------------------------------------------------------------------------------------------------ NWB
def test_nwb_compass_direction_reads_as_radians(tmp_path: Path) -> None:
    pynwb = pytest.importorskip("pynwb")
    from pynwb.behavior import CompassDirection, SpatialSeries

    nwb = pynwb.NWBFile(session_description="d", identifier="i", session_start_time=datetime.now(timezone.utc))
    nwb.add_unit(spike_times=[0.1, 0.4], id=0)
    nwb.add_unit(spike_times=[0.2], id=1)
    deg = np.array([0.0, 90.0, 180.0, -90.0, 359.0])
    rad = np.array([0.1, -3.0, 3.1, 2.0, 0.0])
    module = nwb.create_processing_module("behavior", "behavior")
    compass = CompassDirection(name="CompassDirection")
    compass.add_spatial_series(
        SpatialSeries(name="head_direction", data=deg, reference_frame="0 = north", unit="degrees", rate=10.0)
    )
    module.add(compass)
    module.add(pynwb.TimeSeries(name="speed", data=deg, unit="cm/s", rate=10.0))  # not an angle: as stored
    nwb.add_acquisition(
        CompassDirection(
            name="gaze",
            spatial_series=SpatialSeries(name="eye_angle", data=rad, reference_frame="r", unit="radians", rate=10.0),
        )
    )
    path = tmp_path / "compass.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    s = load_session(path)
    np.testing.assert_allclose(s.behavior["head_direction"].values, np.radians(deg))
    assert s.behavior["head_direction"].unit == "radians"
    np.testing.assert_allclose(s.behavior["head_direction"].times, np.arange(5) * 0.1)
    np.testing.assert_array_equal(s.behavior["eye_angle"].values, rad)
    assert s.behavior["eye_angle"].unit == "radians"
    np.testing.assert_array_equal(s.behavior["speed"].values, deg)
    assert s.behavior["speed"].unit == "cm/s"
    # and it decodes as a circular target as is
    cfg = RunConfig.from_dict(
        {**circular_config().to_dict(), "behavior": [{"name": "head_direction", "kind": "circular"}]}
    )
    data = WindowData(s, cfg)
    y = data.targets["head_direction"]
    assert np.all(np.abs(wrap_angle(y[np.isfinite(y)])) <= PI)
