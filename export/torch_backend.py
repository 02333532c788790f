"""The PyTorch model behind a bundle, behind the runtime's `Backend` interface: for debugging a bundle against its
source run (which graph differs, and where). Imports torch, so it lives with export, never on the serve path.
"""

from __future__ import annotations

import numpy as np

from rtdecode.export.graphs import ContextGraph, DecodeGraph, StepGraph, StreamGraph
from rtdecode.runtime.bundle import Bundle
from rtdecode.training.checkpoint import LoadedRun

__all__ = ["TorchBackend"]


class TorchBackend:
    """The source PyTorch run, through the same graph wrappers as export. Debugging only: imports torch."""

    def __init__(self, bundle: Bundle) -> None:
        import torch

        src = bundle.source
        run = LoadedRun(src["run"], weights=src["weights"])
        self.name = "torch"
        self._torch = torch
        self._modules = {
            "decode": DecodeGraph(run.model),
            "context": ContextGraph(run.model),
            "step": StepGraph(run.model),
            "stream": StreamGraph(run.model),
        }
        self.graphs = frozenset(self._modules)

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        g = self._modules[graph]
        args = [self._torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in g.spec.inputs]
        with self._torch.no_grad():
            return [o.numpy() for o in g(*args)]
