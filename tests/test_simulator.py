"""The simulator's promises: deterministic, well-formed, and its ground truth is visible in the data.

The statistical tests check what the later analyses depend on: hubs really drive their communities (visible in
the cross-correlogram, not only in W), behavior is linearly decodable from the coupled neurons, and visual neurons
follow the stimulus. A naive step-by-step reference checks that the block-parallel scheme draws the same spikes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rtdecode.io.npz import load_npz, save_npz
from rtdecode.sim import simulator
from rtdecode.sim.config import BEHAVIORS
from rtdecode.sim.simulator import SimulationConfig, simulate

DURATION = 120.0


@pytest.fixture(scope="module")
def config() -> SimulationConfig:
    return SimulationConfig(duration=DURATION, seed=0)


@pytest.fixture(scope="module")
def session(config):
    return simulate(config)


@pytest.fixture(scope="module")
def short():
    return simulate(SimulationConfig(duration=10.0, seed=3))


# ---------------------------------------------------------------------------------------------------- form
def _same(a, b) -> bool:
    arrays = ["spike_times", "spike_neurons", "frames", "frame_times"]
    if not all(np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays):
        return False
    if a.behavior.keys() != b.behavior.keys() or a.truth.keys() != b.truth.keys():
        return False
    same_beh = all(np.array_equal(a.behavior[k].values, b.behavior[k].values) for k in a.behavior)
    return same_beh and all(np.array_equal(a.truth[k], b.truth[k]) for k in a.truth)


def test_same_config_is_bit_identical(short):
    assert _same(short, simulate(SimulationConfig(duration=10.0, seed=3)))


def test_different_seed_differs(short):
    other = simulate(SimulationConfig(duration=10.0, seed=4))
    assert not np.array_equal(short.truth["W"], other.truth["W"])
    assert not np.array_equal(short.spike_times[:100], other.spike_times[:100])


def test_session_form_and_clocks(session, config):
    session.validate()
    assert session.start == 0.0 and session.stop == DURATION
    t = session.spike_times
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < DURATION
    off_grid = np.abs(t / config.dt - np.round(t / config.dt)) > 1e-6
    assert off_grid.mean() > 0.99  # jittered within the step, not on the dt grid
    n_frames = int(DURATION * config.frame_rate)
    assert session.frames.shape == (n_frames, *config.frame_shape) and session.frames.dtype == np.uint8
    np.testing.assert_allclose(session.frame_times, np.arange(n_frames) / config.frame_rate)
    assert session.frames.std() > 20  # a real stimulus, not a gray screen
    n_beh = int(DURATION * config.behavior_rate)
    assert set(session.behavior) == {"speed", "phi", "theta", "direction"}
    for name, unit in [("speed", "cm/s"), ("phi", "deg"), ("theta", "deg")]:
        b = session.behavior[name]
        assert b.unit == unit and b.values.shape == (n_beh,) and np.all(np.isfinite(b.values))
        np.testing.assert_allclose(b.times, np.arange(n_beh) / config.behavior_rate)
    assert np.all(session.behavior["speed"].values > 0)
    assert session.behavior["phi"].values.std() > 3  # saccades move the eye by degrees


def test_metadata_is_json_and_roundtrips(short, tmp_path):
    meta = json.loads(short.metadata_json())
    assert meta["source"] == "rtdecode.sim.simulator" and meta["config"]["seed"] == 3
    assert SimulationConfig(**meta["config"]) == SimulationConfig(duration=10.0, seed=3)  # lists back to tuples
    save_npz(short, tmp_path / "sim.npz")
    assert _same(short, load_npz(tmp_path / "sim.npz"))


def test_progress_reaches_one():
    seen: list[float] = []
    simulate(SimulationConfig(duration=3.5), progress=seen.append)
    assert seen == sorted(seen) and len(seen) == 4 and seen[-1] == 1.0


# ---------------------------------------------------------------------------------------------------- truth
def test_truth_layout(session, config):
    tr, n = session.truth, config.n_neurons
    W = tr["W"]
    assert W.shape == (n, n) and W.dtype == np.float32 and np.all(np.diag(W) == 0)
    sets = [tr["hubs"], tr["visual_neurons"], tr["speed_neurons"], tr["phi_neurons"], tr["theta_neurons"]]
    sizes = [config.n_hubs, config.n_visual, config.n_speed, config.n_phi, config.n_theta]
    assert [s.size for s in sets] == sizes
    everything = np.concatenate(sets)
    assert np.unique(everything).size == everything.size  # disjoint
    size = (n - config.n_hubs) // config.n_hubs
    for k, h in enumerate(tr["hubs"]):
        members = np.flatnonzero(tr["community"] == k)
        assert tr["community"][h] == k and members.size == size + 1
        np.testing.assert_allclose(W[np.setdiff1d(members, [h]), h], config.hub_weight)
    for name in ("speed", "phi", "theta"):
        gain = tr[f"{name}_gain"]
        assert gain.shape == tr[f"{name}_neurons"].shape and (gain > 0).sum() == (gain < 0).sum()
    assert np.all(np.diff(tr["community_times"]) > 0) and np.all(np.diff(tr["active_community"]) != 0)


def test_hub_columns_dominate_w(session, config):
    W = session.truth["W"]
    top = np.argsort(W.sum(axis=0))[-config.n_hubs :]
    assert set(top) == set(session.truth["hubs"])


# ---------------------------------------------------------------------------------------------------- statistics
def test_rates_are_plausible(session):
    rates = session.firing_rates()
    assert 1.0 < rates.mean() < 10.0
    assert rates.min() > 0.5  # no silent neurons
    assert rates.max() < 50.0


def _triggered_ratio(session, source: int, targets: np.ndarray, lo: float = 0.002, hi: float = 0.015) -> float:
    """Targets' rate in [lo, hi) s after `source` spikes, divided by their mean rate (1 = no effect)."""
    t, n = session.spike_times, session.spike_neurons
    trig = t[n == source]
    tt = t[np.isin(n, targets)]
    count = np.searchsorted(tt, trig + hi) - np.searchsorted(tt, trig + lo)
    after = count.sum() / (trig.size * (hi - lo) * targets.size)
    return after / (tt.size / session.duration / targets.size)


