"""The daemon keeps up with its data: under overload it stays current (newest window decoded, the rest counted as
skipped, latency bounded), and a live stream that overflows the model's token budget is flagged and logged."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rtdecode.serve.health import BudgetWatch, OverloadWatch
from rtdecode.wire.replay import send_paced, session_messages
from tests.test_daemon import collect, connected, final_status, running_daemon

DELAY_S = 0.15  # three 50-ms windows per decode: the model cannot keep up with real time


class SlowBackend:
    """The real onnxruntime backend of the bundle, plus a fixed delay on every run of the graphs that decode a
    window (whole, or streamed: a window's close always runs the stream graph at least once): a model three times
    too slow for real time. A stand-in for a large model, so the test takes seconds, not minutes."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.graphs = inner.graphs  # so the decoder still sees the stream graph

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if graph in ("decode", "stream"):
            time.sleep(DELAY_S)
        return self.inner.run(graph, feeds)


@pytest.mark.parametrize("streaming", [False, True], ids=["window-at-a-time", "streaming"])
def test_an_overloaded_daemon_stays_current(tiny_bundle, tiny_session, streaming, caplog):
    t1 = 3.0
    n = int(round(t1 / 0.05))
    with (
        caplog.at_level(logging.WARNING, logger="rtdecode.serve"),
        running_daemon(tiny_bundle, streaming=streaming, prepare=_slow) as daemon,
        connected(daemon) as (prod, sub),
    ):
        send_paced(prod, session_messages(tiny_session, batch=0.005, behavior=("theta",), t1=t1), speed=1)
        t_sent = time.monotonic()
        decodes = collect(sub, "decode", lambda out: out[-1]["window"] >= n - 1, timeout=10)
        caught_up_s = time.monotonic() - t_sent
        status = final_status(prod, sub)
    windows = [d["window"] for d in decodes]
    assert windows == sorted(set(windows)) and windows[-1] == n - 1  # in order, and the newest one reached
    skipped = status["counters"]["windows_skipped"]
    assert len(decodes) + skipped == n and skipped >= n // 3  # ~2 of every 3 windows skipped
    # bounded latency: a decode is published a few windows after its window closed, never seconds later (producer
    # send of the closing message -> daemon publish; this test reads its subscriber only after sending). A daemon
    # that decoded every window would end n * DELAY_S - t1 (6 s) behind; the bound is a quarter of that, so a busy
    # machine's slower decodes cannot fail it while falling behind always does
    behind_s = n * DELAY_S - t1
    e2e = np.array([(d["t_send"] - d["in_t_send"]) * 1e3 for d in decodes])
    assert e2e.max() < behind_s / 4 * 1e3, e2e.max()
    assert caught_up_s < behind_s / 4
    assert status["overloaded"] and status["counters"]["overload_episodes"] >= 1
    assert any("slower than the data" in r.getMessage() for r in caplog.records)


def _slow(daemon: Any) -> None:
    daemon.decoder.backend = SlowBackend(daemon.decoder.backend)


def test_a_stream_over_the_token_budget_is_flagged_and_logged(tiny_bundle, caplog):
    """The tiny model has 46 spike slots per window; a rig sending 100 spikes per window gets told."""
    with (
        caplog.at_level(logging.WARNING, logger="rtdecode.serve"),
        running_daemon(tiny_bundle, skip_backlog=False) as daemon,
        connected(daemon) as (prod, sub),
    ):
        max_spikes = daemon.bundle.window.max_spikes
        rng = np.random.default_rng(0)
        first = final_status(prod, sub)["truncation"]
        for k in range(20):
            times = np.sort(k * 0.05 + rng.uniform(0, 0.05, 100))
            prod.spikes(times, rng.integers(0, 60, 100).astype(np.int32))
        prod.clock(1.0)
        decodes = collect(sub, "decode", lambda out: out[-1]["window"] >= 19)
        status = final_status(prod, sub)
    assert not first["over_budget"] and first["spikes_truncated"] == 0
    t = status["truncation"]
    assert sum(d["n_spikes"] for d in decodes) == t["spikes"] == 2000
    assert t["spikes_truncated"] == sum(d["truncated"] for d in decodes) == 20 * (100 - max_spikes)
    assert t["fraction"] == pytest.approx(t["fraction_recent"]) == pytest.approx((100 - max_spikes) / 100)
    assert t["over_budget"] and t["budget_spikes"] == max_spikes
    assert sum("overflows the model's token budget" in r.getMessage() for r in caplog.records) == 1  # rate-limited


def test_budget_watch_counts_recent_windows_only():
    w = BudgetWatch(max_spikes=10, max_history=20)
    assert w.add(15, 25) == 5 and w.over_budget
    for _ in range(1000):
        w.add(10, 20)
    assert w.truncated == 5 and w.recent_fraction == 0 and not w.over_budget
    assert w.status()["history_spikes_truncated"] == 5


def test_overload_watch_holds_then_recovers():
    o = OverloadWatch(hold_s=2.0)
    assert not o.record(0, False, now=0.0) and not o.overloaded(0.0)
    assert o.record(3, False, now=1.0) and o.overloaded(2.5)
    assert not o.record(0, True, now=2.0)  # the same episode
    assert not o.overloaded(4.1) and o.record(1, False, now=5.0) and o.episodes == 2
