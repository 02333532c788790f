"""Fidelity fixes found by reading the model against the reference: each test is a case that failed before.

- the split's guard gap covers every context a window reads (history, frames, behavior inputs);
- `frame_window` and `n_frames` must agree at the session's frame rate;
- behavior-input ages use the tokenizer's float tolerance;
- sessions with trials are split by trial;
- the reference's loss weighting is a named built-in config.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rtdecode.core.config import RunConfig, load_config
from rtdecode.core.window_data import WindowData, context_reach, make_split
from rtdecode.data.alignment import behavior_input_samples
from tests.conftest import tiny_config_dict


def _windows_apart(a: np.ndarray, b: np.ndarray, starts: np.ndarray, window: float) -> float:
    """The smallest gap, s, between any window of `a` and any window of `b` (edge to edge)."""
    sa, sb = np.sort(starts[a]), np.sort(starts[b])
    pos = np.searchsorted(sb, sa)
    gaps = []
    for side in (pos - 1, pos):
        ok = (side >= 0) & (side < sb.size)
        gaps.append(np.abs(sb[side[ok]] - sa[ok]) - window)
    return float(np.concatenate(gaps).min())


def test_the_split_guard_covers_a_long_behavior_input(tiny_session):
    """A 1-s behavior input reads 0.95 s before a window's start; the old gap (history + window) let a test
    window read samples inside training windows."""
    d = tiny_config_dict()
    d["behavior"] = [{"name": "speed"}, {"name": "theta", "role": "input", "input_window": 1.0}]
    d["contrastive"] = {"enabled": False}
    cfg = RunConfig.from_dict(d)
    assert context_reach(cfg) == pytest.approx(0.95)
    data = WindowData(tiny_session, cfg)
    split = make_split(data, cfg)
    starts = data.tokens.window_starts()
    for a, b in ((split.train, split.test), (split.train, split.val), (split.val, split.test)):
        assert _windows_apart(a, b, starts, cfg.window.window) >= context_reach(cfg) - 1e-9


def test_frame_window_and_n_frames_must_agree_at_the_sessions_frame_rate(tiny_session):
    cfg = RunConfig.from_dict(tiny_config_dict())
    WindowData(tiny_session, cfg)  # 0.15 s at 20 frames/s: 3 frames, as configured
    wrong = dataclasses.replace(cfg, frames=dataclasses.replace(cfg.frames, n_frames=5))
    with pytest.raises(ValueError, match=r"holds 3 frames, but \[frames\] n_frames = 5: set n_frames = 3"):
        WindowData(tiny_session, wrong)


def test_behavior_input_ages_use_the_tokenizer_tolerance():
    """Samples 100 and 50 ms before a window end at 5-ms quanta are 20 and 10 quanta old (were 19 and 9)."""
    _, ages, valid = behavior_input_samples(np.array([0.2, 0.25]), np.array([1.0, 2.0]), np.array([0.3]), 0.25, 0.005)
    assert valid.all() and ages.tolist() == [[20, 10]]


def test_a_session_with_trials_is_split_by_trial(tiny_session):
    trials = np.column_stack([np.arange(1.0, 29.0, 2.0), np.arange(1.0, 29.0, 2.0) + 1.5])  # 14 trials of 1.5 s
    session = dataclasses.replace(tiny_session, trials=trials)
    cfg = RunConfig.from_dict(tiny_config_dict())
    data = WindowData(session, cfg)
    split = make_split(data, cfg)
    starts = data.tokens.window_starts()
    trial_of = {}
    for part, idx in (("train", split.train), ("val", split.val), ("test", split.test)):
        assert idx.size
        t = np.searchsorted(trials[:, 0], starts[idx], side="right") - 1
        assert (t >= 0).all() and (starts[idx] + cfg.window.window <= trials[t, 1] + 1e-9).all()  # inside a trial
        for k in np.unique(t):
            assert trial_of.setdefault(int(k), part) == part  # a trial belongs to one split


def test_the_reference_loss_weighting_is_a_named_config():
    cfg = load_config("reference")
    assert (cfg.train.id_weight, cfg.train.dt_weight, cfg.contrastive.weight) == (0.45, 0.30, 0.25)
    assert cfg.contrastive.enabled


def test_baselines_learn_from_the_labelled_windows_the_model_learned_from(tiny_session_path, tmp_path):
    """With 10% of the training windows labelled, the ridge baseline is fitted on those windows too (it was fitted
    on every training window, so few-shot curves compared the model against a baseline with ten times the labels)."""
    pytest.importorskip("torch")
    from rtdecode.training.train import train

    cfg = RunConfig.from_dict(tiny_config_dict(max_steps=2, eval_every=2))
    quiet = {"log": lambda _: None}
    full = train(cfg, tiny_session_path, tmp_path / "full", **quiet)
    few = train(cfg, tiny_session_path, tmp_path / "few", label_fraction=0.1, **quiet)
    assert few.baseline["ridge_speed_r"] != full.baseline["ridge_speed_r"]
    assert few.baseline["ridge_speed_r"] < full.baseline["ridge_speed_r"]


def test_the_rate_baseline_has_a_set_f1_without_the_oracle_spike_count(tiny_session):
    """Without the oracle count every test window gets the same predicted set (rates alone), and both F1s are
    reported, labelled."""
    from rtdecode.core.metrics import rate_baseline_f1, rate_baseline_sets

    cfg = RunConfig.from_dict(tiny_config_dict())
    from rtdecode.data.budget import budget_report

    data = WindowData(tiny_session, cfg)
    split = make_split(data, cfg)
    budgeted = dataclasses.replace(cfg, window=budget_report(data.tokens, split.train, cfg.window).window)
    data = data.with_budgets(budgeted)
    no_oracle = rate_baseline_sets(data.tokens, split.train, split.test, oracle_n=False)
    oracle = rate_baseline_sets(data.tokens, split.train, split.test, oracle_n=True)
    assert all(s == no_oracle[0] for s in no_oracle) and len({len(s) for s in oracle}) > 1
    scores = rate_baseline_f1(data.tokens, split.train, split.test)
    assert {"f1", "f1_threshold"} <= set(scores) and scores["f1"] != scores["f1_threshold"]


def test_closed_loop_generation_keeps_the_recorded_history_before_its_first_window(tiny_run, tiny_session):
    """The tiny model's history (0.1 s) spans two 50-ms windows: the second generated window's history must hold
    the recorded spikes of the 50 ms before the first generated window (they were dropped, leaving it half empty)."""
    pytest.importorskip("torch")
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.generate import SamplingConfig, generate_session

    run = LoadedRun(tiny_run)
    data = WindowData(tiny_session, run.config)
    model, seen = run.model, []
    encode = model.encode_context
    model.encode_context = lambda batch: seen.append(batch["prev_ids"].numpy().copy()) or encode(batch)
    w0 = 40
    generate_session(
        model, data, np.array([w0, w0 + 1]), run.norm, history="generated", sampling=SamplingConfig(seed=0)
    )
    tokens, B = data.tokens, run.config.window.bins_per_window
    first_q = (tokens.first_window + w0) * B
    lo, hi = tokens.history_ptr[w0], tokens.window_ptr[w0]
    recorded = tokens.neurons[lo:hi][tokens.bins[lo:hi] >= first_q + B - run.config.window.prev_bins]
    assert recorded.size  # recorded spikes in the part of window w0 + 1's history before w0
    hist = seen[1][0]
    assert np.isin(recorded, hist).all()
