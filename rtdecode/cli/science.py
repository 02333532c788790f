"""CLI commands about the science: connectivity from attention, scored against ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rtdecode.cli import app, console, fail


@app.command()
def connectivity(
    from_run: Annotated[Path, typer.Option("--from", help="Run directory (a spikes-only model works best).", exists=True, file_okay=False)],
    data: Annotated[Path, typer.Option(help="Session with ground truth (truth/W, truth/hubs) from `rtdecode simulate`.", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Folder for connectivity.npz, scores.json and connectivity.png.")] = Path("connectivity-out"),
    windows: Annotated[int, typer.Option(help="Training windows whose attention is averaged.")] = 3000,
    bin_ms: Annotated[float, typer.Option(help="Bin of the correlation baselines, ms.")] = 10.0,
) -> None:
    """Directed connectivity from the model's causal self-attention, scored against the simulator's true W
    (AUROC/AUPRC of true edges, hub recovery, direction index) beside correlation and lagged-correlation baselines."""
    import numpy as np

    from rtdecode.connectivity import binned, correlation_baseline, lagged_correlation_baseline, score_matrix
    from rtdecode.io import load_session
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.connectivity import attention_connectivity
    from rtdecode.training.data import WindowData
    from rtdecode.training.train import make_split

    session = load_session(data)
    if "W" not in session.truth or "hubs" not in session.truth:
        fail(f"{data} has no ground truth (truth/W and truth/hubs): simulate one with `rtdecode simulate`")
    run = LoadedRun(from_run)
    wd = WindowData(session, run.config)
    train = make_split(wd, run.config).train
    pick = train[np.linspace(0, train.size - 1, min(windows, train.size)).astype(np.int64)]
    matrix, _ = attention_connectivity(run.model, wd, pick, run.norm)
    w, hubs = session.truth["W"], session.truth["hubs"]
    counts = binned(session.spike_times, session.spike_neurons, session.n_neurons, session.start, session.stop, bin_ms / 1e3)
    candidates = {"attention": matrix, "correlation": correlation_baseline(counts),
                  "lagged correlation": lagged_correlation_baseline(counts)}
    scores = {name: score_matrix(m, w, hubs) for name, m in candidates.items()}
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "connectivity.npz", **{k.replace(" ", "_"): v for k, v in candidates.items()}, W=w)
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    t = Table(title=f"connectivity vs ground truth ({pick.size} windows)", title_justify="left")
    for col in ("matrix", "AUROC", "AUPRC", "hubs found", "direction index"):
        t.add_column(col, justify="left" if col == "matrix" else "right")
    for name, s in scores.items():
        t.add_row(name, f"{s['auroc']:.3f}", f"{s['auprc']:.3f}", f"{s['hubs_found']}/{s['hubs_total']}", f"{s['direction_index']:.2f}")
    console.print(t)
    _figure(w, candidates, out / "connectivity.png")
    console.print(f"wrote {out / 'scores.json'}, {out / 'connectivity.npz'} and {out / 'connectivity.png'}")


def _figure(w, candidates, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = {"true W (target x source)": w, **candidates}
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    for ax, (name, m) in zip(axes, panels.items()):
        m = np.where(np.eye(m.shape[0], dtype=bool), 0, m)
        ax.imshow(m, cmap="magma", vmin=np.percentile(m, 1), vmax=np.percentile(m, 99.5), interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("source neuron")
        ax.set_ylabel("target neuron")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
