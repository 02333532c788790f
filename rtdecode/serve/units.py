"""Acquisition unit IDs -> model neuron indices, the map the bundle's vocabulary defines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["UnitMap"]


class UnitMap:
    """Sorted lookup of a model's neuron IDs: one vectorised search per message, no per-spike Python."""

    def __init__(self, neuron_ids: Sequence[int] | np.ndarray) -> None:
        ids = np.asarray(neuron_ids, np.int64)
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def indices(self, units: np.ndarray) -> np.ndarray:
        """(n,) int32 model indices of `units`; unknown IDs become -1 (counted as bad_neuron by the window)."""
        pos = np.minimum(np.searchsorted(self._sorted, units), self._sorted.size - 1)
        known = self._sorted[pos] == units
        return np.where(known, self._order[pos], -1).astype(np.int32)
