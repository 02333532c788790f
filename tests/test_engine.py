"""The decode engine on its own: wire messages in, published outputs out, no sockets and no threads.

What the daemon tests check through real ZeroMQ sockets, checked here on the engine alone (the v1 fixture bundle,
decoded at close): a recorded session fed message by message decodes like offline inference on the same bundle,
and a bad message is counted, not raised, and changes nothing else.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rtdecode.core.window_data import WindowData
from rtdecode.io import load_session
from rtdecode.runtime import Bundle, Decoder
from rtdecode.serve.config import ServeConfig
from rtdecode.serve.engine import DecodeEngine
from rtdecode.wire.protocol import encode_behavior, encode_clock, encode_control, encode_frame, encode_spikes
from rtdecode.wire.replay import session_messages

V1 = Path(__file__).parent / "fixtures" / "v1"
ENCODERS = {"spikes": encode_spikes, "frame": encode_frame, "behavior": encode_behavior, "clock": encode_clock}


def published_topics(out: list[list[bytes]], topic: bytes) -> list[dict]:
    return [msgpack.unpackb(frames[1]) for frames in out if frames[0] == topic]


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return Bundle.load(V1 / "bundle")


def reading_context_at(bundle: Bundle, where: str, tmp: Path) -> Bundle:
    """The bundle with its windows reading their context (frames, behavior inputs) up to `where` ("end" or
    "start"): a manifest setting only, the graphs do not change."""
    if where == bundle.window.context_at:
        return bundle
    copy = tmp / "bundle"
    shutil.copytree(bundle.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["window"]["context_at"] = where
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return Bundle.load(copy)


@pytest.mark.parametrize(
    "arena, context_at",
    [(True, "end"), (False, "end"), (True, "start")],
    ids=["memory-arena", "no-memory-arena", "context-at-start"],
)
def test_a_session_fed_to_the_engine_decodes_like_offline_inference(
    bundle: Bundle, arena: bool, context_at: str, tmp_path: Path
) -> None:
    bundle = reading_context_at(bundle, context_at, tmp_path)
    session = load_session(V1 / "session.npz")
    out: list[list[bytes]] = []
    config = ServeConfig(skip_backlog=False, start=session.start, memory_arena=arena)
    engine = DecodeEngine(bundle, config, out.append)
    assert not engine.streaming  # the v1 bundle has no stream graph: decoded at close
    assert engine.decoder.backend.sessions["decode"].get_session_options().enable_cpu_mem_arena is arena
    names = tuple(b.name for b in bundle.behavior_inputs)
    for seq, (_, kind, args) in enumerate(session_messages(session, batch=0.005, behavior=names)):
        engine.handle(ENCODERS[kind](seq, 0.0, *args, src="test"), time.perf_counter())
        engine.step()
    decodes = published_topics(out, b"decode")
    windows = np.array([d["window"] for d in decodes])
    data = WindowData(session, bundle.config)
    first = data.tokens.first_window
    assert windows.size >= data.n_windows - 1 and np.array_equal(windows, np.arange(first, first + windows.size))
    offline = Decoder(bundle, backend="onnxruntime").decode(data.batch(windows - first, bundle.norm))
    for spec in bundle.targets:
        live = np.array([d["values"][spec.name] for d in decodes])
        np.testing.assert_allclose(live, offline[spec.name], atol=1e-5, rtol=0)
    status = engine.status()
    assert status["windows"] == windows.size and status["counters"].get("internal_error", 0) == 0
    assert status["counters"]["msg_spikes"] > 0 and "seq_gap" not in status["counters"]


def test_a_bad_message_is_counted_and_changes_nothing(bundle: Bundle) -> None:
    out: list[list[bytes]] = []
    engine = DecodeEngine(bundle, ServeConfig(), out.append)
    engine.handle([b"spikes", b"\xc1"], time.perf_counter())  # not msgpack
    engine.handle(encode_behavior(0, 0.0, "pupil", np.array([0.01]), np.array([1.0]), src="rig"), time.perf_counter())
    engine.handle(encode_spikes(1, 0.0, np.array([0.01]), np.array([1], np.int32), src="rig"), time.perf_counter())
    engine.handle(encode_clock(2, 0.0, 0.05, src="rig"), time.perf_counter())  # closes window 0
    engine.handle(encode_control(3, 0.0, "status"), time.perf_counter())
    counters = engine.status()["counters"]
    assert counters["malformed"] == 1 and counters["unknown_behavior"] == 1
    # the rejected behavior message (seq 0) did not advance the producer's sequence: seq 1 is its first
    assert "seq_gap" not in counters and "seq_reset" not in counters
    decodes = published_topics(out, b"decode")
    assert [d["window"] for d in decodes] == [0] and decodes[0]["n_spikes"] == 1
    assert published_topics(out, b"status")  # the status request was answered through `publish`


def _stream_and_match_offline(
    bundle: Bundle, session, *, step: bool, t1: float | None = None
) -> tuple[DecodeEngine, np.ndarray]:
    """Feed `session` (up to `t1`) to a streaming engine, message by message, with stream work after each one
    (`step`) or none at all; check every published regression decode equals offline inference within 1e-5.
    Returns the engine and the decoded window indices."""
    out: list[list[bytes]] = []
    engine = DecodeEngine(bundle, ServeConfig(skip_backlog=False, start=session.start), out.append)
    assert engine.streaming
    names = tuple(b.name for b in bundle.behavior_inputs)
    for seq, (_, kind, args) in enumerate(session_messages(session, batch=0.005, behavior=names, t1=t1)):
        engine.handle(ENCODERS[kind](seq, 0.0, *args, src="test"), time.perf_counter())
        if step:
            engine.step()
    decodes = published_topics(out, b"decode")
    windows = np.array([d["window"] for d in decodes])
    data = WindowData(session, bundle.config)
    offline = Decoder(bundle, backend="onnxruntime").decode(data.batch(windows - data.tokens.first_window, bundle.norm))
    for spec in bundle.targets:
        if spec.kind == "regression":
            live = np.array([d["values"][spec.name] for d in decodes])
            np.testing.assert_allclose(live, offline[spec.name], atol=1e-5, rtol=0)
    return engine, windows


@pytest.mark.parametrize("context_at", ["end", "start"])
def test_a_context_final_at_open_is_never_refreshed_mid_window(
    tiny_bundle: Path, tiny_session_path: Path, context_at: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed windows decode like offline inference either way; a window that reads its context up to its end
    re-runs its committed spikes whenever a frame or behavior sample it reads arrives while it is open, one that
    reads it up to its start (the rig config) never does. The stream schedule's waits are set to 0, so stream
    work follows every message."""
    from rtdecode.serve import streamer

    monkeypatch.setattr(streamer, "STREAM_INPUT_GRACE_S", 0.0)
    monkeypatch.setattr(streamer, "STREAM_YIELD_S", 0.0)
    bundle = reading_context_at(Bundle.load(tiny_bundle), context_at, tmp_path)
    session = load_session(tiny_session_path)
    engine, windows = _stream_and_match_offline(bundle, session, step=True, t1=8.0)
    counters = engine.status()["counters"]
    assert counters["windows_streamed"] >= 0.9 * windows.size
    refreshes = counters.get("stream_context_refresh", 0)
    assert refreshes > 10 if context_at == "end" else refreshes == 0, refreshes


