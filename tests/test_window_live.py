"""The live rolling window yields exactly the offline tokens, however the stream is batched, in either token order."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtdecode.data.tokenizer import WindowConfig, tokenize_session
from rtdecode.data.window import RollingWindow

N = 5


def offline_and_live(times, neurons, cuts, cfg, start, stop):
    ts = tokenize_session(times, neurons, N, start, stop, cfg)
    rw = RollingWindow(cfg, N, start=start)
    closed = []
    edges = [0, *sorted(cuts), times.size]
    for lo, hi in zip(edges[:-1], edges[1:]):
        closed += rw.push(times[lo:hi], neurons[lo:hi])
    closed += rw.advance(stop)
    return ts, rw, closed


def assert_same_tokens(ts, closed):
    assert [c.index for c in closed] == list(ts.first_window + np.arange(ts.n_windows))
    cur = ts.current(np.arange(ts.n_windows))
    hist = ts.history(np.arange(ts.n_windows))
    for j, cw in enumerate(closed):
        c, h = cw.tokens(ts.config, ts.vocab)
        np.testing.assert_array_equal(c.ids[0], cur.ids[j])
        np.testing.assert_array_equal(c.dts[0], cur.dts[j])
        np.testing.assert_array_equal(h.ids[0], hist.ids[j])
        np.testing.assert_array_equal(h.dts[0], hist.dts[j])


@st.composite
def sessions(draw):
    dt = 0.01
    B = draw(st.integers(1, 6))
    P = draw(st.integers(1, 12))
    cfg = WindowConfig(
        window=B * dt,
        prev_window=P * dt,
        dt=dt,
        block_size=draw(st.integers(3, 10)),
        prev_block_size=draw(st.integers(1, 10)),
        token_order=draw(st.sampled_from(["neuron", "time"])),
    )
    start = draw(st.integers(0, 5)) * dt + draw(st.sampled_from([0.0, 0.003]))
    stop = start + draw(st.integers(0, 60)) * dt + draw(st.sampled_from([0.0, 0.004]))
    # spike times: a mix of exact quantum boundaries, bursts (repeats) and arbitrary times
    n = draw(st.integers(0, 120))
    grid = draw(st.lists(st.integers(int(start / dt) - P, int(stop / dt)), min_size=n, max_size=n))
    jitter = draw(st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.0099, 0.005]), min_size=n, max_size=n))
    times = np.array(grid, float) * dt + np.array(jitter, float)
    times = times[(times >= start - P * dt) & (times < stop)] if n else np.zeros(0)
    times = np.sort(times)
    neurons = np.array(draw(st.lists(st.integers(0, N - 1), min_size=times.size, max_size=times.size)), np.int32)
    cuts = draw(st.lists(st.integers(0, times.size), max_size=10))
    return cfg, start, stop, times, neurons, cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_live_equals_offline_for_any_batching(case):
    cfg, start, stop, times, neurons, cuts = case
    ts, rw, closed = offline_and_live(times, neurons, cuts, cfg, start, stop)
    assert_same_tokens(ts, closed)
    # sorted input is never late, except spikes older than the first window's history (no window can use them)
    too_old = ts.bins < ts.first_window * cfg.bins_per_window - cfg.prev_bins
    assert rw.counters.late == int(too_old.sum())


def test_simulated_session_in_64_spike_batches():
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 20, 40_000))
    neurons = rng.integers(0, N, times.size).astype(np.int32)
    cfg = WindowConfig(block_size=40, prev_block_size=60)
    ts, rw, closed = offline_and_live(times, neurons, list(range(64, times.size, 64)), cfg, 0.0, 20.0)
    assert_same_tokens(ts, closed)
    assert rw.counters.spikes_truncated == ts.truncation_stats()["spikes_truncated"]


def test_late_events_are_dropped_and_counted():
    cfg = WindowConfig()
    rw = RollingWindow(cfg, N)
    assert rw.push(np.array([0.01, 0.02]), np.array([0, 1])) == []
    closed = rw.push(np.array([0.06, 0.03, 0.07]), np.array([2, 3, 4]))  # 0.03 arrives after window 0 closed
    assert [c.index for c in closed] == [0]
    assert closed[0].neurons.tolist() == [0, 1]
    assert rw.counters.late == 1
    closed = rw.advance(0.1)
    assert closed[0].neurons.tolist() == [2, 4]
    assert closed[0].prev_neurons.tolist() == [0, 1]


def test_watermark_closes_empty_windows():
    rw = RollingWindow(WindowConfig(), N)
    closed = rw.advance(0.2)
    assert [c.index for c in closed] == [0, 1, 2, 3]
    assert all(c.neurons.size == 0 for c in closed)
    assert rw.advance(0.2) == [] and rw.advance(0.1) == []  # watermarks never go backwards


def test_bad_neurons_and_times_are_counted_not_raised():
    rw = RollingWindow(WindowConfig(), N)
    rw.push(np.array([0.01, 0.02, np.nan, 0.03]), np.array([0, N, 1, -1]))
    assert (rw.counters.bad_neuron, rw.counters.bad_time) == (2, 1)
    (w,) = rw.advance(0.05)
    assert w.neurons.tolist() == [0]


def test_out_of_order_inside_open_window_is_fine():
    rw = RollingWindow(WindowConfig(), N)
    rw.push(np.array([0.04, 0.01]), np.array([1, 2]))
    (w,) = rw.advance(0.05)
    assert w.neurons.tolist() == [2, 1] and w.offsets.tolist() == [1, 4]
    assert rw.counters.late == 0


def test_buffers_grow_for_huge_windows():
    rw = RollingWindow(WindowConfig(), N, capacity=4)
    t = np.linspace(0, 0.049, 1000)
    rw.push(t, np.zeros(1000, np.int32))
    (w,) = rw.advance(0.05)
    assert w.neurons.size == 1000


# ------------------------------------------------------------------ time faults and keep_last (the daemon's skipping)
def _same_window(a, b) -> None:
    assert (a.index, a.start, a.end) == (b.index, b.start, b.end)
    for name in ("neurons", "offsets", "prev_neurons", "prev_offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=4))
def test_keep_last_returns_the_newest_windows_with_identical_tokens(case, swaps):
    """With keep_last=1 each call returns only the newest of the windows it closes, built exactly as without it;
    every other counter agrees. Swapped spike times make some batches jump back in time (late events)."""
    cfg, start, stop, times, neurons, cuts = case
    times = times.copy()
    for i, j in swaps:
        if times.size:
            i, j = i % times.size, j % times.size
            times[i], times[j] = times[j], times[i]
    full, skip = RollingWindow(cfg, N, start=start), RollingWindow(cfg, N, start=start, keep_last=1)
    edges = [0, *sorted(cuts), times.size]
    calls = [(lambda rw, lo=lo, hi=hi: rw.push(times[lo:hi], neurons[lo:hi])) for lo, hi in zip(edges[:-1], edges[1:])]
    calls.append(lambda rw: rw.advance(stop))
    emitted = 0
    for call in calls:
        a, b = call(full), call(skip)
        assert len(b) == min(len(a), 1)
        if a:
            _same_window(a[-1], b[-1])
        emitted += len(b)
    fc, sc = full.counters, skip.counters
    assert (fc.late, fc.bad_neuron, fc.bad_time, fc.windows_closed, fc.spikes_truncated) == (
        sc.late,
        sc.bad_neuron,
        sc.bad_time,
        sc.windows_closed,
        sc.spikes_truncated,
    )
    assert sc.windows_skipped == fc.windows_closed - emitted and fc.windows_skipped == 0


def test_a_gap_of_years_is_crossed_in_one_step():
    """keep_last jumps over empty windows: 6e9 windows (~10 years of 50 ms) cost one window; a loop over them
    would never finish. The window after the gap has only its own history."""
    rw = RollingWindow(WindowConfig(), N, keep_last=1)
    rw.push(np.array([0.01, 0.02]), np.array([0, 1]))
    gap = 3e8  # s
    (w,) = rw.push(np.array([gap + 0.01]), np.array([2]))  # closes windows 0 .. 6e9 - 1
    assert w.index == int(gap / 0.05) - 1 and w.neurons.size == 0 and w.prev_neurons.size == 0
    assert rw.counters.windows_skipped == w.index and rw.counters.windows_closed == w.index + 1
    (w,) = rw.advance(gap + 0.05)
    assert w.neurons.tolist() == [2] and w.prev_neurons.size == 0


def test_a_clock_that_jumps_back_is_late_until_time_catches_up():
    """Spikes and watermarks behind the open window are counted (late, late_clock) and change nothing; once data
    time reaches the open window again, windows close and decode as if the jump had not happened."""
    rw = RollingWindow(WindowConfig(), N)
    assert len(rw.advance(1.0)) == 20  # windows 0..19 closed, window 20 [1.0, 1.05) open
    assert rw.advance(0.5) == [] and rw.counters.late_clock == 1  # the clock went back 0.5 s
    assert rw.push(np.array([0.5, 0.7, 0.99]), np.array([0, 1, 2])) == [] and rw.counters.late == 3
    assert rw.advance(1.0) == [] and rw.counters.late_clock == 1  # the open window's start is not behind it
    rw.push(np.array([1.02]), np.array([3]))
    (w,) = rw.advance(1.05)
    assert (w.index, w.neurons.tolist(), w.prev_neurons.tolist()) == (20, [3], [])
