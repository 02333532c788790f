"""Kilosort/phy output folders as sessions: unit selection by label, a behavior file joined on the recording's
clock, a stretch of time, and a clear error for each way a folder can be broken. Folders are written here with
numpy and the sorter's file layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtdecode.data.session import Session, SessionError
from rtdecode.io import load_session, save_session
from rtdecode.io.phy import load_phy

RATE = 30000.0


def write_phy(folder: Path, session: Session, *, labels: dict[str, str] | None = None) -> np.ndarray:
    """The session's spikes as a sorter folder; neuron i is cluster 100 + 2i. Kilosort labels even neurons good
    and odd ones mua; `labels` (cluster_group.tsv, phy's curation) overrides some. Returns the cluster IDs."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = 100 + 2 * np.arange(session.n_neurons)
    np.save(folder / "spike_times.npy", np.rint(session.spike_times * RATE).astype(np.uint64)[:, None])
    np.save(folder / "spike_clusters.npy", ids[session.spike_neurons].astype(np.int32))
    (folder / "params.py").write_text(
        "dat_path = 'raw.bin'\nn_channels_dat = 385\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {RATE}\nhp_filtered = False\n"
    )
    ks = "\n".join(f"{c}\t{'good' if i % 2 == 0 else 'mua'}" for i, c in enumerate(ids))
    (folder / "cluster_KSLabel.tsv").write_text("cluster_id\tKSLabel\n" + ks + "\n")
    if labels:
        rows = "\n".join(f"{c}\t{g}" for c, g in labels.items())
        (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n" + rows + "\n")
    return ids


def test_units_are_selected_by_label_with_phy_curation_over_kilosort(tiny_session, tmp_path):
    ids = write_phy(tmp_path / "ks", tiny_session, labels={"100": "noise", "102": "mua", "101": "good"})
    good = load_phy(tmp_path / "ks", units="good")
    # Kilosort's good are the even neurons (100, 104, ...); phy made 100 noise and 102 (odd: mua) ... mua
    expect_good = [c for i, c in enumerate(ids) if i % 2 == 0 and c != 100]
    assert good.neuron_ids.tolist() == expect_good and good.n_neurons == len(expect_good)
    mua = load_phy(tmp_path / "ks", units="mua")
    assert mua.neuron_ids.tolist() == [c for c in ids if c != 100]
    everything = load_phy(tmp_path / "ks", units="all")
    assert everything.neuron_ids.tolist() == ids.tolist() and everything.n_spikes == tiny_session.n_spikes
    np.testing.assert_allclose(everything.spike_times, tiny_session.spike_times, atol=0.5 / RATE)
    assert not everything.behavior and everything.frames is None and everything.start == 0.0


def test_a_behavior_file_joins_the_spikes_and_time_can_be_cut(tiny_session, tmp_path):
    write_phy(tmp_path / "ks", tiny_session)
    save_session(tiny_session, tmp_path / "behavior.npz")
    s = load_session(tmp_path / "ks", units="all", behavior=tmp_path / "behavior.npz", t0=5.0, t1=20.0)
    assert set(s.behavior) == set(tiny_session.behavior) and s.frames is not None
    assert (s.start, s.stop) == (5.0, 20.0) and s.spike_times.min() >= 5.0 and s.spike_times.max() < 20.0
    with pytest.raises(SessionError, match="must lie inside"):
        load_session(tmp_path / "ks", t0=20.0, t1=5.0)
    with pytest.raises(SessionError, match="joins a spike-sorter folder only"):
        load_session(tmp_path / "behavior.npz", behavior=tmp_path / "behavior.npz")


def test_params_py_is_read_as_data_never_run(tiny_session, tmp_path):
    write_phy(tmp_path / "ks", tiny_session)
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")
    (tmp_path / "ks" / "params.py").write_text(f"__import__('os').remove({str(sentinel)!r})\nsample_rate = {RATE}\n")
    assert load_phy(tmp_path / "ks").n_neurons > 0 and sentinel.exists()


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: (f / "params.py").unlink(), "no params.py"),
        (lambda f: (f / "params.py").write_text("n_channels_dat = 4\n"), "no sample_rate"),
        (lambda f: np.save(f / "spike_clusters.npy", np.zeros(3, np.int32)), "must come from the same sorting"),
        (lambda f: (f / "spike_clusters.npy").unlink(), "neither spike_clusters.npy"),
        (lambda f: (f / "cluster_group.tsv").write_text("cluster_id\tgroup\n100\tmaybe\n"), "unknown label 'maybe'"),
        (lambda f: (f / "cluster_group.tsv").write_text("id\tlabel\n100\tgood\n"), "expected the columns"),
        (lambda f: (f / "cluster_KSLabel.tsv").write_text("cluster_id\tKSLabel\n"), "no good units"),
    ],
    ids=["no-params", "no-rate", "lengths", "no-clusters", "unknown-label", "bad-header", "none-good"],
)
def test_a_broken_folder_gets_a_clear_error(tiny_session, tmp_path, breakage, message):
    write_phy(tmp_path / "ks", tiny_session)
    breakage(tmp_path / "ks")
    with pytest.raises(SessionError, match=message):
        load_phy(tmp_path / "ks")


def test_an_unknown_unit_selection_is_refused(tiny_session, tmp_path):
    write_phy(tmp_path / "ks", tiny_session)
    with pytest.raises(SessionError, match="unknown unit selection 'best'"):
        load_phy(tmp_path / "ks", units="best")


def test_info_and_train_read_a_phy_folder(tiny_session, tmp_path):
    """`rtdecode info` with the selection options, then a spikes-only model trained on the folder's good units
    (a sorted recording with no behavior at all)."""
    from rtdecode.cli import app

    write_phy(tmp_path / "ks", tiny_session)
    save_session(tiny_session, tmp_path / "behavior.npz")
    args = ["info", str(tmp_path / "ks"), "--units", "mua", "--behavior", str(tmp_path / "behavior.npz")]
    r = CliRunner().invoke(app, [*args, "--t0", "2", "--t1", "12", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["neurons"] == tiny_session.n_neurons and summary["duration_s"] == pytest.approx(10.0)
    assert "speed" in summary["behavior"]
    r = CliRunner().invoke(app, ["info", str(tmp_path / "ks"), "--units", "best"])
    assert r.exit_code == 2 and "unknown unit selection" in r.output
    pytest.importorskip("torch")
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "ks"), "--out", str(run), "--config", "spikes_only", "--max-steps", "2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    vocab = json.loads((run / "checkpoint.json").read_text())["vocab"]
    assert vocab["neuron_ids"] == [100 + 2 * i for i in range(0, tiny_session.n_neurons, 2)]
