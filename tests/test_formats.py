"""Files written by rtdecode 0.1.0 (format version 1, tests/fixtures/v1, made by make_v1.py) still load and give
the same results. A change that breaks reading old files must fail here, and be a conscious, versioned change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtdecode.io import load_session
from rtdecode.io.token_store import load_tokens
from rtdecode.serve.recording import read_recording

V1 = Path(__file__).parent / "fixtures" / "v1"


def test_session_and_token_store_v1():
    s = load_session(V1 / "session.npz")
    assert (s.n_neurons, s.duration) == (40, 4.0) and "W" in s.truth and set(s.behavior) == {"speed", "phi", "theta"}
    tokens = load_tokens(V1 / "tokens")
    assert tokens.n_windows == 80 and tokens.bins.size == s.n_spikes


def test_checkpoint_v1_loads():
    pytest.importorskip("torch")
    from rtdecode.training.checkpoint import LoadedRun

    run = LoadedRun(V1 / "run")
    assert run.meta["format_version"] == 1 and run.vocab.n_neurons == 40
    assert [b.name for b in run.config.targets] == ["speed"]


def test_bundle_v1_decodes_as_recorded():
    pytest.importorskip("onnxruntime")
    from rtdecode.runtime import Bundle, Decoder

    decoder = Decoder(Bundle.load(V1 / "bundle"), backend="onnxruntime")  # hashes verified
    feeds = dict(np.load(V1 / "feeds.npz"))
    expected = json.loads((V1 / "expected.json").read_text())
    for name, value in decoder.decode(feeds).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-5)


def test_recording_v1_reads_completely():
    (path,) = (V1 / "recording").glob("*.rtrec")
    rec = read_recording(path)
    records = list(rec)
    assert rec.dropped_tail_bytes == 0
    assert sum(r.frames[0] == b"decode" for r in records if r.direction == 1) == 20
    assert any(r.frames[0] == b"spikes" for r in records if r.direction == 0)
