"""Every figure of the report (and of `rtdecode connectivity`), drawn with matplotlib's Agg backend
so no display is needed. Each function takes plain arrays and a path, and writes one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["decoding_figure", "generation_figure", "connectivity_figure", "embedding_figure", "stimulus_figure"]

_COLORS = {
    "true": "k",
    "model": "C0",
    "ridge": "C1",
    "mlp": "C2",
    "shuffle": "0.6",
    "generated": "C0",
    "poisson": "C1",
    "glm": "C2",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def decoding_figure(
    t: np.ndarray, traces: dict[str, dict[str, np.ndarray]], scores: dict[str, dict[str, dict[str, float]]], path: Path
) -> None:
    """One row per variable: true vs decoded traces over held-out time, and Pearson r per method."""
    plt = _plt()
    names = list(traces)
    fig, axes = plt.subplots(
        len(names), 2, figsize=(13, 2.6 * len(names)), squeeze=False, gridspec_kw={"width_ratios": [4, 1]}
    )
    for row, name in enumerate(names):
        ax = axes[row][0]
        for method, y in traces[name].items():
            ax.plot(
                t,
                y,
                color=_COLORS.get(method),
                lw=1.6 if method == "true" else 1.0,
                alpha=1.0 if method in ("true", "model") else 0.8,
                label=method,
            )
        ax.set_ylabel(name)
        ax.legend(fontsize=7, ncol=len(traces[name]), loc="upper right")
        bar = axes[row][1]
        methods = list(scores[name])
        bar.bar(methods, [scores[name][m]["r"] for m in methods], color=[_COLORS.get(m, "C3") for m in methods])
        bar.set_ylim(min(0.0, *(scores[name][m]["r"] for m in methods)), 1.0)
        bar.set_ylabel("Pearson r")
        bar.tick_params(axis="x", labelsize=7)
    axes[-1][0].set_xlabel("held-out time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def generation_figure(
    rasters: dict[str, tuple[np.ndarray, np.ndarray]],
    order: np.ndarray,
    rate_t: np.ndarray,
    rates: dict[str, np.ndarray],
    per_neuron: dict[str, np.ndarray],
    path: Path,
) -> None:
    """Rasters (true / generated / Poisson), population rate over held-out time, per-neuron rates vs true."""
    plt = _plt()
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    fig = plt.figure(figsize=(13, 8))
    grid = fig.add_gridspec(2, len(rasters), height_ratios=[3, 2])
    for col, (name, (times, neurons)) in enumerate(rasters.items()):
        ax = fig.add_subplot(grid[0, col])
        ax.scatter(times, rank[neurons], s=1.5, c=_COLORS.get(name, "k"), marker="|", linewidths=0.6)
        ax.set_title(name)
        ax.set_xlabel("time (s)")
        ax.set_ylim(-1, order.size)
        if col == 0:
            ax.set_ylabel("neuron (sorted by community)")
    ax = fig.add_subplot(grid[1, : max(1, len(rasters) - 1)])
    for name, r in rates.items():
        ax.plot(rate_t, r, color=_COLORS.get(name), lw=1.0, label=name)
    ax.set_xlabel("held-out time (s)")
    ax.set_ylabel("population rate (spikes/s)")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, -1])
    true = per_neuron["true"]
    for name, r in per_neuron.items():
        if name != "true":
            ax.scatter(true, r, s=4, color=_COLORS.get(name), alpha=0.6, label=name)
    hi = max(float(np.max([v.max() for v in per_neuron.values()])), 1e-9)
    ax.plot([0, hi], [0, hi], "k:", lw=0.8)
    ax.set_xlabel("true rate (Hz)")
    ax.set_ylabel("rate (Hz)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def connectivity_figure(w: np.ndarray, candidates: dict[str, np.ndarray], path: Path) -> None:
    """True W beside each inferred matrix (target x source; diagonal blanked; colour range 1st-99.5th percentile)."""
    plt = _plt()
    panels = {"true W (target x source)": w, **candidates}
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, m) in zip(axes.flat, panels.items()):
        m = np.where(np.eye(m.shape[0], dtype=bool), 0, m)
        ax.imshow(m, cmap="magma", vmin=np.percentile(m, 1), vmax=np.percentile(m, 99.5), interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("source neuron")
        ax.set_ylabel("target neuron")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def embedding_figure(projection: np.ndarray, speed: np.ndarray, path: Path) -> None:
    """3-D projection of per-window latents, coloured by running speed."""
    plt = _plt()
    fig = plt.figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot(projection="3d")
    sc = ax.scatter(projection[:, 0], projection[:, 1], projection[:, 2], c=speed, cmap="viridis", s=3)
    fig.colorbar(sc, ax=ax, shrink=0.6, label="speed")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_zlabel("PC 3")
    ax.set_box_aspect(None, zoom=0.85)  # keeps the z label inside the figure
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def stimulus_figure(truth: np.ndarray, attention: np.ndarray, sta: np.ndarray, neurons: np.ndarray, path: Path) -> None:
    """One row per neuron: true receptive-field energy, stimulus attention, spike-triggered average (patch grid)."""
    plt = _plt()
    rows = max(1, len(neurons))
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 1.6 * rows + 0.4), squeeze=False)
    for r, n in enumerate(neurons):
        for c, (img, title) in enumerate(
            ((truth[r], "true field"), (attention[r], "grad-weighted attention"), (sta[r], "STA"))
        ):
            ax = axes[r][c]
            ax.imshow(img, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
        axes[r][0].set_ylabel(f"neuron {int(n)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
