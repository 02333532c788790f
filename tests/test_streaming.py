"""Streaming decode: the same decodes as window-at-a-time, from the runtime up to the live daemon."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rtdecode.data.window import RollingWindow
from rtdecode.runtime import Bundle, Decoder
from rtdecode.runtime.bundle import STREAM_GRAPH_VERSION
from rtdecode.runtime.streaming import StreamingError, WindowStream


def closed_windows(decoder: Decoder, session, t1: float = 6.0):
    rw = RollingWindow(decoder.window, session.n_neurons, start=session.start)
    hi = np.searchsorted(session.spike_times, t1)
    return rw.push(session.spike_times[:hi], session.spike_neurons[:hi]) + rw.advance(t1)


@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_a_window_streamed_in_chunks_decodes_like_the_whole_window(tiny_bundle, tiny_session, chunks):
    decoder = Decoder(tiny_bundle, backend="onnxruntime")
    n_bins = decoder.window.bins_per_window
    worst = 0.0
    for w in closed_windows(decoder, tiny_session):
        feeds = decoder.window_feeds(w)
        stream = WindowStream(decoder, w, feeds, context_key=0)
        for b in np.linspace(0, n_bins, chunks + 1)[1:-1].astype(int):
            stream.commit(w, b)
        assert stream.matches(w, 0)
        got, ref = stream.finish(w), decoder.decode(feeds)
        for spec in decoder.targets:
            name = spec.name
            if spec.kind == "regression":
                worst = max(worst, float(np.abs(got[name] - ref[name]).max()))
            else:
                assert np.array_equal(got[name], ref[name])
    assert worst < 1e-5


def test_a_speculated_tail_is_reused_only_when_it_is_the_final_tail(tiny_bundle, tiny_session):
    decoder = Decoder(tiny_bundle, backend="onnxruntime")
    last = decoder.window.bins_per_window - 1
    checked = 0
    for w in closed_windows(decoder, tiny_session)[:40]:
        feeds = decoder.window_feeds(w)
        ref = decoder.decode(feeds)
        in_last = w.offsets >= last
        if not in_last.any():
            continue
        partial = w._replace(neurons=w.neurons[:-1], offsets=w.offsets[:-1])  # the last event not yet arrived
        for seen, reused in ((w, True), (partial, False)):
            stream = WindowStream(decoder, w, feeds, context_key=0)
            stream.commit(w, last)
            stream.speculate(seen)
            got = stream.finish(w)
            assert stream.speculation_used is reused
            for spec in decoder.targets:
                if spec.kind == "regression":
                    assert abs(float(got[spec.name][0] - ref[spec.name][0])) < 1e-5
        checked += 1
    assert checked > 5


def test_the_close_reads_the_cache_slots_copied_before_it_and_writes_none(tiny_bundle, tiny_session):
    """The past slots are copied once per position (here by the warm-up), the close only reads them, and the
    tail's keys/values are never written: after the close nothing reads them."""
    decoder = Decoder(tiny_bundle, backend="onnxruntime")
    last = decoder.window.bins_per_window - 1
    w = max(closed_windows(decoder, tiny_session), key=lambda w: int((w.offsets >= last).sum()))
    feeds = decoder.window_feeds(w)
    stream = WindowStream(decoder, w, feeds, context_key=0)
    stream.commit(w, last)
    warm_feeds = stream.warm_steps()[0][1]
    made = stream._past[1]
    k, v = stream._k.copy(), stream._v.copy()
    got = stream.finish(w)
    assert stream._past[1] is made and all(warm_feeds[name] is a for name, a in made.items())
    np.testing.assert_array_equal(stream._k, k)
    np.testing.assert_array_equal(stream._v, v)
    ref = decoder.decode(feeds)
    for spec in decoder.targets:
        if spec.kind == "regression":
            assert abs(float(got[spec.name][0] - ref[spec.name][0])) < 1e-5
    stream.set_context(feeds, 1)  # a refreshed context rewrites the committed slots: the copies are made anew
    assert stream._past[1] is not made
    np.testing.assert_array_equal(stream._past_slots()["past_k0"], stream._k[0, :, :, : max(stream._pos, 1)])


