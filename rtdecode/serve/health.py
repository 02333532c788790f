"""Is the daemon keeping up with its data? Two watches the daemon reports in `status` and the log.

* `BudgetWatch`: the share of spikes the bundle's token budget cuts from live windows. A rig with more units or
  higher rates than the training data overflows the budget the model was trained with; the cut spikes never
  reach the model, so the operator must be told (flag + log), not left with a silently worse decoder.
* `RateLimitedLog`: one warning per reason per interval, so a hostile or broken producer cannot flood the log.
* `OverloadWatch`: whether decoding keeps pace with real time. When it does not (a model too large for the
  machine, a burst, a stall), the daemon decodes only the newest closed window and skips the rest; the watch
  says so from the first skipped window or missed deadline until `HOLD_S` of data have passed without one.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

__all__ = ["BudgetWatch", "OverloadWatch", "RateLimitedLog"]

RECENT_WINDOWS = 1000  # BudgetWatch's "recent" span
FLAG_FRACTION = 0.01  # a recent truncated-spike share above this flags the stream as over budget
HOLD_S = 2.0  # OverloadWatch stays "overloaded" this long after the last skipped window or missed deadline


class BudgetWatch:
    """Truncated spikes of decoded windows, in total and over the last RECENT_WINDOWS windows.

    Args:
        max_spikes: spike slots of a current window in the bundle (block_size - 2).
        max_history: history slots (prev_block_size).
    """

    def __init__(self, max_spikes: int, max_history: int) -> None:
        self.max_spikes, self.max_history = max_spikes, max_history
        self._recent: collections.deque[tuple[int, int]] = collections.deque(maxlen=RECENT_WINDOWS)
        self._recent_spikes = self._recent_cut = 0
        self.spikes = self.truncated = self.history_spikes = self.history_truncated = 0

    def add(self, n_spikes: int, n_history: int) -> int:
        """Account one decoded window (its spikes and history spikes before truncation); returns spikes cut."""
        cut = max(0, n_spikes - self.max_spikes)
        self.spikes += n_spikes
        self.truncated += cut
        self.history_spikes += n_history
        self.history_truncated += max(0, n_history - self.max_history)
        if len(self._recent) == self._recent.maxlen:
            old_n, old_cut = self._recent[0]
            self._recent_spikes -= old_n
            self._recent_cut -= old_cut
        self._recent.append((n_spikes, cut))
        self._recent_spikes += n_spikes
        self._recent_cut += cut
        return cut

    @property
    def recent_fraction(self) -> float:
        return self._recent_cut / max(self._recent_spikes, 1)

    @property
    def over_budget(self) -> bool:
        """More than FLAG_FRACTION of the recent windows' spikes were cut."""
        return self.recent_fraction > FLAG_FRACTION

    def status(self) -> dict[str, Any]:
        return {
            "spikes": self.spikes,
            "spikes_truncated": self.truncated,
            "fraction": self.truncated / max(self.spikes, 1),
            "fraction_recent": self.recent_fraction,
            "recent_windows": len(self._recent),
            "history_spikes_truncated": self.history_truncated,
            "history_fraction": self.history_truncated / max(self.history_spikes, 1),
            "over_budget": self.over_budget,
            "budget_spikes": self.max_spikes,
            "budget_history": self.max_history,
        }

    def message(self) -> str:
        return (
            f"the live stream overflows the model's token budget: {self.recent_fraction:.1%} of the spikes of the "
            f"last {len(self._recent)} windows were cut (budget {self.max_spikes} spikes per window, "
            f"{self.max_history} history spikes). The rig has more units or higher rates than the training "
            "data: retrain on a recording from this rig (budgets are derived from the data)"
        )


class OverloadWatch:
    """Overloaded from a skipped window or a missed deadline until HOLD_S (wall clock) pass without either."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self._last_bad = float("-inf")
        self.episodes = 0

    def record(self, skipped: int, late: bool, now: float | None = None) -> bool:
        """Account one decode; returns True when this decode starts an overload episode."""
        now = time.monotonic() if now is None else now
        if not (skipped or late):
            return False
        starts = not self.overloaded(now)
        self._last_bad = now
        self.episodes += int(starts)
        return starts

    def overloaded(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self._last_bad < self.hold_s


class RateLimitedLog:
    """Warnings at most once per `interval` seconds per reason (the counters still count every event)."""

    def __init__(self, log: logging.Logger, interval: float = 1.0) -> None:
        self.log, self.interval = log, interval
        self._last: dict[str, float] = {}

    def warn(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= self.interval:
            self._last[reason] = now
            self.log.warning("%s: %s", reason, message)
