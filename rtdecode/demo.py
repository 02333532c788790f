"""`rtdecode demo`: the main job end to end on the built-in simulated session.

Today: simulate a ground-truth session -> summarise it -> tokenize it once (token store) -> split it by time
blocks with guard gaps -> stream the held-out part through the live rolling window in rig-sized batches and
check that every window's tokens equal the offline tokenizer's. Later stages (train, export, serve, report) join
as they land. Returns a JSON-able summary, also written to <out>/demo-summary.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.io import save_session
from rtdecode.io.atomic import atomic_write
from rtdecode.session import Session
from rtdecode.simulator import SimulationConfig, simulate
from rtdecode.splits import split_blocks
from rtdecode.summary import session_summary
from rtdecode.token_store import save_tokens
from rtdecode.tokenizer import WindowConfig, tokenize_session
from rtdecode.window import RollingWindow

__all__ = ["run_demo"]


def run_demo(
    out: Path,
    *,
    duration: float,
    seed: int = 0,
    batch_duration: float = 0.005,
    log: Callable[[str], None] = print,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run every stage that exists on a fresh simulated session; raise if any check fails."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = WindowConfig()
    t0 = time.perf_counter()
    session = simulate(SimulationConfig(duration=duration, seed=seed), progress=progress)
    save_session(session, out / "session.npz")
    t_sim = time.perf_counter() - t0
    log(f"simulated {session.n_neurons} neurons x {session.duration:.0f} s in {t_sim:.1f} s -> {out / 'session.npz'}")

    summary = session_summary(session, cfg)
    tokens = tokenize_session(
        session.spike_times, session.spike_neurons, session.n_neurons, session.start, session.stop, cfg,
        session.neuron_ids,
    )
    save_tokens(tokens, out / "tokens", source={"session": str(out / "session.npz")})
    split = split_blocks(tokens.window_starts(), cfg.window, gap=cfg.prev_window + cfg.window, seed=seed)
    log(f"tokenized {tokens.n_windows:,} windows -> {out / 'tokens'}; split {split.summary()}")

    live = _check_live_equals_offline(session, tokens, split.test, batch_duration)
    log(
        f"live window: {live['windows']} held-out windows streamed in {batch_duration * 1e3:.0f}-ms batches, "
        f"tokens identical to offline: {live['identical']}"
    )
    if not live["identical"]:
        raise RuntimeError("live rolling window disagreed with the offline tokenizer; this is a bug")
    result = {"session": summary, "split": split.summary(), "live_check": live, "simulate_s": t_sim}
    with atomic_write(out / "demo-summary.json") as f:
        f.write(json.dumps(result, indent=2).encode())
    return result


def _check_live_equals_offline(session: Session, tokens: Any, test_windows: np.ndarray, batch_duration: float) -> dict[str, Any]:
    """Replay the longest contiguous run of held-out windows through RollingWindow; compare with offline."""
    if test_windows.size == 0:
        return {"windows": 0, "identical": True}
    runs = np.split(test_windows, np.flatnonzero(np.diff(test_windows) != 1) + 1)
    run = max(runs, key=len)
    starts = tokens.window_starts()
    t_start, t_stop = float(starts[run[0]]), float(starts[run[-1]]) + tokens.config.window
    lo = np.searchsorted(session.spike_times, t_start - tokens.config.prev_window)
    hi = np.searchsorted(session.spike_times, t_stop)
    times, neurons = session.spike_times[lo:hi], session.spike_neurons[lo:hi]
    rw = RollingWindow(tokens.config, session.n_neurons, start=t_start)
    closed = []
    edges = np.searchsorted(times, np.arange(times[0] if times.size else t_start, t_stop, batch_duration))
    for a, b in zip(edges, [*edges[1:], times.size]):
        closed += rw.push(times[a:b], neurons[a:b])
    closed += rw.advance(t_stop)
    cur, hist = tokens.current(run), tokens.history(run)
    identical = len(closed) == run.size
    for j, window in enumerate(closed[: run.size]):
        c, h = window.tokens(tokens.config, tokens.vocab)
        identical &= bool(np.array_equal(c.ids[0], cur.ids[j]) and np.array_equal(c.dts[0], cur.dts[j]))
        identical &= bool(np.array_equal(h.ids[0], hist.ids[j]) and np.array_equal(h.dts[0], hist.dts[j]))
    return {"windows": int(run.size), "identical": bool(identical), "late": rw.counters.late}
