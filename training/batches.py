"""Which windows go into each training batch: similar token counts together, so trimmed batches carry little
padding, in an order that a resumed run can reproduce from a few integers."""

from __future__ import annotations

import numpy as np

__all__ = ["LengthGroupedBatches"]


class LengthGroupedBatches:
    """Batches of similar token counts, reproducible from (seed, epoch, cursor) alone.

    Each epoch: shuffle the windows, take pools of `pool` batches, sort each pool by spike count, cut it into
    batches, shuffle the batches. Trimmed batches then carry little padding, so a step costs what its spikes cost.
    The epoch's order comes from a generator seeded by (seed, epoch), so the whole sampler state is two integers
    and a resumed run draws exactly the batches the uninterrupted run would have.
    """

    def __init__(self, windows: np.ndarray, counts: np.ndarray, batch_size: int, seed: int, pool: int = 16) -> None:
        """windows: indices to draw from; counts: spikes of every window of the session (indexed by window)."""
        if windows.size < batch_size:
            raise ValueError(f"fewer training windows ({windows.size}) than one batch ({batch_size})")
        self.windows, self.lengths = windows, counts[windows]
        self.batch_size, self.seed, self.pool = batch_size, seed, pool
        self.epoch, self.cursor = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.windows.size)
        n = self.batch_size * self.pool
        batches: list[np.ndarray] = []
        for lo in range(0, order.size - self.batch_size + 1, n):
            chunk = order[lo : lo + n]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]  # positions into self.windows
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, chunk.size - self.batch_size + 1, self.batch_size)
            ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def next(self) -> np.ndarray:
        if self.cursor >= len(self._batches):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._batches = self._epoch_batches(self.epoch)
        batch = self._batches[self.cursor]
        self.cursor += 1
        return self.windows[batch]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._batches = self._epoch_batches(self.epoch)
