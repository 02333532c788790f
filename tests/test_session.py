"""Session validation (every malformed input is refused with a message naming the fix) and the native .npz format."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtdecode.data.session import Behavior, Session, SessionError
from rtdecode.io import load_session, save_session
from rtdecode.io.npz import load_npz, save_npz


def _kwargs(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "spike_times": np.array([0.1, 0.2, 0.2, 0.7]),
        "spike_neurons": np.array([0, 2, 1, 0]),
        "n_neurons": 3,
        "start": 0.0,
        "stop": 1.0,
    }
    base.update(over)
    return base


def _full_session() -> Session:
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 10, 500))
    return Session(
        spike_times=times,
        spike_neurons=rng.integers(0, 5, times.size),
        n_neurons=5,
        start=0.0,
        stop=10.0,
        neuron_ids=[10, 11, 12, 40, 41],
        frames=rng.integers(0, 256, (20, 3, 4), dtype=np.uint8),
        frame_times=np.arange(20) * 0.5,
        behavior={"speed": Behavior(np.arange(100) * 0.1, rng.random(100), "cm/s"), "phi": Behavior([1.0], [np.nan])},
        trials=[[0.0, 4.0], [5.0, 9.0]],
        truth={"W": rng.normal(size=(5, 5))},
        metadata={"source": "unit-test", "seed": 3},
    )


def test_valid_session_builds() -> None:
    s = Session(**_kwargs())
    assert s.n_spikes == 4 and s.spike_neurons.dtype == np.int32
    np.testing.assert_array_equal(s.neuron_ids, [0, 1, 2])
    assert s.modalities() == ["spikes"]


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"spike_times": np.array([0.1, 0.3, 0.2, 0.7])}, "not sorted"),
        ({"spike_times": np.array([0.1, np.nan, 0.2, 0.7])}, "NaN"),
        ({"spike_neurons": np.array([0, 3, 1, 0])}, "neuron index out of range"),
        ({"spike_neurons": np.array([0, -1, 1, 0])}, "neuron index out of range"),
        ({"spike_neurons": np.array([0, 1, 1])}, "same length"),
        ({"spike_neurons": np.array([0, 1.5, 1, 0])}, "integer"),
        ({"spike_times": np.array([0.1, 0.2, 0.2, 1.0])}, "outside the session"),
        ({"start": 1.0, "stop": 1.0}, "start < stop"),
        ({"n_neurons": 0, "spike_times": [], "spike_neurons": []}, "n_neurons must be positive"),
        ({"neuron_ids": [5, 5, 6]}, "unique"),
        ({"neuron_ids": [5, 6]}, "neuron_ids must have shape"),
        ({"frames": np.zeros((2, 3, 3), np.uint8)}, "frames given without frame_times"),
        ({"frame_times": [0.0, 0.5]}, "frame_times given without frames"),
        ({"frames": np.zeros((2, 3, 3), np.uint8), "frame_times": [0.0]}, "2 frames but 1 frame_times"),
        ({"frames": np.zeros((2, 3, 3), np.uint8), "frame_times": [0.5, 0.5]}, "strictly increasing"),
        ({"frames": np.zeros((2, 3), np.uint8), "frame_times": [0.0, 0.5]}, "grayscale"),
        ({"behavior": {"speed": Behavior([0.0, 0.1], [1.0])}}, "1 values but 2 timestamps"),
        ({"behavior": {"speed": Behavior([0.1, 0.0], [1.0, 2.0])}}, "strictly increasing"),
        ({"trials": [[0.5, 0.2]]}, "start < stop"),
        ({"trials": [[0.0, 0.5], [0.4, 0.8]]}, "non-overlapping"),
    ],
)
def test_invalid_sessions_are_refused(over: dict[str, Any], match: str) -> None:
    with pytest.raises(SessionError, match=match):
        Session(**_kwargs(**over))


def test_npz_round_trip_exact(tmp_path: Path) -> None:
    s = _full_session()
    save_session(s, tmp_path / "s.npz")
    r = load_session(tmp_path / "s.npz")
    for name in ("spike_times", "spike_neurons", "neuron_ids", "frames", "frame_times", "trials"):
        a, b = getattr(s, name), getattr(r, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert (r.n_neurons, r.start, r.stop) == (s.n_neurons, s.start, s.stop)
    for name, beh in s.behavior.items():
        np.testing.assert_array_equal(r.behavior[name].times, beh.times)
        np.testing.assert_array_equal(r.behavior[name].values, beh.values)
        assert r.behavior[name].unit == beh.unit
    np.testing.assert_array_equal(r.truth["W"], s.truth["W"])
    assert r.metadata == s.metadata


def test_npz_refuses_non_rtdecode_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", spikes=np.zeros((2, 3)))
    with pytest.raises(SessionError, match="not an rtdecode session"):
        load_npz(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SessionError, match="not a readable"):
        load_npz(tmp_path / "junk.npz")


def test_npz_refuses_pickled_content(tmp_path: Path) -> None:
    # Object arrays need pickle; np.load(allow_pickle=False) refuses them before any unpickling happens.
    # (load_npz lets numpy's ValueError through rather than a SessionError naming the file; both are ValueErrors.)
    np.savez(tmp_path / "p.npz", format=np.array({"evil": 1}, dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(tmp_path / "p.npz")


def test_npz_newer_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    save_npz(Session(**_kwargs()), path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["format_version"] = np.array(99)
    np.savez(path, **arrays)
    with pytest.raises(SessionError, match="upgrade rtdecode"):
        load_npz(path)


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.npz"
    save_npz(Session(**_kwargs()), path)
    before = path.read_bytes()

    def failing_savez(file: Any, **arrays: Any) -> None:
        file.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_npz(_full_session(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.npz"]
    assert zipfile.is_zipfile(path)


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="unknown session format"):
        save_session(Session(**_kwargs()), tmp_path / "s.csv")
    with pytest.raises(FileNotFoundError):
        load_session(tmp_path / "missing.npz")


def test_slice_time_cuts_every_stream() -> None:
    s = _full_session().slice_time(2.0, 6.0)
    assert s.start == 2.0 and s.stop == 6.0
    assert s.spike_times.min() >= 2.0 and s.spike_times.max() < 6.0
    assert s.frame_times is not None and s.frame_times[0] == 2.0 and s.frame_times[-1] < 6.0
    np.testing.assert_array_equal(s.trials, np.empty((0, 2)))
