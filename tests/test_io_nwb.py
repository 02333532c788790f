"""NWB interchange: exact round trip through save_nwb/load_nwb, and reading files that rtdecode did not write."""

from __future__ import annotations

import os
import re
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtdecode.data.session import Behavior, Session, SessionError
from rtdecode.io import load_session, save_session
from rtdecode.io.nwb import load_nwb, save_nwb


@pytest.fixture
def pynwb() -> Any:
    return pytest.importorskip("pynwb")


def _session(seed: int = 0) -> Session:
    rng = np.random.default_rng(seed)
    n, dur = 6, 4.0
    times = np.sort(rng.uniform(1.0, 1.0 + dur, size=400))
    times[10] = times[11]  # a tie: NWB gives ties back in neuron order, so make them ordered here
    neurons = rng.integers(0, n, size=times.size)
    neurons[10], neurons[11] = sorted((neurons[10], neurons[11]))
    return Session(
        spike_times=times,
        spike_neurons=neurons,
        n_neurons=n,
        start=1.0,
        stop=1.0 + dur,
        neuron_ids=np.array([101, 7, 3, 55, 9, 1000]),
        frames=rng.integers(0, 256, size=(8, 4, 6), dtype=np.uint8),
        frame_times=1.0 + np.arange(8) * 0.5,
        behavior={
            "speed": Behavior(1.0 + np.arange(80) * 0.05, rng.random(80), "cm/s"),
            "theta": Behavior(1.01 + np.arange(40) * 0.1, np.r_[rng.normal(size=39), np.nan], "deg"),
            "raw": Behavior(np.array([1.5, 2.5]), np.array([0.0, 1.0])),
        },
        trials=np.array([[1.0, 2.0], [2.5, 4.0]]),
        truth={"W": rng.normal(size=(n, n)), "labels": np.arange(n, dtype=np.int16)},
        metadata={"source": "test", "seed": seed},
    )


def test_round_trip_exact(pynwb: Any, tmp_path: Path) -> None:
    s = _session()
    path = tmp_path / "s.nwb"
    save_nwb(s, path)
    r = load_nwb(path)
    np.testing.assert_array_equal(r.spike_times, s.spike_times)  # exact float64
    np.testing.assert_array_equal(r.spike_neurons, s.spike_neurons)
    np.testing.assert_array_equal(r.neuron_ids, s.neuron_ids)
    assert (r.n_neurons, r.start, r.stop) == (s.n_neurons, s.start, s.stop)
    assert r.frames is not None and r.frames.dtype == np.uint8
    np.testing.assert_array_equal(r.frames, s.frames)
    np.testing.assert_array_equal(r.frame_times, s.frame_times)
    assert set(r.behavior) == set(s.behavior)
    for name, b in s.behavior.items():
        np.testing.assert_array_equal(r.behavior[name].times, b.times)
        np.testing.assert_array_equal(r.behavior[name].values, b.values)  # NaN compares equal here
        assert r.behavior[name].unit == b.unit
    np.testing.assert_array_equal(r.trials, s.trials)
    assert set(r.truth) == {"W", "labels"}
    np.testing.assert_array_equal(r.truth["W"], s.truth["W"])
    assert r.truth["labels"].dtype == np.int16
    assert r.metadata["seed"] == 0 and r.metadata["source"] == "test"
    assert r.metadata["source_path"] == str(path)
    assert {"identifier", "session_description", "session_start_time"} <= set(r.metadata)


def test_round_trip_float_frames_and_minimal_session(pynwb: Any, tmp_path: Path) -> None:
    s = Session(
        spike_times=[0.1, 0.2],
        spike_neurons=[1, 1],
        n_neurons=3,
        start=0.0,
        stop=1.0,
        frames=np.linspace(0, 1, 2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3),
        frame_times=[0.0, 0.5],
    )
    save_session(s, tmp_path / "m.nwb")  # through the extension dispatcher
    r = load_session(tmp_path / "m.nwb")
    assert r.frames is not None and r.frames.dtype == np.float32
    np.testing.assert_array_equal(r.frames, s.frames)
    np.testing.assert_array_equal(np.bincount(r.spike_neurons, minlength=3), [0, 2, 0])  # silent units survive
    assert r.trials is None and r.truth == {} and r.behavior == {}


def test_metadata_identity_survives_second_save(pynwb: Any, tmp_path: Path) -> None:
    s = _session()
    save_nwb(s, tmp_path / "a.nwb")
    a = load_nwb(tmp_path / "a.nwb")
    save_nwb(a, tmp_path / "b.nwb")
    b = load_nwb(tmp_path / "b.nwb")
    for key in ("identifier", "session_description", "session_start_time"):
        assert a.metadata[key] == b.metadata[key]


