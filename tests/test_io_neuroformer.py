"""The Neuroformer release layout: exact dense round trip, naming, frame axes, and file reading without pickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from rtdecode.data.session import SessionError
from rtdecode.io.neuroformer import from_neuroformer_dict, load_neuroformer, to_neuroformer_dict


def _release_dict(seed: int = 0, n: int = 7, t: int = 300) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "spikes": rng.poisson(0.3, size=(n, t)).astype(np.int64),  # (N, T), some bins with 2+ spikes
        "stimulus": rng.integers(0, 256, size=(12, 5, 8), dtype=np.uint8),  # (F, H, W)
        "speed": rng.random(60),
        "phi": rng.normal(size=60),
        "th": rng.normal(size=60),
    }


KW = {"dt": 0.01, "frame_rate": 20.0, "behavior_dt": 0.05}


def test_dense_round_trip_is_exact() -> None:
    d = _release_dict()
    s = from_neuroformer_dict(d, **KW)
    assert s.n_spikes == d["spikes"].sum()
    back = to_neuroformer_dict(s, dt=0.01)
    np.testing.assert_array_equal(back["spikes"], d["spikes"])
    np.testing.assert_array_equal(back["stimulus"], d["stimulus"])
    for key in ("speed", "phi", "th"):
        np.testing.assert_array_equal(back[key], d[key])
        np.testing.assert_allclose(back[f"{key}_times"], np.arange(60) * 0.05)


@pytest.mark.parametrize("t0", [0.0, 3.7, 12345.678])
def test_round_trip_with_offset_start(t0: float) -> None:
    d = _release_dict(seed=1, t=1000)
    s = from_neuroformer_dict(d, **KW, t0=t0)
    assert s.start == t0
    np.testing.assert_array_equal(to_neuroformer_dict(s, dt=0.01)["spikes"], d["spikes"])


def test_spikes_at_bin_centres_sorted_by_time_then_neuron() -> None:
    counts = np.array([[0, 2, 0], [1, 1, 0], [0, 0, 3]])
    s = from_neuroformer_dict({"spikes": counts}, dt=0.1, frame_rate=None, behavior_dt=None)
    np.testing.assert_allclose(s.spike_times, [0.05, 0.15, 0.15, 0.15, 0.25, 0.25, 0.25])
    np.testing.assert_array_equal(s.spike_neurons, [1, 0, 0, 1, 2, 2, 2])
    assert s.n_neurons == 3 and s.start == 0.0 and s.stop == pytest.approx(0.3)
    np.testing.assert_array_equal(s.neuron_ids, [0, 1, 2])


def test_th_is_stored_as_theta_and_mapped_back() -> None:
    s = from_neuroformer_dict(_release_dict(), **KW)
    assert set(s.behavior) == {"speed", "phi", "theta"}
    np.testing.assert_allclose(s.behavior["theta"].times[:3], [0.0, 0.05, 0.1])
    out = to_neuroformer_dict(s, dt=0.01)
    assert {"spikes", "stimulus", "speed", "phi", "th", "th_times"} <= set(out)
    assert "theta" not in out


def test_frames_hwf_axis_and_timestamps() -> None:
    d = _release_dict()
    hwf = {"spikes": d["spikes"], "stimulus": np.moveaxis(d["stimulus"], 0, -1)}  # (H, W, F)
    s = from_neuroformer_dict(hwf, dt=0.01, frame_rate=20.0, behavior_dt=None, frame_axis=-1)
    np.testing.assert_array_equal(s.frames, d["stimulus"])
    np.testing.assert_allclose(s.frame_times, np.arange(12) / 20.0)
    back = to_neuroformer_dict(s, dt=0.01, frame_axis=-1)
    np.testing.assert_array_equal(back["stimulus"], hwf["stimulus"])


def test_longer_video_extends_session_and_n_bins_restores_matrix() -> None:
    d = {"spikes": np.ones((2, 10), dtype=np.int64), "stimulus": np.zeros((30, 2, 2), np.uint8)}
    s = from_neuroformer_dict(d, dt=0.01, frame_rate=100.0, behavior_dt=None)
    assert s.stop > 0.29
    np.testing.assert_array_equal(to_neuroformer_dict(s, dt=0.01, n_bins=10)["spikes"], d["spikes"])


def test_float_counts_accepted_when_whole() -> None:
    d = _release_dict()
    s = from_neuroformer_dict({"spikes": d["spikes"].astype(np.float32)}, dt=0.01, frame_rate=None, behavior_dt=None)
    np.testing.assert_array_equal(to_neuroformer_dict(s, dt=0.01)["spikes"], d["spikes"])


@pytest.mark.parametrize(
    ("spikes", "match"),
    [
        (np.array([[0, -1, 2]]), ">= 0"),
        (np.array([[0.0, 0.5, 2.0]]), "whole spike counts"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.zeros(5), r"\(N neurons, T bins\)"),
    ],
)
def test_bad_counts_rejected(spikes: np.ndarray, match: str) -> None:
    with pytest.raises(SessionError, match=match):
        from_neuroformer_dict({"spikes": spikes}, dt=0.01, frame_rate=None, behavior_dt=None)


def test_missing_rates_are_errors() -> None:
    d = _release_dict()
    with pytest.raises(SessionError, match="frame_rate"):
        from_neuroformer_dict(d, dt=0.01, frame_rate=None, behavior_dt=0.05)
    with pytest.raises(SessionError, match="behavior_dt"):
        from_neuroformer_dict(d, dt=0.01, frame_rate=20.0, behavior_dt=None)
    with pytest.raises(SessionError, match="'spikes'"):
        from_neuroformer_dict({"speed": d["speed"]}, **KW)
    with pytest.raises(SessionError, match="dt must be"):
        from_neuroformer_dict(d, dt=0.0, frame_rate=20.0, behavior_dt=0.05)


def test_load_npz_and_mat(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    d = _release_dict()
    np.savez(tmp_path / "s.npz", **d)
    s = load_neuroformer(tmp_path / "s.npz", **KW)
    np.testing.assert_array_equal(to_neuroformer_dict(s, dt=0.01)["spikes"], d["spikes"])
    scipy_io.savemat(tmp_path / "s.mat", d)  # vectors come back from MATLAB as (1, T)
    m = load_neuroformer(tmp_path / "s.mat", **KW)
    np.testing.assert_array_equal(to_neuroformer_dict(m, dt=0.01)["spikes"], d["spikes"])
    np.testing.assert_array_equal(m.behavior["theta"].values, d["th"])
    np.testing.assert_array_equal(m.frames, d["stimulus"])


def test_load_mat_v73_hdf5(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("scipy.io")
    d = _release_dict()
    path = tmp_path / "s73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in d.items():
            f[k] = np.asarray(v).T  # what MATLAB writes: column-major, so transposed as h5py sees it
    with open(path, "r+b") as f:  # the text header scipy.io uses to recognise v7.3
        f.write(b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    s = load_neuroformer(path, **KW)
    np.testing.assert_array_equal(to_neuroformer_dict(s, dt=0.01)["spikes"], d["spikes"])


def test_pickles_are_refused_unread(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    path = tmp_path / "session.pkl"
    path.write_bytes(pickle.dumps({"spikes": np.zeros((2, 2)), "x": Boom()}))
    with pytest.raises(SessionError, match=r"refusing to read a pickle.*np\.savez"):
        load_neuroformer(path, **KW)


def test_npz_with_object_arrays_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", spikes=np.array([[1, 0]]), meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SessionError, match="object arrays"):
        load_neuroformer(tmp_path / "o.npz", **KW)


def test_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "s.h5").write_bytes(b"")
    with pytest.raises(SessionError, match=r"\.npz or \.mat"):
        load_neuroformer(tmp_path / "s.h5", **KW)
