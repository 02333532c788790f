"""Streaming a session (or a recording) to a daemon exactly as a rig would: time-ordered messages, paced.

`session_messages` cuts a session into batches of `batch` seconds: each batch's frames and behavior samples,
then its spikes, then a clock watermark at the batch end, so a frame shown before a window's end always reaches
the daemon before the spike or watermark that closes that window. `send_paced` sends them at `speed` x real
time (0 = as fast as possible), on the session clock: the batch ending at t leaves at t / speed after the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from rtdecode.data.session import Session
from rtdecode.wire.client import Producer

__all__ = ["session_messages", "send_paced"]

Message = tuple[float, str, tuple]  # (data time at which it may be sent, kind, arguments)


def session_messages(
    session: Session,
    batch: float = 0.005,
    behavior: tuple[str, ...] = (),
    t0: float | None = None,
    t1: float | None = None,
) -> Iterator[Message]:
    """Messages for [t0, t1) of `session` (default: all), batched by data time.

    Args:
        batch: seconds of data per spike message (a rig's acquisition block).
        behavior: names of behavior variables to stream (the model's behavior inputs).
    """
    t0 = session.start if t0 is None else t0
    t1 = session.stop if t1 is None else t1
    edges = np.arange(t0, t1, batch)
    edges = np.append(edges, t1)
    st = session.spike_times
    s_idx = np.searchsorted(st, edges)
    f_idx = np.searchsorted(session.frame_times, edges) if session.frame_times is not None else None
    b_idx = {n: np.searchsorted(session.behavior[n].times, edges) for n in behavior}
    for i in range(edges.size - 1):
        end = float(edges[i + 1])
        if f_idx is not None and session.frames is not None:
            for j in range(f_idx[i], f_idx[i + 1]):
                yield end, "frame", (float(session.frame_times[j]), session.frames[j])  # type: ignore[index]
        for n, idx in b_idx.items():
            if idx[i + 1] > idx[i]:
                b = session.behavior[n]
                yield end, "behavior", (n, b.times[idx[i] : idx[i + 1]], b.values[idx[i] : idx[i + 1]])
        if s_idx[i + 1] > s_idx[i]:
            yield end, "spikes", (st[s_idx[i] : s_idx[i + 1]], session.spike_neurons[s_idx[i] : s_idx[i + 1]])
        yield end, "clock", (end,)


def send_paced(
    producer: Producer,
    messages: Iterator[Message],
    speed: float = 1.0,
    on_send: Callable[[float, str], None] | None = None,
) -> dict[str, float]:
    """Send `messages` at `speed` x real time (0 = as fast as possible); returns counts and the achieved pace."""
    start_wall = time.monotonic()
    first: float | None = None
    counts: dict[str, float] = {}
    last = 0.0
    for t, kind, args in messages:
        if first is None:
            first = t
        if speed > 0:
            due = start_wall + (t - first) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing a producer, not synchronising a test
        getattr(producer, kind)(*args)
        counts[kind] = counts.get(kind, 0) + 1
        last = t
        if on_send is not None:
            on_send(t, kind)
    elapsed = time.monotonic() - start_wall
    counts["data_seconds"] = last - (first or 0.0)
    counts["wall_seconds"] = elapsed
    counts["dropped"] = producer.dropped
    return counts
