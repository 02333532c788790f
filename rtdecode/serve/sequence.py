"""Per-producer sequence accounting: which messages a producer lost, repeated or restarted (docs/protocol.md)."""

from __future__ import annotations

import collections
from collections.abc import Callable

__all__ = ["MAX_REJECTED_REMEMBERED", "MAX_SOURCES", "SequenceTracker"]

MAX_SOURCES = 256  # producers (`src`) whose sequence is tracked; the least recently seen is forgotten beyond this
MAX_REJECTED_REMEMBERED = 64  # per producer, rejected messages since its last accepted one not counted missing


class SequenceTracker:
    """The last `seq` of each producer, least recently seen first.

    seq = last + 1: normal. seq > last + 1: `seq_gap` (+ `seq_missing` messages the producer dropped or lost).
    seq == last: `seq_duplicate`, the message is dropped: it would count its spikes twice. seq < last: the
    producer restarted its counter (`seq_reset`); the message is used and its data judged by time as always.
    Messages without `src` cannot be told apart by producer, so they are not checked.

    Args:
        counters: where the outcomes are counted (the daemon's status counters).
        warn: rate-limited logger, called as warn(reason, message).
    """

    def __init__(self, counters: collections.Counter[str], warn: Callable[[str, str], None]) -> None:
        self.counters, self.warn = counters, warn
        self._last: dict[str, int] = {}
        self._rejected: dict[str, set[int]] = {}  # per producer, seqs after its last accepted one that were rejected

    def note_rejected(self, src: str | None, seq: int) -> None:
        """A message of this producer was received but rejected for its body: not lost, so not `seq_missing`.

        It does not become the producer's last `seq` (a corrupted copy must not make the real message a
        duplicate); the next accepted message just does not count it as missing. At most 64 are remembered
        between two accepted messages (`MAX_REJECTED_REMEMBERED`); more than that show up as missing."""
        if src is None or src not in self._last or seq <= self._last[src]:
            return
        rejected = self._rejected.setdefault(src, set())
        if len(rejected) < MAX_REJECTED_REMEMBERED:
            rejected.add(seq)

    def accept(self, src: str | None, seq: int) -> bool:
        """Account one message; False for a duplicate, which the caller drops."""
        if src is None:
            return True
        last = self._last.pop(src, None)
        if last is not None and seq == last:  # a repeat: dropped, and it changes nothing else
            self._last[src] = last
            self.counters["seq_duplicate"] += 1
            self.warn("seq_duplicate", f"producer {src!r} sent seq {seq} twice; the repeat is dropped")
            return False
        self._last[src] = seq  # re-inserted: most recently seen last
        rejected = self._rejected.pop(src, ())
        if len(self._last) > MAX_SOURCES:
            forgotten = next(iter(self._last))
            del self._last[forgotten]
            self._rejected.pop(forgotten, None)
            self.counters["seq_sources_forgotten"] += 1
        if last is None or seq == last + 1:
            return True
        if seq > last:
            missing = seq - last - 1 - sum(1 for r in rejected if last < r < seq)
            if missing:
                self.counters["seq_gap"] += 1
                self.counters["seq_missing"] += missing
                self.warn(
                    "seq_gap", f"producer {src!r} skipped {missing} message(s) before seq {seq} (lost or dropped)"
                )
        else:
            self.counters["seq_reset"] += 1
            self.warn("seq_reset", f"producer {src!r} restarted its sequence ({last} -> {seq})")
        return True

    def clear(self) -> None:
        """Forget every producer (a session reset)."""
        self._last.clear()
        self._rejected.clear()
