"""Training-window statistics that serving must reuse, so a live window is scaled exactly as training scaled it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Normalisation"]


@dataclass(frozen=True)
class Normalisation:
    """Statistics of the training windows, stored in checkpoints and bundles so serving scales identically.

    behavior: name -> (mean, std) of the per-window values (targets are z-scored with them).
    frames: (mean, std) of pixel values / 255.
    """

    behavior: dict[str, tuple[float, float]]
    frames: tuple[float, float] = (0.5, 0.25)

    def to_dict(self) -> dict[str, Any]:
        return {"behavior": {k: list(v) for k, v in self.behavior.items()}, "frames": list(self.frames)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalisation:
        frames = (float(d["frames"][0]), float(d["frames"][1]))
        return cls({k: (float(v[0]), float(v[1])) for k, v in d["behavior"].items()}, frames)
