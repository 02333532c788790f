"""Windows -> model inputs and targets: tokens, frames and behavior per window, precomputed once, sliced per batch.

Everything per window is computed by the serve-side numpy code (`rtdecode.data.tokenizer`,
`rtdecode.data.alignment`), so a window looks the same to training, to evaluation and to the daemon. Building a
batch is a few vectorised gathers: no Python loop over spikes, neurons or windows, and no DataLoader workers.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

from rtdecode.core.config import RunConfig
from rtdecode.core.metrics import angle_of
from rtdecode.core.normalisation import Normalisation
from rtdecode.data.alignment import (
    behavior_input_samples,
    behavior_per_window,
    frame_stack_indices,
    frames_per_window,
    normalise_frames,
)
from rtdecode.data.joined import session_parts, split_parts
from rtdecode.data.session import Session
from rtdecode.data.splits import Split, split_blocks, split_trials, within_trials
from rtdecode.data.tokenizer import TokenizedSession, WindowConfig, token_inputs, tokenize_session

__all__ = ["WindowData", "context_reach", "evenly_spaced", "make_split"]


class WindowData:
    """Per-window model inputs and targets for one session.

    Args:
        session: the recording.
        cfg: run config (window, frames, behavior declarations).
        tokens: its tokenization with cfg.window (computed here if not given, e.g. from a token store).
    """

    def __init__(self, session: Session, cfg: RunConfig, tokens: TokenizedSession | None = None) -> None:
        self.cfg = cfg
        self.session = session
        self.tokens = tokens or tokenize_session(
            session.spike_times,
            session.spike_neurons,
            session.n_neurons,
            session.start,
            session.stop,
            cfg.window,
            session.neuron_ids,
        )
        if _without_budgets(
            dataclasses.replace(self.tokens.config, context_at=cfg.window.context_at)
        ) != _without_budgets(cfg.window):
            raise ValueError("the token store was made with a different window config than this run's")
        self.tokens = dataclasses.replace(self.tokens, config=cfg.window)  # budgets only say how to pack
        starts, ends = self.tokens.window_starts(), self.tokens.window_ends()
        context_at = cfg.window.context_time(starts, ends)  # what frames and behavior inputs are read up to
        self.n_windows = self.tokens.n_windows
        self.frame_index: np.ndarray | None = None
        if cfg.frames.enabled:
            if session.frames is None or session.frame_times is None:
                raise ValueError("the config enables frames but the session has none; set [frames] enabled = false")
            fr = cfg.frames
            if session.frames.shape[1:] != (fr.height, fr.width):
                raise ValueError(
                    f"session frames are {session.frames.shape[1]}x{session.frames.shape[2]} but the config expects "
                    f"{fr.height}x{fr.width}; set [frames] height/width to match"
                )
            _check_frame_rate(session.frame_times, cfg)
            self.frame_index = frame_stack_indices(session.frame_times, context_at, fr.n_frames)  # (W, F), -1 = none
        self.targets: dict[str, np.ndarray] = {}
        for spec in cfg.targets:
            b = self._behavior(spec.name)
            if spec.kind == "circular":  # the circular mean of the window's samples: no seam at +-pi
                cos, sin = (behavior_per_window(b.times, f(b.values), starts, ends) for f in (np.cos, np.sin))
                self.targets[spec.name] = angle_of(cos, sin)
            else:
                self.targets[spec.name] = behavior_per_window(b.times, b.values, starts, ends)
        self._context_at = context_at

    def with_budgets(self, cfg: RunConfig) -> WindowData:
        """This data under `cfg`, a config that differs from this one's at most in its token budgets (resolved by
        `rtdecode.data.budget.budget_report`); nothing is recomputed, the tokens keep every spike either way."""
        if _without_budgets(cfg.window) != _without_budgets(self.cfg.window):
            raise ValueError("with_budgets: the configs differ in more than their token budgets")
        out = copy.copy(self)
        out.cfg, out.tokens = cfg, dataclasses.replace(self.tokens, config=cfg.window)
        return out

    def _behavior(self, name: str) -> Any:
        if name not in self.session.behavior:
            raise ValueError(f"behavior '{name}' is not in the session (it has {sorted(self.session.behavior)})")
        return self.session.behavior[name]

    def normalisation(self, windows: np.ndarray) -> Normalisation:
        """Mean/std of every declared behavior variable and of the frames over `windows` (the training split).

        A circular target gets (0, 1): an angle is never z-scored (that would break its 2 pi period), so its
        batch values stay radians; (0, 1) keeps one entry per behavior variable, as bundles require."""
        stats: dict[str, tuple[float, float]] = {}
        for spec in self.cfg.behavior:
            if spec.kind == "circular":
                stats[spec.name] = (0.0, 1.0)
                continue
            if spec.name in self.targets:
                v = self.targets[spec.name][windows]
            else:
                b = self._behavior(spec.name)
                vals, _, valid = behavior_input_samples(
                    b.times, b.values, self._context_at[windows], spec.input_window, self.cfg.window.dt
                )
                v = vals[valid]
            v = v[np.isfinite(v)]
            if v.size < 2:
                raise ValueError(f"behavior '{spec.name}' has fewer than 2 valid values in the training windows")
            stats[spec.name] = (float(v.mean()), float(max(v.std(), 1e-6)))
        frames = (0.5, 0.25)
        if self.frame_index is not None and self.session.frames is not None:
            sample = self.frame_index[windows[:: max(1, windows.size // 500)]].ravel()
            px = self.session.frames[sample[sample >= 0]].astype(np.float32) / 255.0
            if px.size:
                frames = (float(px.mean()), float(max(px.std(), 1e-3)))
        return Normalisation(stats, frames)

    def batch(self, windows: np.ndarray, norm: Normalisation, trim: bool = True) -> dict[str, np.ndarray]:
        """Model inputs and targets of `windows` (indices into this session's windows) as numpy arrays.

        With `trim`, token arrays are cut to the longest window of the batch (the serving graphs use fixed
        sizes; `trim=False` gives those).
        """
        out = token_inputs(self.tokens.current(windows), self.tokens.history(windows), trim)
        if self.frame_index is not None and self.session.frames is not None:
            idx = self.frame_index[windows]  # (B, F)
            frames = normalise_frames(self.session.frames[np.maximum(idx, 0)], *norm.frames)
            frames[idx < 0] = 0.0  # no frame shown yet: the mean image
            out["frames"] = frames
        for spec in self.cfg.targets:
            mean, std = norm.behavior[spec.name] if spec.kind != "circular" else (0.0, 1.0)  # angles: radians
            raw = self.targets[spec.name][windows]
            out[f"y_{spec.name}"] = ((raw - mean) / std).astype(np.float32)  # NaN stays NaN: masked in the loss
            if spec.kind == "classification":
                cls = np.digitize(raw, spec.bins).astype(np.int64)
                cls[~np.isfinite(raw)] = -100  # ignored by cross-entropy
                out[f"c_{spec.name}"] = cls
        for spec in self.cfg.inputs:
            b = self._behavior(spec.name)
            vals, ages, valid = behavior_input_samples(
                b.times, b.values, self._context_at[windows], spec.input_window, self.cfg.window.dt
            )
            mean, std = norm.behavior[spec.name]
            out[f"in_{spec.name}"] = np.where(valid, (vals - mean) / std, 0.0).astype(np.float32)
            out[f"in_{spec.name}_age"] = ages
            out[f"in_{spec.name}_valid"] = valid
        return out


def _without_budgets(window: WindowConfig) -> WindowConfig:
    return dataclasses.replace(window, block_size=0, prev_block_size=0)


def _check_frame_rate(frame_times: np.ndarray, cfg: RunConfig) -> None:
    """The model takes the last `n_frames` frames before each window end, which is `frame_window` of video only at
    the frame rate the config was written for: refuse a session whose rate gives a different number of frames."""
    if frame_times.size < 2:
        return
    rate = 1.0 / float(np.median(np.diff(frame_times)))
    want = frames_per_window(cfg.window.frame_window, rate)
    if want != cfg.frames.n_frames:
        raise ValueError(
            f"the session's video runs at {rate:.3g} frames/s, so [window] frame_window = {cfg.window.frame_window} s "
            f"holds {want} frames, but [frames] n_frames = {cfg.frames.n_frames}: set n_frames = {want} (or "
            f"frame_window = {cfg.frames.n_frames / rate:.4g} s) so the model sees the video it was meant to"
        )


def context_reach(cfg: RunConfig) -> float:
    """How far before a window's start its inputs reach, s: its history, the frames shown in `frame_window`
    before its end, and each behavior input's `input_window` before its end."""
    w = cfg.window
    reach = [w.prev_window]
    if cfg.frames.enabled:
        reach.append(w.frame_window - w.window)
    reach += [b.input_window - w.window for b in cfg.inputs]
    return max(0.0, *reach)


def make_split(data: WindowData, cfg: RunConfig) -> Split:
    """The train/validation/test split: whole trials when the session has at least 3 (its docstring's promise),
    else contiguous time blocks, keeping only windows inside the 1-2 trials if it has any; seeded by the config.
    Sessions joined for multi-session training are split one by one (`rtdecode.data.joined.split_parts`).

    The guard gap is the window plus everything a window's inputs reach back (`context_reach`): windows of
    different splits are at least twice that apart, so no window reads, or is read as, another split's data."""
    w = cfg.window
    gap = w.window + context_reach(cfg)
    starts = data.tokens.window_starts()
    trials = data.session.trials
    parts = session_parts(data.session)
    if parts is not None:  # several sessions joined: each split on its own, so each is in train, val and test
        t = cfg.train
        return split_parts(
            starts, w.window, parts, n_blocks=t.n_blocks, fractions=t.split, gap=gap, seed=t.seed, trials=trials
        )
    if trials is not None and trials.shape[0] >= 3:
        return split_trials(starts, w.window, trials, fractions=cfg.train.split, gap=gap, seed=cfg.train.seed)
    split = split_blocks(
        starts, w.window, n_blocks=cfg.train.n_blocks, fractions=cfg.train.split, gap=gap, seed=cfg.train.seed
    )
    return split if trials is None else within_trials(split, starts, w.window, trials)


def evenly_spaced(windows: np.ndarray, n: int) -> np.ndarray:
    """At most `n` of `windows`, evenly spaced over them (an analysis sample that spans the whole split)."""
    return windows[np.linspace(0, windows.size - 1, min(n, windows.size)).astype(np.int64)]
