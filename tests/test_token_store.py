"""Token store round trip, memory mapping, refusal of incomplete stores; `rtdecode prepare` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rtdecode.cli import app
from rtdecode.data.session import Session
from rtdecode.data.tokenizer import WindowConfig, tokenize_session
from rtdecode.io import save_session
from rtdecode.io.token_store import load_tokens, save_tokens


@pytest.fixture()
def session():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 10, 5000))
    return Session(t, rng.integers(0, 20, t.size), 20, 0.0, 10.0)


def test_round_trip_memory_mapped(tmp_path, session):
    ts = tokenize_session(session.spike_times, session.spike_neurons, 20, 0, 10, WindowConfig(block_size=20))
    save_tokens(ts, tmp_path / "tok")
    back = load_tokens(tmp_path / "tok")
    assert isinstance(back.bins, np.memmap)
    assert back.config == ts.config and back.vocab == ts.vocab
    w = np.arange(ts.n_windows)
    np.testing.assert_array_equal(back.current(w).ids, ts.current(w).ids)
    np.testing.assert_array_equal(back.history(w).dts, ts.history(w).dts)


def test_incomplete_store_is_refused(tmp_path, session):
    ts = tokenize_session(session.spike_times, session.spike_neurons, 20, 0, 10, WindowConfig())
    save_tokens(ts, tmp_path / "tok")
    (tmp_path / "tok" / "tokens.json").unlink()
    with pytest.raises(FileNotFoundError, match="rtdecode prepare"):
        load_tokens(tmp_path / "tok")


def test_prepare_cli(tmp_path, session):
    save_session(session, tmp_path / "s.npz")
    r = CliRunner().invoke(
        app, ["prepare", str(tmp_path / "s.npz"), "--out", str(tmp_path / "tok"), "--block-size", "12"]
    )
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "tok" / "tokens.json").read_text())
    assert meta["n_windows"] == 200 and meta["window_config"]["block_size"] == 12
    r = CliRunner().invoke(
        app, ["prepare", str(tmp_path / "s.npz"), "--out", str(tmp_path / "t2"), "--window", "0.055"]
    )
    assert r.exit_code == 2 and "multiple of dt" in r.output