def _foreign_file(pynwb: Any, path: Path) -> None:
    """An NWB file as another lab might write it: SpatialSeries, rate-based timing, unsorted spikes, no obs."""
    from pynwb.behavior import BehavioralTimeSeries, Position, SpatialSeries
    from pynwb.ecephys import ElectricalSeries
    from pynwb.image import ImageSeries

    nwb = pynwb.NWBFile(
        session_description="foreign lab recording",
        identifier="lab-42",
        session_start_time=datetime(2023, 5, 1, 9, 30, tzinfo=timezone.utc),
    )
    nwb.add_unit(spike_times=[0.30, 0.10, 0.20], id=12)  # unsorted within the unit
    nwb.add_unit(spike_times=[0.20, 0.05], id=4)  # 0.20 ties with unit 12
    module = nwb.create_processing_module("behavior", "behavior")
    module.add(
        Position(
            spatial_series=SpatialSeries(
                name="eye",
                data=np.arange(10.0).reshape(5, 2),
                reference_frame="screen centre",
                starting_time=0.0,
                rate=10.0,
                unit="degrees",
            )
        )
    )
    module.add(
        BehavioralTimeSeries(
            time_series=pynwb.TimeSeries(
                name="speed",
                data=np.array([1, 2, 3], dtype=np.int16),
                unit="cm/s",
                timestamps=[0.0, 0.25, 0.5],
                conversion=0.5,
            )
        )
    )
    nwb.add_acquisition(pynwb.TimeSeries(name="lick", data=[0.0, 1.0], unit="V", starting_time=0.05, rate=2.0))
    device = nwb.create_device("probe")
    group = nwb.create_electrode_group("shank0", description="s", location="V1", device=device)
    for _ in range(2):
        nwb.add_electrode(group=group, location="V1")
    region = nwb.create_electrode_table_region([0, 1], "both")
    nwb.add_acquisition(ElectricalSeries(name="raw", data=np.zeros((20, 2)), electrodes=region, rate=1000.0))
    nwb.add_stimulus(
        ImageSeries(name="movie", data=np.full((4, 3, 2), 7, np.uint8), unit="n.a.", starting_time=0.0, rate=20.0)
    )
    nwb.add_trial(start_time=0.0, stop_time=0.6)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_reads_foreign_file(pynwb: Any, tmp_path: Path) -> None:
    path = tmp_path / "foreign.nwb"
    _foreign_file(pynwb, path)
    s = load_nwb(path)
    np.testing.assert_array_equal(s.spike_times, [0.05, 0.10, 0.20, 0.20, 0.30])
    np.testing.assert_array_equal(s.spike_neurons, [1, 0, 0, 1, 0])  # stable: tie in row order
    np.testing.assert_array_equal(s.neuron_ids, [12, 4])
    assert set(s.behavior) == {"eye_0", "eye_1", "speed", "lick"}  # ElectricalSeries is not behavior
    np.testing.assert_allclose(s.behavior["eye_1"].values, [1, 3, 5, 7, 9])
    np.testing.assert_allclose(s.behavior["eye_0"].times, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert s.behavior["eye_0"].unit == "degrees"
    np.testing.assert_allclose(s.behavior["speed"].values, [0.5, 1.0, 1.5])  # conversion applied
    np.testing.assert_allclose(s.behavior["lick"].times, [0.05, 0.55])
    assert s.frames is not None and s.frames.shape == (4, 3, 2)
    np.testing.assert_allclose(s.frame_times, [0.0, 0.05, 0.1, 0.15])
    np.testing.assert_array_equal(s.trials, [[0.0, 0.6]])
    assert s.start == 0.0 and s.stop == 0.6  # trial end is the latest bound
    assert s.metadata["identifier"] == "lab-42"
    assert s.metadata["session_description"] == "foreign lab recording"
    assert s.metadata["session_start_time"].startswith("2023-05-01T09:30")


def test_behavior_names_filter(pynwb: Any, tmp_path: Path) -> None:
    path = tmp_path / "foreign.nwb"
    _foreign_file(pynwb, path)
    assert set(load_nwb(path, behavior_names=["speed"]).behavior) == {"speed"}
    assert set(load_nwb(path, behavior_names=["eye", "lick"]).behavior) == {"eye_0", "eye_1", "lick"}
    with pytest.raises(SessionError, match=r"\['pupil'\] not found"):
        load_nwb(path, behavior_names=["pupil"])


def test_stop_is_just_after_last_timestamp(pynwb: Any, tmp_path: Path) -> None:
    nwb = pynwb.NWBFile(session_description="d", identifier="i", session_start_time=datetime.now(timezone.utc))
    nwb.add_unit(spike_times=[-0.5, 2.0], id=0)
    path = tmp_path / "neg.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    s = load_nwb(path)
    assert s.start == -0.5
    assert s.stop == np.nextafter(2.0, np.inf)


def test_no_units_table_is_a_clear_error(pynwb: Any, tmp_path: Path) -> None:
    nwb = pynwb.NWBFile(session_description="d", identifier="i", session_start_time=datetime.now(timezone.utc))
    nwb.add_acquisition(pynwb.TimeSeries(name="x", data=[1.0], unit="V", rate=1.0))
    path = tmp_path / "nounits.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    with pytest.raises(SessionError, match="no units table"):
        load_nwb(path)
    with pytest.raises(SessionError, match="no units table named 'sorted'"):
        load_nwb(path, units_table="sorted")


def test_units_without_spike_times(pynwb: Any, tmp_path: Path) -> None:
    nwb = pynwb.NWBFile(session_description="d", identifier="i", session_start_time=datetime.now(timezone.utc))
    nwb.add_unit_column("quality", "sorting quality")
    nwb.add_unit(quality="good", id=1)
    path = tmp_path / "nospikes.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    with pytest.raises(SessionError, match="spike_times"):
        load_nwb(path)


def test_write_is_atomic(pynwb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.nwb"
    save_nwb(_session(), path)
    before = path.read_bytes()

    def boom(self: Any, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pynwb.NWBHDF5IO, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_nwb(_session(seed=1), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.nwb"]  # no temp file left behind


def test_bad_names_rejected_before_writing(pynwb: Any, tmp_path: Path) -> None:
    s = Session([0.1], [0], 1, 0.0, 1.0, behavior={"a/b": Behavior([0.0], [1.0])})
    with pytest.raises(SessionError, match="'a/b'"):
        save_nwb(s, tmp_path / "x.nwb")
    assert not list(tmp_path.iterdir())


def test_no_warnings_on_round_trip(pynwb: Any, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_nwb(_session(), tmp_path / "w.nwb")
        load_nwb(tmp_path / "w.nwb")


def test_missing_pynwb_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynwb", None)  # import pynwb now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'rtdecode\[nwb\]'"):
        load_nwb(tmp_path / "x.nwb")
    with pytest.raises(ImportError, match=r"rtdecode\[nwb\]"):
        save_nwb(Session([0.1], [0], 1, 0.0, 1.0), tmp_path / "x.nwb")


def test_several_image_series_warn_and_stimulus_name_chooses(pynwb: Any, tmp_path: Path) -> None:
    from pynwb.image import ImageSeries

    nwb = pynwb.NWBFile(session_description="d", identifier="i", session_start_time=datetime.now(timezone.utc))
    nwb.add_unit(spike_times=[0.1], id=0)
    nwb.add_stimulus(ImageSeries(name="movie", data=np.zeros((2, 2, 2), np.uint8), unit="n.a.", rate=10.0))
    nwb.add_acquisition(ImageSeries(name="eyecam", data=np.ones((3, 2, 2), np.uint8), unit="n.a.", rate=30.0))
    path = tmp_path / "two.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    with pytest.warns(UserWarning, match="using 'movie'"):
        assert load_nwb(path).frames.shape == (2, 2, 2)  # type: ignore[union-attr]
    s = load_nwb(path, stimulus_name="eyecam")
    assert s.frames is not None and s.frames.shape == (3, 2, 2)
    with pytest.raises(SessionError, match="'nope'"):
        load_nwb(path, stimulus_name="nope")


def _file_with_epochs_and_trials(pynwb: Any, path: Path) -> None:
    """10 s of spikes; epochs tagged by stimulus, a `running_bouts` intervals table, and six trials with a
    `stimulus` column, as acquisition pipelines write them."""
    from pynwb.epoch import TimeIntervals

    nwb = pynwb.NWBFile(session_description="epochs", identifier="ep-1", session_start_time=datetime.now(timezone.utc))
    nwb.add_unit(spike_times=np.arange(0.05, 10.0, 0.1))
    nwb.add_unit(spike_times=np.arange(0.02, 10.0, 0.25))
    nwb.add_epoch(start_time=0.0, stop_time=4.0, tags=["spontaneous"])
    nwb.add_epoch(start_time=4.0, stop_time=7.0, tags=["gratings", "visual"])
    nwb.add_epoch(start_time=7.0, stop_time=10.0, tags=["movie", "visual"])
    nwb.add_trial_column(name="stimulus", description="what was shown")
    for i, stim in enumerate(["gray", "grating", "grating", "movie", "grating", "movie"]):
        nwb.add_trial(start_time=1.0 + 1.5 * i, stop_time=2.0 + 1.5 * i, stimulus=stim)
    bouts = TimeIntervals(name="running_bouts", description="running")
    bouts.add_interval(start_time=2.0, stop_time=3.0)
    bouts.add_interval(start_time=5.0, stop_time=6.5)
    nwb.add_time_intervals(bouts)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_epochs_and_trials_select_parts_of_a_recording_by_name(pynwb: Any, tmp_path: Path) -> None:
    path = tmp_path / "epochs.nwb"
    _file_with_epochs_and_trials(pynwb, path)

    gratings = load_session(path, epoch="gratings")
    assert (gratings.start, gratings.stop) == (4.0, 7.0)
    np.testing.assert_array_equal(gratings.trials, [[4.0, 7.0]])
    assert gratings.spike_times.min() >= 4.0 and gratings.spike_times.max() < 7.0

    visual = load_session(path, epoch="visual")  # a tag on two touching epochs: their union
    end = load_session(path).stop  # the recording ends just after its last spike, inside the last epoch
    assert (visual.start, visual.stop) == (4.0, end)
    np.testing.assert_array_equal(visual.trials, [[4.0, end]])

    bouts = load_session(path, epoch="running_bouts")  # an intervals table by name
    np.testing.assert_array_equal(bouts.trials, [[2.0, 3.0], [5.0, 6.5]])

    grating_trials = load_session(path, trials="stimulus=grating")
    np.testing.assert_array_equal(grating_trials.trials, [[2.5, 3.5], [4.0, 5.0], [7.0, 8.0]])
    inside = load_session(path, epoch="gratings", trials="stimulus=grating")
    np.testing.assert_array_equal(inside.trials, [[4.0, 5.0]])
    assert load_session(path, trials="stimulus=grating", t0=3.0, t1=7.5).trials.tolist() == [[4.0, 5.0]]


@pytest.mark.parametrize(
    "selection, message",
    [
        (
            {"epoch": "sleep"},
            "epoch tags: ['gratings', 'movie', 'spontaneous', 'visual']; intervals tables: ['running_bouts']",
        ),
        ({"trials": "contrast=1"}, "no column 'contrast'"),
        ({"trials": "stimulus=noise"}, "values: ['grating', 'gray', 'movie']"),
        ({"trials": "stimulus"}, "COLUMN=VALUE"),
        ({"epoch": "movie", "trials": "stimulus=gray"}, "no trial with stimulus=gray lies inside epoch 'movie'"),
    ],
)
def test_a_selection_that_matches_nothing_says_what_exists(
    pynwb: Any, tmp_path: Path, selection: dict, message: str
) -> None:
    path = tmp_path / "epochs.nwb"
    _file_with_epochs_and_trials(pynwb, path)
    with pytest.raises(SessionError, match=re.escape(message)):
        load_session(path, **selection)


def test_epoch_selection_is_for_nwb_files(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    save_session(_session(), path)
    with pytest.raises(SessionError, match="not an .nwb file"):
        load_session(path, epoch="gratings")


def test_info_selects_an_epoch_by_name(pynwb: Any, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from rtdecode.cli import app

    path = tmp_path / "epochs.nwb"
    _file_with_epochs_and_trials(pynwb, path)
    r = CliRunner().invoke(app, ["info", str(path), "--epoch", "gratings", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["duration_s"] == pytest.approx(3.0) and summary["trials"] == 1
    r = CliRunner().invoke(app, ["info", str(path), "--trials", "stimulus=noise"])
    said = " ".join(r.output.split())  # rich wraps the line at the terminal's width
    assert r.exit_code == 2 and "no trial has stimulus = 'noise'" in said and "Traceback" not in said


def test_selected_intervals_are_merged_and_cut_to_the_recording() -> None:
    from rtdecode.io.nwb_intervals import merged

    got = merged(np.array([[6.0, 7.0], [0.0, 2.0], [1.0, 3.0], [5.0, 5.0], [3.0, 3.5]]))
    np.testing.assert_array_equal(got, [[0.0, 3.5], [6.0, 7.0]])  # overlapping and touching joined, empty dropped
    assert merged(np.zeros((0, 2))).shape == (0, 2)
