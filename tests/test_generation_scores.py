"""Generation scores and baselines on recorded data, where the right answers are known."""

from __future__ import annotations

import dataclasses

import numpy as np

from rtdecode.data.generated_history import ClosedLoopHistory
from rtdecode.data.tokenizer import WindowConfig, tokenize_session
from rtdecode.report.generation import (
    UNSEEN_REDRAWN,
    CountGLM,
    baseline_windows,
    closed_loop_stability,
    fit_baselines,
    generation_scores,
    generation_targets,
    recorded_windows,
    repeat_trial_windows,
)


def tokens_of(session):
    cfg = WindowConfig(block_size=256, prev_block_size=256, prev_window=0.1)
    return tokenize_session(
        session.spike_times, session.spike_neurons, session.n_neurons, session.start, session.stop, cfg
    )


def test_the_recording_scored_against_itself_is_perfect(tiny_session):
    tokens = tokens_of(tiny_session)
    windows = np.arange(100, 300)
    scores, arrays = generation_scores(tokens, windows, {"generated": recorded_windows(tokens, windows)})
    g = scores["generated"]
    assert g["rate_correlation"] > 0.999 and g["population_rate_correlation"] > 0.999
    assert g["pairwise_correlation_similarity"] > 0.999 and g["set_f1"] == 1.0
    assert g["fano_ks"] == 0.0 and g["isi_ks"] == 0.0 and g["capped_fraction"] == scores["true"]["capped_fraction"]
    targets = generation_targets(scores, {})
    assert all(v["met"] for v in targets.values()) and len(targets) == 5


def test_the_slow_population_rate_sums_consecutive_windows(tiny_session):
    """Windows shuffled inside each 0.5-s bin: the window-scale population rate no longer follows the recording,
    the slow one (the same spikes summed per bin) still does exactly."""
    tokens = tokens_of(tiny_session)
    windows = np.arange(100, 300)
    per_bin = int(round(0.5 / tokens.config.window))
    assert windows.size % per_bin == 0
    rng = np.random.default_rng(0)
    order = np.concatenate([b + rng.permutation(per_bin) for b in range(0, windows.size, per_bin)])
    recorded = recorded_windows(tokens, windows)
    scores, _ = generation_scores(tokens, windows, {"generated": [recorded[i] for i in order]})
    g = scores["generated"]
    assert scores["slow_bin_s"] == 0.5 and g["population_rate_correlation_slow"] > 0.999
    assert g["population_rate_correlation"] < 0.9


def test_baselines_keep_the_recorded_rates_teacher_forced_and_in_closed_loop(tiny_session):
    tokens = tokens_of(tiny_session)
    train, windows = np.arange(0, 400), np.arange(450, 550)
    for closed in (False, True):
        base = baseline_windows(fit_baselines(tokens, train), tokens, windows, closed_loop=closed, seed=1)
        scores, _ = generation_scores(tokens, windows, base)
        for name in ("poisson", "glm"):
            assert len(base[name]) == windows.size
            # neither runs away nor dies: mean rate within 2x of the recording's
            assert 0.5 < scores[name]["mean_rate_hz"] / scores["true"]["mean_rate_hz"] < 2


def test_count_glm_recovers_a_linear_dependence():
    rng = np.random.default_rng(0)
    prev = rng.poisson(2.0, (4000, 3)).astype(float)
    cur = 0.5 + prev @ np.array([[0.8, 0, 0], [0, 0, 0.3], [0, 0, 0]])
    glm = CountGLM(prev, cur)
    np.testing.assert_allclose(glm.expected(np.array([[1.0, 2.0, 3.0]]))[0], [1.3, 0.5, 1.1], atol=0.05)


def test_closed_loop_history_starts_from_the_recorded_history(tiny_session):
    tokens = tokens_of(tiny_session)
    loop = ClosedLoopHistory(tokens, 200)
    first = loop.tokens(200)
    np.testing.assert_array_equal(first.ids, tokens.history(np.array([200])).ids)
    loop.add(200, np.array([3, 1]), np.array([0, 4]))
    second = loop.tokens(201)  # the history (2 windows) reaches back into the recorded spikes before window 200
    rec = tokens.history(np.array([201]))
    n_before = int(tokens.window_ptr[200] - tokens.history_ptr[201])
    assert second.lengths[0] == n_before + 2
    np.testing.assert_array_equal(second.ids[0, :n_before], rec.ids[0, :n_before])
    assert second.ids[0, n_before : n_before + 2].tolist() == [3, 1]