def test_a_changed_prefix_or_context_is_detected(tiny_bundle, tiny_session):
    decoder = Decoder(tiny_bundle, backend="onnxruntime")
    w = next(w for w in closed_windows(decoder, tiny_session) if w.neurons.size > 4)
    stream = WindowStream(decoder, w, decoder.window_feeds(w), context_key="a")
    stream.commit(w, int(w.offsets[2]) + 1)
    assert stream.n_committed >= 3 and stream.matches(w, "a") and not stream.matches(w, "b")
    other = w._replace(neurons=w.neurons[::-1].copy())  # as if events landed out of order in committed quanta
    assert not stream.matches(other, "a")
    assert stream.commit(other, 99) == 0 and stream.broken


def test_bundles_without_stream_graphs_say_so():
    from pathlib import Path

    decoder = Decoder(Path(__file__).parent / "fixtures" / "v1" / "bundle", backend="onnxruntime")
    assert not decoder.can_stream
    with pytest.raises(StreamingError, match="re-export"):
        WindowStream(decoder, None, {}, 0)  # type: ignore[arg-type]


def test_stream_feeds_give_the_graph_only_filled_slots_and_a_causal_mask():
    from rtdecode.runtime.streaming import stream_feeds

    L, H, C, hd = 2, 2, 8, 4
    k = np.arange(L * H * C * hd, dtype=np.float32).reshape(L, 1, H, C, hd)
    before = np.ones((1, H * hd), np.float32)
    f = stream_feeds(np.array([[1, 2, 3]]), np.array([[0, 0, 1]]), 5, k, k.copy(), {"hist0_k": np.zeros(1)}, before)
    assert f["past_k1"].shape == (1, H, 5, hd) and f["past_k1"].flags.c_contiguous
    np.testing.assert_array_equal(f["past_k1"], k[1, :, :, :5])
    inf = -np.inf
    np.testing.assert_array_equal(f["mask"], [[0, 0, 0, 0, 0, 0, inf, inf], [0, 0, 0, 0, 0, 0, 0, inf], [0] * 8])
    assert int(f["pos"]) == 5 and "hist0_k" in f and f["hidden_before"] is before
    first = stream_feeds(np.array([[1, 2]]), np.array([[0, 0]]), 0, k, k, {}, before)  # no past: one slot, masked out
    assert first["past_v0"].shape == (1, H, 1, hd)
    np.testing.assert_array_equal(first["mask"], [[inf, 0, inf], [inf, 0, 0]])


@pytest.mark.parametrize("dropped", ["mask", "hidden_before", "new_k0"])
def test_bundles_with_an_earlier_form_of_the_stream_graph_decode_window_at_a_time(tiny_bundle, tmp_path, dropped):
    """Development bundles exported before the stream graph was made lean (a whole fixed-size cache as input,
    no mask), before the heads moved into it (a separate `finalize` graph, no `hidden_before`), or with stacked
    keys/values (no `new_k0`), must not be streamed with the new feeds: they decode window at a time until
    re-exported."""
    import json
    import shutil

    old = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["graphs"]["stream"]["version"] == STREAM_GRAPH_VERSION
    del manifest["graphs"]["stream"]["version"]  # as written before the version was
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert Decoder(old, backend="onnxruntime").can_stream  # the current form, recognised by its names
    for side in ("inputs", "outputs"):
        manifest["graphs"]["stream"][side] = [i for i in manifest["graphs"]["stream"][side] if i["name"] != dropped]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert Decoder(tiny_bundle, backend="onnxruntime").can_stream
    assert not Decoder(old, backend="onnxruntime").can_stream


