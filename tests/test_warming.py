"""The pre-close cache warm-up: it runs the real stream graph off the loop thread, when asked, and can never change
a decode. Timing here is about order (not before its time, the newest request wins), never about speed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rtdecode.data.window import RollingWindow
from rtdecode.runtime import Decoder
from rtdecode.runtime.streaming import WindowStream
from rtdecode.runtime.warming import CacheWarmer


class RecordingBackend:
    """Records when each run happened and with which feeds; fails on request."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[float, str, dict]] = []
        self.fail = fail
        self.ran = threading.Event()

    def run(self, graph: str, feeds: dict) -> list:
        self.calls.append((time.monotonic(), graph, feeds))
        self.ran.set()
        if self.fail:
            raise RuntimeError("backend failure")
        return []


def wait_for(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def test_the_newest_request_runs_and_not_before_its_time():
    backend = RecordingBackend()
    warmer = CacheWarmer(backend)
    try:
        t0 = time.monotonic()
        warmer.arm(t0 + 30.0, [("stream", {"which": "first"})])
        warmer.arm(t0 + 0.1, [("stream", {"which": "second"}), ("context", {"which": "second"})])  # replaces the first
        wait_for(lambda: warmer.runs == 1)
        assert [(g, f["which"]) for _, g, f in backend.calls] == [("stream", "second"), ("context", "second")]
        assert backend.calls[0][0] >= t0 + 0.1
        warmer.arm(time.monotonic() - 1.0, [("stream", {"which": "overdue"})])  # a time already passed runs at once
        wait_for(lambda: warmer.runs == 2)
        warmer.arm(time.monotonic() + 5.0, [("stream", {"which": "cancelled"})])
        warmer.cancel()
        time.sleep(0.2)
        assert warmer.runs == 2 and backend.calls[-1][2]["which"] == "overdue"
    finally:
        warmer.stop()
    assert not warmer._thread.is_alive()


def test_a_failing_warm_up_is_counted_and_the_thread_goes_on():
    backend = RecordingBackend(fail=True)
    warmer = CacheWarmer(backend)
    try:
        for k in range(2):
            warmer.arm(time.monotonic(), [("stream", {"k": k})])
            wait_for(lambda k=k: warmer.errors == k + 1)
        assert warmer.runs == 0 and not warmer.busy
    finally:
        warmer.stop()


def test_a_warm_up_on_the_real_stream_graph_changes_no_decode(tiny_bundle, tiny_session):
    decoder = Decoder(tiny_bundle, backend="onnxruntime")
    rw = RollingWindow(decoder.window, tiny_session.n_neurons, start=tiny_session.start)
    hi = np.searchsorted(tiny_session.spike_times, 3.0)
    windows = rw.push(tiny_session.spike_times[:hi], tiny_session.spike_neurons[:hi]) + rw.advance(3.0)
    w = max(windows, key=lambda w: w.neurons.size)
    feeds = decoder.window_feeds(w)
    last = decoder.window.bins_per_window - 1
    warmer = CacheWarmer(decoder.backend)
    try:
        results = []
        for warm in (False, True):
            stream = WindowStream(decoder, w, feeds, context_key=0)
            stream.commit(w, last)
            if warm:
                steps = stream.warm_steps()
                assert not any(
                    np.shares_memory(a, stream._k) or np.shares_memory(a, stream._v)
                    for _, feeds in steps
                    for a in feeds.values()
                )  # the loop thread may write those
                warmer.arm(time.monotonic(), steps)
                wait_for(lambda: warmer.runs == 1)
            results.append(stream.finish(w))
        assert warmer.errors == 0
    finally:
        warmer.stop()
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])


def test_a_warm_up_lead_beyond_what_caches_keep_is_refused(tiny_bundle):
    from rtdecode.serve.daemon import Daemon, ServeConfig

    with pytest.raises(ValueError, match="warm_lead_ms"):
        Daemon(tiny_bundle, ServeConfig(warm_lead_ms=50.0))
