"""Connectivity scoring on hand-made matrices with known answers, and `rtdecode connectivity` end to end."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pytest
from typer.testing import CliRunner

from rtdecode.core.connectivity import (
    UNCORRECTED_BASELINES,
    auprc,
    auroc,
    cross_correlogram_baseline,
    direction_index,
    hub_circuit,
    hub_recovery,
    lagged_correlation_baseline,
    meets_auprc_bar,
    meets_bar,
    meets_stimulus_bar,
    score_against_truth,
    score_matrix,
    slow_corrected_cross_correlogram,
)


def brute_auroc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    return np.mean([(p > n) + 0.5 * (p == n) for p, n in product(pos, neg)])


def test_auroc_known_values_and_ties():
    labels = np.array([1, 1, 0, 0, 0], bool)
    assert auroc(np.array([5, 4, 3, 2, 1.0]), labels) == 1.0
    assert auroc(np.array([1, 2, 3, 4, 5.0]), labels) == 0.0
    assert auroc(np.ones(5), labels) == 0.5
    rng = np.random.default_rng(0)
    s, lab = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.3
    assert auroc(s, lab) == pytest.approx(brute_auroc(s, lab))


def test_auprc_perfect_and_worst():
    labels = np.array([1, 0, 1, 0], bool)
    assert auprc(np.array([4, 1, 3, 2.0]), labels) == 1.0
    assert auprc(np.array([1, 4, 2, 3.0]), labels) == pytest.approx((1 / 3 + 2 / 4) / 2)


def hub_network(n=12, hubs=(0, 5)):
    w = np.zeros((n, n))
    for h in hubs:
        targets = [t for t in range(n) if t not in hubs][h % 3 :: 2]
        w[targets, h] = 1.0
    return w, np.array(hubs)


def test_scores_of_the_truth_its_transpose_and_noise():
    w, hubs = hub_network()
    truth = score_matrix(w, w, hubs)
    assert truth["auroc"] == 1.0 and truth["auprc"] == 1.0 and truth["all_found"]
    assert truth["direction_index"] == np.inf  # nothing at all against the true edges
    backwards = score_matrix(w.T + 1e-3, w, hubs)
    assert backwards["direction_index"] < 1 and not backwards["all_found"]
    noise = score_matrix(np.random.default_rng(1).random(w.shape), w, hubs)
    assert 0.2 < noise["auroc"] < 0.8


def test_direction_index_is_along_over_against():
    w = np.zeros((3, 3))
    w[1, 0] = w[2, 0] = 1.0  # 0 -> 1, 0 -> 2
    m = np.full((3, 3), 1.0)
    m[1, 0], m[2, 0] = 4.0, 2.0  # along: mean 3
    m[0, 1], m[0, 2] = 1.0, 2.0  # against: mean 1.5
    assert direction_index(m, w) == pytest.approx(2.0)
    assert hub_recovery(m, np.array([0]))["all_found"]


def test_lagged_correlation_sees_who_leads():
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, (5000, 3)).astype(float)
    x[1:, 1] += x[:-1, 0]  # neuron 0 drives neuron 1 one bin later
    m = lagged_correlation_baseline(x, lag=1)
    assert m[1, 0] > 0.4 and abs(m[0, 1]) < 0.05


def _hub_truth():
    """6 neurons: hub 0 -> {1, 2} (community 0), hub 3 -> {4, 5} (community 1), one weak background edge 2 -> 4."""
    w = np.zeros((6, 6))
    w[[1, 2], 0] = 1.0
    w[[4, 5], 3] = 1.0
    w[4, 2] = 0.3
    return {"W": w, "hubs": np.array([0, 3]), "community": np.array([0, 0, 0, 1, 1, 1])}


def test_hub_circuit_keeps_only_hub_edges():
    truth = _hub_truth()
    hub = hub_circuit(truth)
    assert hub[4, 2] == 0 and hub[1, 0] == hub[2, 0] == hub[4, 3] == hub[5, 3] == 1.0
    assert np.count_nonzero(hub) == 4


def test_scores_against_truth_separate_the_two_edge_sets():
    truth = _hub_truth()
    scores = score_against_truth(hub_circuit(truth), truth)  # a matrix that found the hub circuit only
    assert scores["hub_circuit"]["auroc"] == 1.0 and scores["hub_circuit"]["all_found"]
    pos, neg = 5, 30 - 5  # all weights: 4 hub edges ranked top, the background edge tied with the 25 negatives
    assert scores["all_weights"]["auroc"] == pytest.approx((4 * neg + 0.5 * neg) / (pos * neg))


def test_bar_needs_every_condition():
    truth = _hub_truth()
    good = hub_circuit(truth)
    symmetric = good + good.T  # finds the edges but not their direction
    scores = {"attention": score_against_truth(good, truth), "correlation": score_against_truth(good * 0.5, truth)}
    bar = meets_bar(scores)
    assert bar["auroc"] and bar["hubs"] and bar["direction"]
    assert not bar["beats_baselines"] and not bar["met"]  # a tie at AUROC 1.0 is not "better"
    scores["correlation"] = score_against_truth(symmetric, truth)  # reverse edges rank with the true ones
    assert meets_bar(scores)["met"]
    scores["correlation"] = score_against_truth(np.random.default_rng(0).random((6, 6)), truth)
    assert meets_bar(scores)["met"]
    assert not meets_bar({"attention": score_against_truth(symmetric, truth)})["direction"]
    scores["attention (predicted)"] = score_against_truth(good, truth)  # another reading, not a baseline
    assert meets_bar(scores)["met"]


def test_both_keyings_count_exactly_the_pairs_they_describe(tiny_run, tiny_session_path):
    """Co-occurrence counts against a loop over tokens: by spike, (later spike's neuron, earlier spike's neuron)
    for keys in an earlier bin; by predicted neuron, (next token's neuron, key's neuron) for keys up to the
    query that lie in an earlier bin than the next token."""
    pytest.importorskip("torch")
    from rtdecode.core.window_data import WindowData
    from rtdecode.io import load_session
    from rtdecode.training.checkpoint import LoadedRun
    from rtdecode.training.connectivity import attention_connectivity

    run = LoadedRun(tiny_run)
    data = WindowData(load_session(tiny_session_path), run.config)
    windows = np.arange(5, 11)
    keyed = attention_connectivity(run.model, data, windows, run.norm, batch_size=4)
    n = run.model.vocab.n_neurons
    want = {k: np.zeros((n, n)) for k in ("spike", "predicted", "lag contrast", "gradient-weighted")}
    batch = data.batch(windows, run.norm)
    for ids, dts in zip(batch["ids"], batch["dts"]):
        for q, k in product(range(ids.size), repeat=2):
            if ids[q] < n and ids[k] < n and dts[k] < dts[q]:
                want["spike"][ids[q], ids[k]] += 1
                want["lag contrast"][ids[q], ids[k]] += dts[q] - dts[k] == 1
            if q + 1 < ids.size and k <= q and ids[q + 1] < n and ids[k] < n and dts[k] < dts[q + 1]:
                want["predicted"][ids[q + 1], ids[k]] += 1
                want["gradient-weighted"][ids[q + 1], ids[k]] += 1
    for name, (matrix, count) in keyed.items():
        assert count.sum() > 0 and np.array_equal(count, want[name]), name
        assert np.all(matrix[count == 0] == 0) and np.all(matrix >= 0)


def test_connectivity_command_on_the_tiny_run(tiny_run, tiny_session_path, tmp_path):
    pytest.importorskip("torch")
    from rtdecode.cli import app

    r = CliRunner().invoke(
        app,
        [
            "connectivity",
            "--from",
            str(tiny_run),
            "--data",
            str(tiny_session_path),
            "--out",
            str(tmp_path),
            "--windows",
            "64",
        ],
    )
    assert r.exit_code == 0, r.output
    section = json.loads((tmp_path / "report.json").read_text())["connectivity"]
    assert set(section["scores"]) == {
        "attention",
        "attention (predicted)",
        "attention (lag contrast)",
        "attention (gradient-weighted)",
        "correlation",
        "lagged correlation",
        "cross-correlogram",
        "cross-correlogram (slow-corrected)",
    }
    for reading, bars in section["auprc_bar_by_reading"].items():
        assert reading.startswith("attention")
        assert bars["uncorrected baselines"]["best_baseline"] in ("lagged correlation", "cross-correlogram")
    for s in section["scores"].values():
        assert {"hub_circuit", "all_weights"} <= set(s) <= {"hub_circuit", "all_weights", "visual"}
        assert all(0 <= s[e]["auroc"] <= 1 for e in s)
    assert set(section["bar"]) == {"auroc", "hubs", "direction", "beats_baselines", "met"}
    assert section["judged_reading"] == "attention (gradient-weighted)"
    assert (
        section["auprc_bar_uncorrected"]
        == section["auprc_bar_by_reading"][section["judged_reading"]]["uncorrected baselines"]
    )
    for key in ("stimulus_bar", "stimulus_bar_uncorrected"):
        assert section[key] is None or isinstance(section[key]["met"], bool)
    assert (tmp_path / "connectivity.png").stat().st_size > 1000
    assert "connectivity.png" in (tmp_path / "report.html").read_text()


def test_the_cross_correlogram_finds_a_2_ms_connection_and_its_direction():
    """Neuron 1 fires 2 ms after each spike of neuron 0 (spike times on a 1-ms grid); 2 is independent."""
    rng = np.random.default_rng(0)
    src = np.sort(rng.choice(np.arange(0, 100_000), 2000, replace=False)) * 1e-3
    other = np.sort(rng.choice(np.arange(0, 100_000), 2000, replace=False)) * 1e-3
    times = np.concatenate([src, src + 0.002, other])
    neurons = np.concatenate([np.zeros(2000), np.ones(2000), np.full(2000, 2)]).astype(np.int64)
    m = cross_correlogram_baseline(times, neurons, 3, 100.0)
    assert m[1, 0] > 20 and m[1, 0] > 10 * abs(m[0, 1]) and abs(m[2, 0]) < 5 and abs(m[0, 2]) < 5


def test_the_slow_corrected_correlogram_removes_shared_slow_drive():
    """Neurons 0 and 1 are both driven by the same slow on/off periods (5 s on, 5 s off), and 1 also fires 2 ms after
    some spikes of 0. The plain correlogram sees 1 -> 0 too (the shared drive puts 0's spikes after 1's at every
    lag); the corrected one keeps 0 -> 1 and leaves 1 -> 0 at chance. Spike times on a 1-ms grid, 400 s."""
    rng = np.random.default_rng(1)
    grid = np.arange(400_000)
    on = (grid // 5000) % 2 == 0
    p = np.where(on, 0.04, 0.002)  # 40 Hz on, 2 Hz off
    first, second = grid[rng.random(grid.size) < p], grid[rng.random(grid.size) < p]
    relayed = first[rng.random(first.size) < 0.3] + 2
    times = np.concatenate([first, second, relayed]) * 1e-3
    neurons = np.concatenate([np.zeros(first.size), np.ones(second.size + relayed.size)]).astype(np.int64)
    plain = cross_correlogram_baseline(times, neurons, 2, 400.0)
    corrected = slow_corrected_cross_correlogram(times, neurons, 2, 400.0)
    assert plain[0, 1] > 10  # the shared drive, seen as an edge against the true direction
    assert abs(corrected[0, 1]) < 4 and abs(corrected[0, 1]) < 0.2 * plain[0, 1] and corrected[1, 0] > 20
    assert corrected[1, 0] / abs(corrected[0, 1]) > 5 * plain[1, 0] / plain[0, 1]


def test_the_auprc_bar_compares_with_the_best_directed_baseline():
    truth = _hub_truth()
    good, noise = hub_circuit(truth), np.random.default_rng(0).random((6, 6))
    symmetric = good + good.T  # finds the edges but not their direction

    def scores(attention, lagged, ccg):
        named = (("attention", attention), ("lagged correlation", lagged), ("cross-correlogram", ccg))
        return {name: score_against_truth(m, truth) for name, m in named}

    bar = meets_auprc_bar(scores(good, symmetric, noise))
    assert bar["met"] and bar["best_baseline"] == "lagged correlation"
    assert not meets_auprc_bar(scores(noise, symmetric, noise))["auprc"]
    leaky = good + 0.9 * good.T  # ranks the true edges first, but barely tells their direction
    bar = meets_auprc_bar(scores(leaky, good, noise))
    assert bar["auprc"] and not bar["direction"] and not bar["met"]
    named = {**scores(good, symmetric, noise), "cross-correlogram (slow-corrected)": score_against_truth(good, truth)}
    assert meets_auprc_bar(named)["best_baseline"] == "cross-correlogram (slow-corrected)"
    assert meets_auprc_bar(named, baselines=UNCORRECTED_BASELINES)["best_baseline"] == "lagged correlation"


def test_the_visual_edge_set_and_its_bar():
    """Visual neurons 4 and 5 share a stimulus; their true inputs are 4 <- 3, 4 <- 2 and 5 <- 3. A matrix that finds
    those beats one that sees the shared drive (4 <-> 5) as strongly as the inputs."""
    truth = {**_hub_truth(), "visual_neurons": np.array([4, 5])}
    found = hub_circuit(truth) + np.where(truth["W"] == 0.3, 0.3, 0.0)
    shared = found.copy()
    shared[4, 5] = shared[5, 4] = 2.0
    scores = {"attention": score_against_truth(found, truth), "correlation": score_against_truth(shared, truth)}
    assert scores["attention"]["visual"]["auprc"] == 1.0 and scores["correlation"]["visual"]["auprc"] < 1.0
    assert scores["attention"]["visual"]["edge_fraction"] == pytest.approx(3 / 10)
    bar = meets_stimulus_bar(scores)
    assert bar is not None and bar["met"] and bar["best_baseline"] == "correlation"
    assert not meets_stimulus_bar({**scores, "attention": score_against_truth(shared, truth)})["met"]
    plain = {"attention": score_against_truth(found, _hub_truth())}
    assert "visual" not in plain["attention"] and meets_stimulus_bar(plain) is None
    # judged against named baselines only: the symmetric correlation no longer counts, and an absent one is an error
    scores["lagged correlation"] = score_against_truth(shared, truth)
    named = meets_stimulus_bar(scores, baselines=("lagged correlation", "cross-correlogram"))
    assert named is not None and named["best_baseline"] == "lagged correlation"
    with pytest.raises(ValueError, match="no baseline"):
        meets_stimulus_bar(scores, baselines=("cross-correlogram",))
