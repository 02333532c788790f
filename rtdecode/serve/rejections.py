"""What the daemon drops from messages it accepted, by reason: counted, logged (rate-limited) and taken out.

docs/protocol.md, "Parts of messages", lists these reasons; whole-message rejections are the protocol's
(`ProtocolError`). Kept apart from the engine so the engine reads as the path of a message, and every rule for
what is dropped, and how it is reported, sits in one place.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from rtdecode.data.window import RollingWindow

__all__ = ["count_window_rejections", "usable_samples"]

Warn = Callable[[str, str], None]

# what the rolling window drops, by reason, as the log names it
WINDOW_REJECTIONS = {
    "late": "late spike(s) (older than the open window)",
    "bad_neuron": "spike(s) with an unknown neuron",
    "bad_time": "spike(s) or watermark(s) with an unusable time",
    "late_clock": "watermark(s) older than the open window",
}


def count_window_rejections(window: RollingWindow, counters: collections.Counter[str], warn: Warn) -> None:
    """Move the spikes and watermarks `window` dropped into `counters`, and log them."""
    c = window.counters
    for reason, what in WINDOW_REJECTIONS.items():
        n = getattr(c, reason)
        if n:
            setattr(c, reason, 0)
            counters[reason] += n
            warn(reason, f"{n} {what} dropped (open window starts at {window.open_start:.6f} s)")


def usable_samples(
    name: str, times: np.ndarray, values: np.ndarray, counters: collections.Counter[str], warn: Warn
) -> tuple[np.ndarray, np.ndarray]:
    """Behavior samples without a non-finite time (`bad_time`) or value (`bad_value`): a NaN must never reach
    the model, and a NaN time has no place in time order."""
    usable = np.isfinite(times) & np.isfinite(values)
    if usable.all():
        return times, values
    for reason, bad in (("bad_time", ~np.isfinite(times)), ("bad_value", np.isfinite(times) & ~usable)):
        if bad.any():
            counters[reason] += int(bad.sum())
            warn(reason, f"{int(bad.sum())} '{name}' sample(s) with a non-finite {reason[4:]} dropped")
    return times[usable], values[usable]
