"""The recorded session beside the live decodes (`rtdecode monitor --session`).

When a session is replayed into the daemon, the operator wants to see what the model should have said. The
recorded value of a variable for a decoded window is the value training used as that window's target
(`rtdecode.core.window_data.WindowData`: `rtdecode.data.alignment.behavior_per_window`, here run on the samples
around the window only, so equal to training's within rounding): the mean of the recorded samples in
[t_start, t_end), or, when no sample falls inside, the linear interpolation at the window's centre (NaN, sent as
null, outside the sampled span or next to a gap). For a circular target (an angle in radians) it is, as in
training, the circular mean: the angle (`rtdecode.core.metrics.angle_of`, in (-pi, pi]) of the mean cosine and
mean sine, so a window whose samples straddle +-pi records ~pi, not ~0. Which targets are circular is known from
the daemon's description; before one has arrived (or with `--input ''`), every value is an arithmetic mean.
It is the raw value in the session's units: for a classification target the page turns it into the class index
with the bin edges the daemon's description gives, as training does (`np.digitize`).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.core.metrics import angle_of
from rtdecode.data.alignment import behavior_per_window
from rtdecode.data.session import Session

__all__ = ["Recorded"]

MAX_RASTER_SPIKES = 50_000  # per request: a page asks for a few seconds; this bounds a careless query


class Recorded:
    """Recorded behavior and spikes of `session`, looked up by session time.

    Args:
        session: the session being replayed into the daemon (same clock as its decodes).
        source: where it was loaded from, for the page's legend.
    """

    def __init__(self, session: Session, source: str | Path = "") -> None:
        self.session = session
        self.source = str(source)

    def values(
        self, names: list[str], t_start: float, t_end: float, circular: Collection[str] = ()
    ) -> dict[str, float | None]:
        """The recorded value of each of `names` the session has, for the window [t_start, t_end) s; those in
        `circular` are angles in radians, averaged on the circle as training does."""
        out: dict[str, float | None] = {}
        lo, hi = np.array([t_start]), np.array([t_end])
        for name in names:
            b = self.session.behavior.get(name)
            if b is None:
                continue
            # only the samples around the window: the mean needs those inside, the interpolation its neighbours
            i, j = np.searchsorted(b.times, [t_start, t_end], side="left")
            near = slice(max(int(i) - 2, 0), int(j) + 2)
            t, x = b.times[near], b.values[near]
            if name in circular:  # as WindowData computes a circular target: no seam at +-pi
                cos, sin = (behavior_per_window(t, f(x), lo, hi) for f in (np.cos, np.sin))
                v = float(angle_of(cos, sin)[0])
            else:
                v = float(behavior_per_window(t, x, lo, hi)[0])
            out[name] = v if np.isfinite(v) else None
        return out

    def spikes(self, t0: float, t1: float, limit: int = MAX_RASTER_SPIKES) -> dict[str, Any]:
        """Recorded spikes in [t0, t1) s: `times` (s), `neurons` (model indices), at most `limit` of them (the
        earliest; `cut` says whether any were left out)."""
        st = self.session.spike_times
        lo, hi = np.searchsorted(st, [t0, t1], side="left")
        cut = hi - lo > limit
        hi = min(hi, lo + limit)
        return {
            "t0": t0,
            "t1": t1,
            "times": st[lo:hi].tolist(),
            "neurons": self.session.spike_neurons[lo:hi].tolist(),
            "cut": bool(cut),
        }

    def summary(self) -> dict[str, Any]:
        """What the page says about the session: source, neurons, span, behavior variables."""
        s = self.session
        return {
            "source": Path(self.source).name if self.source else "",
            "n_neurons": int(s.n_neurons),
            "start": float(s.start),
            "stop": float(s.stop),
            "behavior": sorted(s.behavior),
        }
