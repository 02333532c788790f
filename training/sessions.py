"""Multi-session training: one model, a shared backbone and heads, each session's units its own.

`train_sessions` joins the sessions (`rtdecode.data.joined`), trains on all of them at once (the sampler deals
every session's training windows in one run), and then

* scores the model on each session's own test windows (`checkpoint.json` -> "sessions": per session its name,
  units, windows and test metrics);
* writes each session as an ordinary single-session run, `<out>/sessions/<name>/`: the joined run's weights with
  the unit tables cut to that session's rows (and its own unit IDs in the vocabulary). Those runs export, serve,
  evaluate and adapt like any run trained on one session: a bundle serves one session's units.

The joined run itself numbers units 0..N-1 across sessions (unit IDs repeat between days), so it is not exported
or served (export refuses it), and `rtdecode adapt` maps units by ID only from a per-session run; adapting from
the joined run without a map starts new units from the mean of every session's units.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from rtdecode.core.config import RunConfig
from rtdecode.core.window_data import WindowData, context_reach, make_split
from rtdecode.data.joined import SessionPart, join_sessions, session_parts, windows_of_part
from rtdecode.data.session import Session
from rtdecode.data.vocab import Vocab
from rtdecode.io import load_session
from rtdecode.io.atomic import atomic_path, atomic_write
from rtdecode.training.adapt import adapted_weights
from rtdecode.training.checkpoint import LoadedRun, read_meta
from rtdecode.training.evaluate import evaluate
from rtdecode.training.train import TrainResult, train

__all__ = ["join_for_training", "session_names", "train_sessions", "write_session_runs"]


def session_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """A unique, file-system-safe name per session: its file name without the suffix (day0.npz -> day0), with
    -2, -3 ... appended when two are alike."""
    names: list[str] = []
    for p in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p).name.split(".")[0]) or "session"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def join_for_training(cfg: RunConfig, sessions: Sequence[Session], names: Sequence[str]) -> Session:
    """The sessions joined with a gap of twice what a window and its context reach (and at least 1 s)."""
    gap = max(1.0, 2.0 * (cfg.window.window + context_reach(cfg)))
    return join_sessions(sessions, names, gap)


def train_sessions(
    cfg: RunConfig,
    data: Sequence[str | os.PathLike[str] | Session],
    out: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    **train_options: Any,
) -> TrainResult:
    """Train one model on several sessions (module docstring); `train_options` go to `train` (device, progress,
    resume, allow_truncation...). Returns the joined run's result; per-session runs are in <out>/sessions/."""
    if len(data) < 2:
        raise ValueError(f"multi-session training needs at least 2 sessions; got {len(data)} (use `train`)")
    if names is None:
        names = session_names([d if not isinstance(d, Session) else f"session{i}" for i, d in enumerate(data)])
    sessions = [d if isinstance(d, Session) else load_session(d) for d in data]
    joined = join_for_training(cfg, sessions, names)
    parts = session_parts(joined)
    assert parts is not None
    log(
        f"{len(parts)} sessions joined: "
        + ", ".join(f"{p.name} ({p.n_units} units, {p.stop - p.start:.0f} s)" for p in parts)
        + f"; {joined.n_neurons} unit rows in all"
    )
    result = train(cfg, joined, out, log=log, **train_options)
    per_session = score_sessions(Path(out), joined, parts)
    meta = read_meta(Path(out))
    meta["sessions"] = per_session
    with atomic_write(Path(out) / "checkpoint.json") as f:
        f.write(json.dumps(meta, indent=2).encode())
    for s in per_session:
        test = s["test"]
        scores = ", ".join(f"{k} {v:.3f}" for k, v in test.items() if k.endswith("_r") and np.isfinite(v))
        log(f"  {s['name']}: {s['test_windows']} test windows; {scores or 'no behavior targets'}")
    write_session_runs(Path(out))
    log(f"per-session runs (export, serve, evaluate, adapt from these): {Path(out) / 'sessions'}/<name>")
    return result


def score_sessions(run_dir: Path, joined: Session, parts: Sequence[SessionPart]) -> list[dict[str, Any]]:
    """Test metrics of the joined run's final weights on each session's own test windows."""
    run = LoadedRun(run_dir)
    data = WindowData(joined, run.config)
    split = make_split(data, run.config)
    starts = data.tokens.window_starts()
    out = []
    for part in parts:
        mine = windows_of_part(starts, run.config.window.window, part)
        test = np.intersect1d(split.test, mine)
        out.append(
            {
                **part.to_dict(),
                "train_windows": int(np.intersect1d(split.train, mine).size),
                "test_windows": int(test.size),
                "test": evaluate(run.model, data, test, run.norm) if test.size else {},
            }
        )
    return out


def write_session_runs(run_dir: Path) -> list[Path]:
    """<run_dir>/sessions/<name>/ for each session of a multi-session run: its checkpoint.json (the session's own
    vocabulary and test metrics) and every weights file of the run with the unit tables cut to its rows."""
    meta = read_meta(run_dir)
    joint = Vocab.from_json(json.dumps(meta["vocab"]))
    cfg = RunConfig.from_saved(meta["config"])
    weights = sorted(run_dir.glob("*.safetensors"))
    weights = [w for w in weights if not w.name.startswith("train_state")]
    written = []
    for entry in meta["sessions"]:
        part = SessionPart.from_dict({k: entry[k] for k in SessionPart.__dataclass_fields__})
        vocab = Vocab.for_config(cfg.window, part.n_units, np.array(part.unit_ids, np.int64))
        rows = part.first_unit + np.arange(part.n_units)
        folder = run_dir / "sessions" / part.name
        folder.mkdir(parents=True, exist_ok=True)
        for w in weights:
            state = adapted_weights(load_file(str(w)), joint, vocab, rows)
            with atomic_path(folder / w.name) as tmp:
                save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=_metadata(w))
        session_meta = {
            **{k: v for k, v in meta.items() if k not in ("sessions", "baseline")},  # the baseline is the joint one
            "vocab": json.loads(vocab.to_json()),
            "test": entry["test"],
            "multi_session": {"run": str(run_dir), "session": part.name, "first_unit": part.first_unit},
        }
        with atomic_write(folder / "checkpoint.json") as f:
            f.write(json.dumps(session_meta, indent=2).encode())
        written.append(folder)
    return written


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