def test_a_watermark_ends_the_input_grace_so_millisecond_blocks_stream(tiny_bundle: Path) -> None:
    """Stream work waits a moment after a block's spikes (their watermark may be right behind them), but not after
    the watermark: a rig sending a block every millisecond would otherwise never leave the grace. The wait after a
    publish still holds."""
    import collections

    from rtdecode.serve.streamer import WindowStreamer

    s = WindowStreamer(Decoder(tiny_bundle, backend="onnxruntime"), 0.0, collections.Counter())
    s.note_input(None)
    assert not s.ready()
    s.note_input(0.001)
    assert s.ready() and s.watermark == 0.001
    s.published()
    s.note_input(None)
    s.note_input(0.002)
    assert not s.ready() and s.poll_timeout_ms(20) >= 1


def test_a_window_without_a_stream_is_streamed_whole_at_close(tiny_bundle: Path, tiny_session) -> None:
    """No stream work between messages (as when the daemon skips ahead after a stall): every window closes without
    a stream and goes through the `stream` graph whole, never the slower whole-window `decode` graph, and still
    decodes like offline inference."""
    engine, windows = _stream_and_match_offline(Bundle.load(tiny_bundle), tiny_session, step=False)
    counters = engine.status()["counters"]
    assert counters["windows_streamed_at_close"] == windows.size > 10 and "windows_streamed" not in counters