def test_a_stream_graph_of_another_version_is_not_streamed(tiny_bundle, tmp_path):
    """The manifest's explicit stream-graph version decides, not the graph's input names."""
    import json
    import shutil

    other = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["graphs"]["stream"]["version"] = STREAM_GRAPH_VERSION + 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert Bundle.load(other).stream_graph_version == STREAM_GRAPH_VERSION + 1
    assert not Decoder(other, backend="onnxruntime").can_stream


@pytest.mark.slow
@pytest.mark.parametrize("bounded, by_time", [(False, False), (True, True)], ids=["whole", "rig"])
def test_streaming_stays_exact_at_rig_scale(tmp_path, bounded, by_time):
    """Over 1000 spikes per window (derived budgets, nothing truncated): a window streamed quantum by quantum, as
    the daemon does, decodes like the whole window within 1e-5, with the reference's whole attention and tokens
    in neuron order; and as the rig config runs: bounded attention (a span far shorter than the window, history
    through latent summaries), whose export parity (decode, step, stream, greedy generation vs PyTorch) must pass
    too, and tokens in spike-time order, streamed 1 ms of spikes at a time. (Bounded attention in neuron order is
    checked in PyTorch, tests/test_model.py: each export here costs most of the test's time.)"""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from rtdecode.core.config import RunConfig
    from rtdecode.core.window_data import WindowData, make_split
    from rtdecode.export.onnx import export_bundle
    from rtdecode.io import save_session
    from rtdecode.sim.simulator import SimulationConfig, simulate
    from rtdecode.training.train import train
    from tests.conftest import tiny_config_dict

    session = simulate(
        SimulationConfig(
            n_neurons=400, duration=8.0, base_rate=40.0, n_visual=20, n_speed=20, n_phi=20, n_theta=20, seed=3
        )
    )
    save_session(session, tmp_path / "dense.npz")
    d = tiny_config_dict(max_steps=2, eval_every=2, eval_windows=4, batch_size=2, n_blocks=4)
    d["window"] = {"prev_window": 0.05, "dt": 0.005, "token_order": "time" if by_time else "neuron"}
    if bounded:
        d["model"].update(attention_span=64, history_latents=16)
    cfg = RunConfig.from_dict(d)
    run = train(cfg, tmp_path / "dense.npz", tmp_path / "run", log=lambda _: None).run_dir
    data = WindowData(
        session, RunConfig.from_dict(__import__("json").loads((run / "checkpoint.json").read_text())["config"])
    )
    export_bundle(run, tmp_path / "bundle", data=data, windows=make_split(data, data.cfg).test[:2], log=lambda _: None)
    decoder = Decoder(tmp_path / "bundle", backend="onnxruntime")
    assert decoder.bundle.manifest["parity"]["passed"]
    windows = [w for w in closed_windows(decoder, session, t1=1.5) if w.neurons.size >= 1000][:4]
    assert windows and decoder.window.max_spikes >= max(w.neurons.size for w in windows)  # nothing truncated
    worst = 0.0
    for w in windows:
        feeds = decoder.window_feeds(w)
        stream = WindowStream(decoder, w, feeds, context_key=0)
        if by_time:
            for t in np.linspace(w.start, w.end, 51)[1:-1]:  # 1 ms of spikes at a time, the last left to the close
                stream.commit_first(w, int(np.searchsorted(w.times, t)))  # spikes before t
        else:
            for boundary in range(1, decoder.window.bins_per_window):  # one quantum at a time
                stream.commit(w, boundary)
        assert stream.matches(w, 0) and stream.n_committed < w.neurons.size
        got, ref = stream.finish(w), decoder.decode(feeds)
        worst = max(
            worst,
            max(float(np.abs(got[s.name] - ref[s.name]).max()) for s in decoder.targets if s.kind == "regression"),
        )
    assert worst < 1e-5, worst
