"""`rtdecode adapt`: a run pretrained on one day learns a new day's sorted units, and nothing else, then exports
and serves like any run. Real training, export and daemon on tiny simulated days of one circuit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from safetensors.torch import load_file
from typer.testing import CliRunner

from rtdecode.cli import app
from rtdecode.data.session import Session
from rtdecode.io import save_session
from rtdecode.sim.days import simulate_days
from rtdecode.training.adapt import UNIT_TABLES, adapt
from tests.conftest import TINY_SIM, _export_tiny


@pytest.fixture(scope="module")
def days() -> list[Session]:
    """Two days of the tiny circuit, 45 of its 60 neurons each, renumbered by the 'sorter'."""
    return simulate_days(TINY_SIM, days=2, overlap=0.7, recorded=45, drift=0.1)


@pytest.fixture(scope="module")
def pretrained(days: list[Session], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import _train_tiny

    folder = tmp_path_factory.mktemp("adapt")
    save_session(days[0], folder / "day0.npz")
    return _train_tiny(folder / "day0.npz", folder / "run0")


def test_an_adapted_run_trains_only_the_new_units_and_serves(
    days: list[Session], pretrained: Path, tmp_path: Path
) -> None:
    day1 = days[1]
    # the truth says which day-1 units are day-0 units: the map a user would give after matching waveforms
    day0_ids = {int(c): int(u) for c, u in zip(days[0].truth["circuit_neuron"], days[0].neuron_ids)}
    mapping = {
        str(int(u)): day0_ids[int(c)]
        for c, u in zip(day1.truth["circuit_neuron"], day1.neuron_ids)
        if int(c) in day0_ids
    }
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    out = tmp_path / "run1"
    result = adapt(pretrained, day1, out, minutes=0.3, steps=6, unit_map=tmp_path / "map.json", log=lambda _: None)
    assert result.step == 6

    before, after = load_file(str(pretrained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(before) == set(after)
    for key in before:
        if key not in UNIT_TABLES:  # the backbone, the heads, the projections: frozen
            assert np.array_equal(before[key].numpy(), after[key].numpy()), key
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["vocab"]["neuron_ids"] == [int(u) for u in day1.neuron_ids]
    n_new = day1.n_neurons
    assert after["id_emb.weight"].shape[0] == n_new + 3 and not np.array_equal(
        after["id_emb.weight"].numpy()[:n_new], before["id_emb.weight"].numpy()[:n_new]
    )

    bundle = _export_tiny(out, day1, tmp_path / "bundle")  # parity-checked export of the adapted run
    from rtdecode.serve.daemon import Daemon, ServeConfig, serve_in_thread
    from rtdecode.wire.client import Producer, Subscriber
    from rtdecode.wire.replay import send_paced, session_messages

    config = ServeConfig(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0", start=10.0, skip_backlog=False)
    with (
        serve_in_thread(Daemon(bundle, config)) as daemon,
        Subscriber(daemon.output_endpoint, topics=("decode",)) as sub,
        Producer(daemon.input_endpoint) as prod,
    ):
        sub.describe(prod, timeout=10)
        send_paced(prod, session_messages(day1, t0=9.9, t1=11.0, behavior=("theta",)), speed=0)
        decodes = [m for m in sub.messages(timeout=3.0) if m["topic"] == "decode"]
    assert len(decodes) >= 15 and all(np.isfinite(m["values"]["speed"]) for m in decodes)


def test_unit_maps_are_checked(days: list[Session], pretrained: Path, tmp_path: Path) -> None:
    day1 = days[1]
    cases = {
        "[1, 2]": "is a JSON object",
        '{"x": 1}': "not a pair of integer unit IDs",
        json.dumps({str(int(day1.neuron_ids[0])): 10**6}): "not a unit of the pretrained run",
        json.dumps({"999999": int(days[0].neuron_ids[0])}): "not a unit of the new session",
        json.dumps({str(int(u)): int(days[0].neuron_ids[0]) for u in day1.neuron_ids[:2]}): "more than one new unit",
    }
    for text, message in cases.items():
        (tmp_path / "map.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            adapt(pretrained, day1, tmp_path / "r", minutes=0.1, steps=1, unit_map=tmp_path / "map.json")


def test_rtdecode_adapt_says_what_a_session_lacks(days: list[Session], pretrained: Path, tmp_path: Path) -> None:
    import dataclasses

    no_frames = dataclasses.replace(days[1], frames=None, frame_times=None)
    save_session(no_frames, tmp_path / "d.npz")
    r = CliRunner().invoke(
        app, ["adapt", "--from", str(pretrained), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o")]
    )
    said = " ".join(r.output.split())  # rich wraps the line at the terminal's width
    assert r.exit_code == 2 and "no frames" in said and "Traceback" not in said