def test_hubs_drive_their_communities_in_spikes(session):
    tr = session.truth
    rng = np.random.default_rng(0)
    for k, hub in enumerate(tr["hubs"]):
        members = np.flatnonzero(tr["community"] == k)
        targets = members[members != hub]
        hub_ratio = _triggered_ratio(session, hub, targets)
        # Controls: non-hub members of the same community, which share the hub's input (the hardest baseline).
        controls = [_triggered_ratio(session, j, targets[targets != j]) for j in rng.choice(targets, 8, replace=False)]
        assert hub_ratio > 1.6, f"hub {hub}: targets fire {hub_ratio:.2f}x their mean rate 2-15 ms after it"
        assert hub_ratio > 1.4 * np.mean(controls), f"hub {hub}: {hub_ratio:.2f} vs non-hub sources {controls}"


def _binned_counts(session, neurons: np.ndarray, width: float) -> np.ndarray:
    """(n_bins, len(neurons)) spike counts in consecutive bins of `width` s."""
    n_bins = int(session.duration / width)
    sel = np.isin(session.spike_neurons, neurons)
    b = np.minimum((session.spike_times[sel] / width).astype(np.int64), n_bins - 1)
    col = np.searchsorted(neurons, session.spike_neurons[sel])
    flat = np.bincount(b * neurons.size + col, minlength=n_bins * neurons.size)
    return flat.reshape(n_bins, neurons.size).astype(np.float64)


@pytest.mark.parametrize("name", ["speed", "phi", "theta"])
def test_behavior_is_linearly_decodable(session, name):
    width = 0.05
    X = _binned_counts(session, np.sort(session.truth[f"{name}_neurons"]), width)
    X = np.c_[X, np.ones(len(X))]  # (n_bins, n_coupled + 1) with intercept
    b = session.behavior[name]
    y = np.interp((np.arange(len(X)) + 0.5) * width, b.times, b.values)
    split = int(0.7 * len(X))
    A, target = X[:split], y[:split]
    w = np.linalg.solve(A.T @ A + 1.0 * np.eye(A.shape[1]), A.T @ target)  # ridge, closed form
    r = np.corrcoef(X[split:] @ w, y[split:])[0, 1]
    assert r > 0.7, f"{name}: held-out Pearson r = {r:.3f}"


