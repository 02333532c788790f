"""Token budgets: the slots a window's spikes and its history get, derived from data, and what a budget drops.

A budget that is too small drops spikes silently (the tokenizer keeps the earliest spikes of a current window and
the most recent of a history); one that is too large only costs memory, since batches and live windows are cut to
the spikes actually present (`rtdecode.data.tokenizer.token_inputs`). So by default (`block_size = 0`,
`prev_block_size = 0` in a config) the budgets are derived from the training windows: the smallest friendly size
(64, 96, 128, 192, 256, ...) that keeps at least `KEEP_WINDOWS` of windows whole and drops at most `MAX_DROPPED`
of spikes.
`rtdecode train` refuses an explicit budget that drops more than `MAX_DROPPED` unless told to allow it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtdecode.data.tokenizer import TokenizedSession, WindowConfig

__all__ = [
    "KEEP_WINDOWS",
    "MAX_DROPPED",
    "MULTIPLE",
    "BudgetReport",
    "TruncationError",
    "budget_report",
    "needed_slots",
]

KEEP_WINDOWS = 0.999  # share of windows a derived budget keeps whole
MAX_DROPPED = 0.001  # share of spikes a budget may drop before training refuses it
MULTIPLE = 64  # the smallest derived budget; larger ones are friendly sizes above it (`_round_up`)


class TruncationError(ValueError):
    """A token budget would drop more spikes than `MAX_DROPPED` allows."""


def needed_slots(counts: np.ndarray, reserved: int = 0) -> int:
    """Smallest friendly number of slots (`reserved` of them for SOS/EOS) that keeps >= KEEP_WINDOWS of windows
    with these spike `counts` whole and drops <= MAX_DROPPED of their spikes."""
    counts = np.sort(np.asarray(counts, np.int64))
    if counts.size == 0:
        return MULTIPLE
    need = int(counts[min(counts.size - 1, int(np.ceil(KEEP_WINDOWS * counts.size)) - 1)])
    slots = _round_up(need + reserved)
    total = max(int(counts.sum()), 1)
    while np.maximum(counts - (slots - reserved), 0).sum() > MAX_DROPPED * total:
        slots = _round_up(slots + 1)
    return slots


def _round_up(n: int) -> int:
    """The smallest friendly size >= n: 64, 96, 128, 192, 256, 384, ... (64 x 2^k or 96 x 2^k). The headroom
    (< 50%) costs cache memory only, since work follows the spikes present; it keeps a live stream like the
    training data inside the budget, where a size just above the 99.9th percentile would cut a window or two in
    every thousand."""
    size = MULTIPLE
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


@dataclass(frozen=True)
class BudgetReport:
    """A window config with concrete budgets and what they drop on the windows they were judged on.

    Attributes:
        window: the config, budgets resolved.
        derived: which budgets were derived from the data ("block_size", "prev_block_size").
        windows: windows judged.
        spikes, spikes_truncated, windows_truncated: current-window spikes, those dropped, windows that overflowed.
        history_spikes, history_truncated, histories_truncated: the same for the histories.
        p999_spikes, p999_history: spikes of the 99.9th-percentile window and history.
    """

    window: WindowConfig
    derived: tuple[str, ...]
    windows: int
    spikes: int
    spikes_truncated: int
    windows_truncated: int
    history_spikes: int
    history_truncated: int
    histories_truncated: int
    p999_spikes: int
    p999_history: int

    @property
    def dropped_fraction(self) -> float:
        """Share of current-window spikes the budget drops."""
        return self.spikes_truncated / max(self.spikes, 1)

    @property
    def history_dropped_fraction(self) -> float:
        return self.history_truncated / max(self.history_spikes, 1)

    def describe(self) -> str:
        w = self.window

        def how(name: str) -> str:
            return "derived from the data" if name in self.derived else "from the config"

        return (
            f"token budget: {w.block_size} slots per window ({how('block_size')}; 99.9% of windows hold <= "
            f"{self.p999_spikes} spikes), {self.windows_truncated} of {self.windows} windows truncated, "
            f"{self.spikes_truncated:,} of {self.spikes:,} spikes dropped ({self.dropped_fraction:.3%}); "
            f"{w.prev_block_size} history slots ({how('prev_block_size')}; p99.9 {self.p999_history}), "
            f"{self.history_truncated:,} of {self.history_spikes:,} history spikes dropped "
            f"({self.history_dropped_fraction:.3%})"
        )

    def check(self, allow_truncation: bool) -> None:
        """Raise TruncationError when the budget drops more than MAX_DROPPED of either kind of spike."""
        if allow_truncation:
            return
        for what, frac, key in (
            ("current-window", self.dropped_fraction, "block_size"),
            ("history", self.history_dropped_fraction, "prev_block_size"),
        ):
            if frac > MAX_DROPPED:
                raise TruncationError(
                    f"the token budget drops {frac:.2%} of {what} spikes (more than {MAX_DROPPED:.1%}): {self.describe()}. "
                    f"Set [window] {key} = 0 to derive it from the data (or a larger value), or pass "
                    "--allow-truncation to train on truncated windows anyway"
                )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["window"] = self.window.to_dict()
        d["derived"] = list(self.derived)
        return d


def budget_report(tokens: TokenizedSession, windows: np.ndarray, window: WindowConfig) -> BudgetReport:
    """Resolve `window`'s derived budgets (0 = derive) from `windows` (indices into `tokens`) and report what the
    budgets drop there. `tokens` may have been made with any budgets: its pointers hold every spike."""
    w = np.asarray(windows, np.int64)
    counts = tokens.window_counts[w]
    hist = (tokens.window_ptr[:-1] - tokens.history_ptr)[w]
    derived = tuple(name for name in ("block_size", "prev_block_size") if getattr(window, name) == 0)
    sizes = {"block_size": needed_slots(counts, reserved=2), "prev_block_size": needed_slots(hist)}
    resolved = dataclasses.replace(
        window,
        block_size=sizes["block_size"] if "block_size" in derived else window.block_size,
        prev_block_size=sizes["prev_block_size"] if "prev_block_size" in derived else window.prev_block_size,
    )
    over = np.maximum(counts - resolved.max_spikes, 0)
    hover = np.maximum(hist - resolved.prev_block_size, 0)

    def p999(x: np.ndarray) -> int:
        return int(np.quantile(x, KEEP_WINDOWS, method="higher")) if x.size else 0

    return BudgetReport(
        window=resolved,
        derived=derived,
        windows=int(w.size),
        spikes=int(counts.sum()),
        spikes_truncated=int(over.sum()),
        windows_truncated=int((over > 0).sum()),
        history_spikes=int(hist.sum()),
        history_truncated=int(hover.sum()),
        histories_truncated=int((hover > 0).sum()),
        p999_spikes=p999(counts),
        p999_history=p999(hist),
    )
