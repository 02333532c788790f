"""The latency figure of `rtdecode bench serve` (and of the report's latency section), drawn with matplotlib's Agg
backend so no display is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["latency_histogram"]


def latency_histogram(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Log-binned histogram of end-to-end latency per run with p50/p99/p99.9 marked (runs: name -> {raw_ms, latency_ms})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.2), squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        lat = np.array(run["raw_ms"])
        if lat.size:
            ax.hist(lat, bins=np.logspace(np.log10(max(lat.min(), 1e-2)), np.log10(lat.max() + 1e-9), 60))
            ax.set_xscale("log")
            for q, style in (("p50", "-"), ("p99", "--"), ("p99.9", ":")):
                ax.axvline(run["latency_ms"][q], color="k", linestyle=style, label=f"{q} {run['latency_ms'][q]:.2f} ms")
            ax.legend(fontsize=8)
        ax.set_title(f"{name.replace('_', ' ')}: {lat.size} windows")
        ax.set_xlabel("end-to-end latency (ms)")
    axes[0][0].set_ylabel("windows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
