"""What a person wants to know about a session before training on it, as plain numbers (the CLI renders them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rtdecode.data.budget import budget_report
from rtdecode.data.session import Session
from rtdecode.data.tokenizer import WindowConfig, tokenize_session

__all__ = ["session_summary"]


def session_summary(session: Session, config: WindowConfig | None = None) -> dict[str, Any]:
    """Counts, rates, modalities and what tokenization with `config` (default: the release's) would give; token
    budgets it leaves at 0 are derived from the whole session as training would (`rtdecode.data.budget`)."""
    config = config or WindowConfig()
    rates = session.firing_rates()
    out: dict[str, Any] = {
        "neurons": session.n_neurons,
        "duration_s": session.duration,
        "start_s": session.start,
        "stop_s": session.stop,
        "spikes": session.n_spikes,
        "rate_mean_hz": float(rates.mean()),
        "rate_median_hz": float(np.median(rates)),
        "rate_max_hz": float(rates.max()),
        "silent_neurons": int((rates == 0).sum()),
        "modalities": session.modalities(),
        "trials": 0 if session.trials is None else int(session.trials.shape[0]),
        "truth": sorted(session.truth),
    }
    if session.frames is not None and session.frame_times is not None:
        ft = session.frame_times
        out["frames"] = {
            "count": int(ft.size),
            "shape": list(session.frames.shape[1:]),
            "dtype": str(session.frames.dtype),
            "rate_hz": float((ft.size - 1) / (ft[-1] - ft[0])) if ft.size > 1 else 0.0,
        }
    out["behavior"] = {
        name: {
            "samples": int(b.times.size),
            "rate_hz": float((b.times.size - 1) / (b.times[-1] - b.times[0])) if b.times.size > 1 else 0.0,
            "min": float(np.nanmin(b.values)) if b.values.size else float("nan"),
            "max": float(np.nanmax(b.values)) if b.values.size else float("nan"),
            "missing": int(np.isnan(b.values).sum()),
            "unit": b.unit,
        }
        for name, b in session.behavior.items()
    }
    tokens = tokenize_session(
        session.spike_times, session.spike_neurons, session.n_neurons, session.start, session.stop, config
    )
    counts = tokens.window_counts
    budget = budget_report(tokens, np.arange(tokens.n_windows), config)  # budgets left at 0 are derived
    out["tokens"] = {
        "window_s": config.window,
        "windows": tokens.n_windows,
        "spikes_per_window_mean": float(counts.mean()) if counts.size else 0.0,
        "spikes_per_window_p99": float(np.percentile(counts, 99)) if counts.size else 0.0,
        "block_size": budget.window.block_size,
        "block_size_derived": "block_size" in budget.derived,
        "windows_truncated": budget.windows_truncated,
        "spikes_truncated": budget.spikes_truncated,
    }
    return out