def test_closed_loop_history_puts_generated_spikes_in_token_order(tiny_session):
    """Sampling may emit one quantum's neurons in any order; the history the next window reads has them as the
    tokenizer packs a recording (quantum, then neuron index), the only order the model saw in training."""
    tokens = tokens_of(tiny_session)
    assert tokens.config.token_order == "neuron"
    loop = ClosedLoopHistory(tokens, 200)
    loop.tokens(200)
    loop.add(200, np.array([5, 2, 7, 1]), np.array([1, 1, 0, 3]))
    history = loop.tokens(201)
    n = int(history.lengths[0])
    assert history.ids[0, n - 4 : n].tolist() == [7, 2, 5, 1]


def test_stability_flags_a_loop_that_runs_away():
    recorded = np.full(1200, 1000.0)  # 60 s of 50-ms windows
    runaway = np.linspace(1000, 5000, 1200)
    st = closed_loop_stability(runaway, recorded, 0.05)
    assert st["rate_ratio_last"] > 4 and st["rate_ratio_first"] < 1.5
    assert not generation_targets({}, {"stability": st})["closed loop: last 10 s population rate over the recording's"][
        "met"
    ]


def test_a_repeat_trial_of_a_simulated_session_is_the_ceiling(tiny_session):
    """A simulated session gets a repeat trial on its own window grid, scored like a source; its scores become
    each target's ceiling. A session that is not a whole built-in simulation gets none."""
    tokens = tokens_of(tiny_session)
    windows = np.arange(20, 220)
    repeat = repeat_trial_windows(tiny_session, tokens, windows)
    assert repeat is not None and len(repeat) == windows.size
    sources = {"generated": recorded_windows(tokens, windows), "repeat trial": repeat}
    scores, _ = generation_scores(tokens, windows, sources)
    rep = scores["repeat trial"]
    assert 0.5 < rep["rate_correlation"] < 1.0 and rep["population_rate_correlation"] < 1.0
    assert abs(rep["spikes_per_window"] / scores["true"]["spikes_per_window"] - 1) < 0.15
    targets = generation_targets(scores, {})
    assert targets["teacher-forced: population rate r"]["ceiling"] == rep["population_rate_correlation"]
    assert "ceiling" not in targets["teacher-forced: windows at the token cap, points from the recording's"]
    recorded_elsewhere = dataclasses.replace(tiny_session, metadata={"source": "nwb"})
    assert repeat_trial_windows(recorded_elsewhere, tokens, windows) is None


def test_the_closed_loop_is_also_scored_against_a_trial_with_its_unseen_causes_redrawn(tiny_session):
    """With the behavior and hub schedule drawn afresh a repeat trial follows the recording less closely (per
    neuron, over the same windows) than one under the same causes, and its scores become the closed loop's
    "ceiling_unseen_redrawn"."""
    tokens = tokens_of(tiny_session)
    windows = np.arange(20, 220)
    same = repeat_trial_windows(tiny_session, tokens, windows)
    redrawn = repeat_trial_windows(tiny_session, tokens, windows, redraw=("behavior", "community"))
    assert same is not None and redrawn is not None and len(redrawn) == windows.size
    sources = {"generated": recorded_windows(tokens, windows), "repeat trial": same, UNSEEN_REDRAWN: redrawn}
    scores, _ = generation_scores(tokens, windows, sources)
    assert scores[UNSEEN_REDRAWN]["population_rate_correlation"] < scores["repeat trial"]["population_rate_correlation"]
    targets = generation_targets({}, scores)
    entry = targets["closed loop: per-neuron rate r"]
    assert entry["ceiling_unseen_redrawn"] == scores[UNSEEN_REDRAWN]["rate_correlation"]