@pytest.mark.parametrize("stimulus", ["gratings", "noise"])
def test_visual_neurons_follow_the_stimulus(session, stimulus):
    s = session if stimulus == "gratings" else simulate(SimulationConfig(duration=60.0, stimulus="noise"))
    tr, n_frames = s.truth, s.frames.shape[0]
    frame = np.minimum((s.spike_times * s.metadata["config"]["frame_rate"]).astype(np.int64), n_frames - 1)
    counts = np.bincount(s.spike_neurons * n_frames + frame, minlength=s.n_neurons * n_frames)
    counts = counts.reshape(s.n_neurons, n_frames).astype(np.float64)  # (N, F) spikes during each frame
    X = s.frames.reshape(n_frames, -1).astype(np.float64)
    X = (X - X.mean(axis=0)) / X.std()
    visual = tr["visual_neurons"]
    others = np.setdiff1d(np.arange(s.n_neurons), np.concatenate([visual, tr["hubs"]]))
    # Truth-free: spike-triggered average energy, scaled by spike count so noise is ~flat across neurons.
    sta = counts @ X / counts.sum(axis=1, keepdims=True)  # (N, H*W)
    energy = (sta**2).sum(axis=1) * counts.sum(axis=1)
    assert np.median(energy[visual]) > 2.0 * np.median(energy[others])
    # With the truth: counts follow each neuron's own rectified receptive-field projection.
    drive = np.maximum(X @ tr["receptive_fields"].reshape(visual.size, -1).T, 0.0)  # (F, n_visual)
    own = np.array([np.corrcoef(counts[v], drive[:, j])[0, 1] for j, v in enumerate(visual)])
    rng = np.random.default_rng(0)
    foreign = np.array([np.corrcoef(counts[v], drive[:, rng.integers(visual.size)])[0, 1] for v in others])
    assert np.percentile(own, 5) > np.percentile(foreign, 95)


# ---------------------------------------------------------------------------------------------------- scheme
def _naive_run_network(c, W, drive, rng, progress):
    """Reference: one step at a time, g(t) = r g(t-1) + sum of W[:, j] for spikes of j at t - d."""
    n, d = c.n_neurons, c.delay_steps
    r = math.exp(-c.dt / c.synaptic_tau)
    g = np.zeros(n)
    history: list[np.ndarray] = []
    steps, neurons = [], []
    chunk = simulator._chunk_len(c)
    for step0 in range(0, c.n_steps, chunk):
        length = min(chunk, c.n_steps - step0)
        u = np.exp(-rng.standard_exponential((length, n)))  # same draws as the fast scheme
        ext = drive.chunk(step0, length)
        for i in range(length):
            t = step0 + i
            g = g * r + (W[:, history[t - d]].sum(axis=1) if t >= d else 0.0)
            rate = np.minimum(np.exp(ext[i] + g), c.max_rate)
            spiking = np.flatnonzero(u[i] < rate * c.dt)
            history.append(spiking)
            steps.extend([t] * spiking.size)
            neurons.extend(spiking)
    return np.asarray(steps, dtype=np.int64), np.asarray(neurons, dtype=np.int32)


@pytest.mark.parametrize("delay", [0.001, 0.002, 0.003])
def test_block_scheme_matches_naive_reference(monkeypatch, delay):
    cfg = SimulationConfig(n_neurons=30, n_hubs=2, n_visual=6, n_speed=4, n_phi=4, n_theta=4, duration=2.5,
                           synaptic_delay=delay, hub_weight=2.0, background_density=0.2, seed=7)  # fmt: skip
    fast = simulate(cfg)
    monkeypatch.setattr(simulator, "_run_network", _naive_run_network)
    slow = simulate(cfg)
    assert fast.n_spikes > 100
    assert np.array_equal(fast.spike_neurons, slow.spike_neurons)
    np.testing.assert_allclose(fast.spike_times, slow.spike_times, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "bad",
    [
        {"n_neurons": 5, "n_hubs": 3, "n_visual": 0, "n_speed": 0, "n_phi": 0, "n_theta": 0},  # hubs lack targets
        {"n_neurons": 100},  # hubs + visual + behavior sets exceed N
        {"duration": -1.0},
        {"duration": 0.0},
        {"dt": 0.0},
        {"synaptic_delay": 0.0005},  # shorter than one step
        {"synaptic_tau": 0.0},
        {"base_rate": -2.0},
        {"max_rate": 2000.0},  # max_rate * dt > 1
        {"background_density": 1.5},
        {"stimulus": "movies"},
        {"frame_shape": (0, 64)},
        {"n_hubs": -1},
        {"n_visual": 2.5},
        {"community_switch": float("nan")},
        {"hub_weight": "strong"},
        {"frame_shape": (32, 64, 3)},
    ],
)
def test_invalid_configs_raise(bad):
    with pytest.raises(ValueError):
        SimulationConfig(**bad)


def test_gratings_record_their_drift_direction(short):
    """The direction is a circular variable on the frame clock: one of 8 angles in (-pi, pi], held for 2-4 s;
    a noise movie has none."""
    d = short.behavior["direction"]
    assert d.unit == "rad" and np.array_equal(d.times, short.frame_times)
    assert np.all((d.values > -math.pi) & (d.values <= math.pi + 1e-12))
    eighths = d.values / (math.pi / 4)
    assert np.allclose(eighths, np.round(eighths))
    changes = np.flatnonzero(np.diff(d.values) != 0)
    assert changes.size >= 2 and np.all(np.diff(changes) >= 2.0 * 20 - 1)  # held >= 2 s at 20 fps
    assert "direction" not in simulate(SimulationConfig(duration=3.0, stimulus="noise")).behavior


def test_a_repeat_trial_keeps_every_cause_and_redraws_the_spikes(short):
    """`trial=k` is the same circuit under the same stimulus, behavior and hub schedule; only the spikes differ
    (the repeat-trial ceiling of the generation report rests on this)."""
    again = simulate(SimulationConfig(duration=10.0, seed=3), trial=1)
    assert np.array_equal(again.frames, short.frames)
    assert all(np.array_equal(again.behavior[k].values, short.behavior[k].values) for k in short.behavior)
    assert all(np.array_equal(again.truth[k], short.truth[k]) for k in short.truth)
    assert not np.array_equal(again.spike_times[:100], short.spike_times[:100])
    assert abs(again.spike_times.size / short.spike_times.size - 1) < 0.1
    assert _same(simulate(SimulationConfig(duration=10.0, seed=3), trial=0), short)


def test_a_repeat_trial_can_redraw_the_causes_a_model_is_not_given(short):
    """`redraw` draws the behavior and/or the hub schedule afresh and keeps the stimulus and the circuit: the
    ceiling of a closed loop that decodes the behavior (never shown it) and never sees the hub schedule."""
    config = SimulationConfig(duration=10.0, seed=3)
    both = simulate(config, trial=2, redraw=("behavior", "community"))
    assert np.array_equal(both.frames, short.frames)
    assert all(np.array_equal(both.truth[k], short.truth[k]) for k in ("W", "hubs", "receptive_fields"))
    assert not any(np.array_equal(both.behavior[k].values, short.behavior[k].values) for k in BEHAVIORS)
    if "direction" in short.behavior:  # the gratings' direction is the stimulus's, not a behavior's
        assert np.array_equal(both.behavior["direction"].values, short.behavior["direction"].values)
    assert not np.array_equal(both.truth["community_times"], short.truth["community_times"])
    behavior_only = simulate(config, trial=2, redraw=("behavior",))
    assert np.array_equal(behavior_only.truth["community_times"], short.truth["community_times"])
    assert not np.array_equal(behavior_only.behavior["speed"].values, short.behavior["speed"].values)
    for bad in ({"redraw": ("stimulus",), "trial": 1}, {"redraw": ("behavior",)}):
        with pytest.raises(ValueError, match="redraw takes"):
            simulate(config, **bad)
