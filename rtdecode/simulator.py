"""A deterministic ground-truth circuit: spikes, a stimulus movie and behavior whose causes are all known.

The demo, the tests and the analyses need data where the right answer is on file: which neurons are hubs, which
way each connection points, which neurons carry running speed or eye position. `simulate` draws a
linear-nonlinear-Poisson (LNP) network on a `dt` grid. The log-rate of neuron i at step t is

    log(base_rate) + hub drive (the hub of the active community only) + visual drive (receptive-field neurons)
        + behavior drive (coupled neurons) + sum_j W[i, j] * (exponential kernel of j's spikes, delayed)

and a spike is a Bernoulli draw with probability min(rate * dt, max_rate * dt).

Why it is fast ("minutes of data in seconds"): a spike at step s reaches its targets at step s + d, d =
synaptic_delay / dt >= 1, so the d steps of a block cannot affect one another and are drawn together. Everything
that does not depend on the network (external drive, the random numbers) is precomputed one chunk (~1 s) at a
time. The decaying synaptic state is kept in a rescaled form: g(t) = r**u * Q(t), u = steps since the chunk
start, r = exp(-dt / tau), so Q changes only when spikes arrive and the decay is folded into precomputed
thresholds. A spike happens when g > threshold, i.e. Q > threshold * r**-u: one comparison per block.

Every random component (structure, stimulus, behavior, communities, spikes, jitter) draws from its own
PCG64 stream spawned from `seed`, so the same config gives bit-identical sessions and changing, say, the stimulus
type leaves the wiring unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rtdecode.session import Behavior, Session
from rtdecode.sim_drives import (
    _behavior,
    _community_schedule,
    _receptive_fields,
    _stimulus,
    _visual_drive,
)

__all__ = ["SimulationConfig", "simulate"]

_STIMULI = ("gratings", "noise")
_BEHAVIORS = ("speed", "phi", "theta")


@dataclass(frozen=True)
class SimulationConfig:
    """Every knob of the simulated circuit; validated at construction (ValueError names the field and the fix).

    Rates and weights act on the log-rate, so a weight w multiplies the target's rate by exp(w) at its peak.

    Attributes:
        n_neurons: number of neurons N.
        duration: seconds simulated; the session is [0, duration).
        seed: non-negative int; the whole session is a function of the config.
        n_hubs: hub neurons; hub k excites its own community of (N - n_hubs) // n_hubs non-hub targets. 0 = none.
        hub_weight: log-rate kick (peak, before decay) a hub spike gives each of its community targets.
        hub_drive: log-rate added to the hub of the active community (exp(2.5) ~ 12x base while active).
        background_weight: magnitude scale of the sparse random background weights (sign +/- at random,
            magnitude uniform in [0.5, 1.5] x this).
        background_density: fraction of the off-diagonal (target, source) pairs with a background weight.
        base_rate: Hz, rate of a neuron with no drive.
        max_rate: Hz, rates are clipped here (keeps recurrent excitation from running away).
        synaptic_delay: seconds from a spike to the start of its effect; >= dt, rounded to whole steps.
        synaptic_tau: seconds, decay time constant of the exponential synaptic kernel.
        community_switch: seconds, mean (exponential) dwell time of one community being active; the next active
            community is drawn uniformly among the others, so hubs take turns.
        frame_rate: Hz of the stimulus movie.
        frame_shape: (height, width) pixels of the movie.
        stimulus: "gratings" (full-field drifting gratings; direction changes every 2-4 s) or "noise" (spatially
            and temporally smoothed Gaussian noise movie).
        n_visual: non-hub neurons driven by a Gabor receptive field.
        visual_gain: log-rate per unit of normalised receptive-field response (rectified, RMS-normalised).
        behavior_rate: Hz at which speed, phi and theta are sampled (and stored).
        n_speed: neurons coupled to running speed (disjoint from hubs, visual and the other behavior sets).
        n_phi: neurons coupled to horizontal eye position phi (disjoint, as above).
        n_theta: neurons coupled to vertical eye position theta (disjoint, as above).
        behavior_gain: log-rate per standard deviation of the behavior variable (magnitude scale; each coupled
            neuron has gain +/- uniform[0.75, 1.25] x this, half of each sign).
        dt: seconds per simulation step.
    """

    n_neurons: int = 300
    duration: float = 600.0
    seed: int = 0
    n_hubs: int = 3
    hub_weight: float = 1.0
    hub_drive: float = 2.5
    background_weight: float = 0.3
    background_density: float = 0.02
    base_rate: float = 2.5
    max_rate: float = 200.0
    synaptic_delay: float = 0.002
    synaptic_tau: float = 0.010
    community_switch: float = 2.0
    frame_rate: float = 20.0
    frame_shape: tuple[int, int] = (32, 64)
    stimulus: str = "gratings"
    n_visual: int = 60
    visual_gain: float = 1.0
    behavior_rate: float = 20.0
    n_speed: int = 40
    n_phi: int = 40
    n_theta: int = 40
    behavior_gain: float = 1.0
    dt: float = 0.001

    def __post_init__(self) -> None:
        if isinstance(self.frame_shape, (list, tuple)):  # JSON gives a list back; keep the config hashable
            object.__setattr__(self, "frame_shape", tuple(self.frame_shape))
        _validate(self)

    @property
    def n_steps(self) -> int:
        """Simulation steps covering [0, duration)."""
        return int(math.floor(self.duration / self.dt + 1e-9))

    @property
    def delay_steps(self) -> int:
        """The synaptic delay in whole steps (>= 1)."""
        return max(1, int(round(self.synaptic_delay / self.dt)))


def _validate(c: SimulationConfig) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(f"SimulationConfig: {msg}")

    for name in ("n_neurons", "seed", "n_hubs", "n_visual", "n_speed", "n_phi", "n_theta"):
        v = getattr(c, name)
        need(isinstance(v, (int, np.integer)) and not isinstance(v, bool), f"{name} must be an int; got {v!r}")
        need(v >= 0, f"{name} must be >= 0; got {v}")
    need(c.n_neurons >= 1, "n_neurons must be >= 1")
    if c.n_hubs:
        need(
            (c.n_neurons - c.n_hubs) // c.n_hubs >= 1,
            f"n_neurons={c.n_neurons} is too small for n_hubs={c.n_hubs}: each hub needs at least one target "
            f"(need n_neurons >= {2 * c.n_hubs})",
        )
    used = c.n_hubs + c.n_visual + c.n_speed + c.n_phi + c.n_theta
    need(
        used <= c.n_neurons,
        f"n_hubs + n_visual + n_speed + n_phi + n_theta = {used} exceeds n_neurons={c.n_neurons}; "
        "these sets are disjoint, so lower them or raise n_neurons",
    )
    positive = ("duration", "dt", "base_rate", "max_rate", "synaptic_tau", "community_switch", "frame_rate",
                "behavior_rate")  # fmt: skip
    non_negative = ("hub_weight", "hub_drive", "background_weight", "background_density", "visual_gain",
                    "behavior_gain", "synaptic_delay")  # fmt: skip
    for name in positive + non_negative:
        v = getattr(c, name)
        number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        need(number and math.isfinite(v), f"{name} must be a finite number; got {v!r}")
        need(v > 0 if name in positive else v >= 0, f"{name} must be {'> 0' if name in positive else '>= 0'}; got {v}")
    need(c.duration >= c.dt, f"duration={c.duration} s is shorter than one step dt={c.dt} s")
    need(c.synaptic_delay >= c.dt * (1 - 1e-9), f"synaptic_delay={c.synaptic_delay} s must be >= dt={c.dt} s")
    need(c.max_rate > c.base_rate, f"max_rate={c.max_rate} Hz must exceed base_rate={c.base_rate} Hz")
    need(c.max_rate * c.dt <= 1.0, f"max_rate * dt = {c.max_rate * c.dt:g} must be <= 1 (lower dt or max_rate)")
    need(0.0 <= c.background_density <= 1.0, f"background_density must be in [0, 1]; got {c.background_density}")
    need(c.stimulus in _STIMULI, f"stimulus must be one of {_STIMULI}; got {c.stimulus!r}")
    shape = c.frame_shape
    ints = isinstance(shape, tuple) and all(isinstance(s, (int, np.integer)) for s in shape)
    need(ints and len(shape) == 2 and min(shape) >= 4, f"frame_shape must be (height, width) ints >= 4; got {shape!r}")


# ---------------------------------------------------------------------------------------------------- public entry
def simulate(config: SimulationConfig = SimulationConfig(), progress: Callable[[float], None] | None = None) -> Session:
    """Simulate the circuit described by `config` and return it as a Session with the ground truth attached.

    Args:
        config: the circuit; see SimulationConfig.
        progress: optional callback, called with the fraction of steps done (0, 1] after each ~1 s chunk.

    Returns:
        Session on [0, duration) with spikes, uint8 frames (F, H, W), behavior "speed" (cm/s), "phi" and
        "theta" (deg), and `truth`: "W" (N, N) float32 target x source log-rate weights, "hubs" (n_hubs,),
        "community" (N,) (hub k and its targets are k, others -1), "visual_neurons", "speed_neurons",
        "phi_neurons", "theta_neurons" (int64 index arrays), "speed_gain"/"phi_gain"/"theta_gain" (log-rate per
        SD, aligned with the index arrays), "receptive_fields" (n_visual, H, W) float32, and the community
        schedule "community_times" (K,) start times with "active_community" (K,).
    """
    c = config
    streams = [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(c.seed).spawn(6)]
    rng_struct, rng_stim, rng_beh, rng_comm, rng_spike, rng_jitter = streams
    layout = _layout(c, rng_struct)
    W = _connectivity(c, layout, rng_struct)
    rfs = _receptive_fields(c, rng_struct)
    frames = _stimulus(c, rng_stim)
    frame_times = np.arange(frames.shape[0]) / c.frame_rate
    visual_drive = _visual_drive(frames, rfs, c.visual_gain)
    behavior = _behavior(c, rng_beh)
    comm_times, comm_active = _community_schedule(c, rng_comm)

    drive = _ExternalDrive(c, layout, visual_drive, behavior, comm_times, comm_active)
    steps, neurons = _run_network(c, W, drive, rng_spike, progress)
    # Times jittered uniformly inside their step so they are not on a grid; order within a step follows jitter.
    times = (steps + rng_jitter.random(steps.size)) * c.dt
    times = np.minimum(times, np.nextafter(c.duration, -np.inf))
    order = np.argsort(times, kind="stable")

    truth: dict[str, np.ndarray] = {
        "W": W.astype(np.float32),
        "hubs": layout["hubs"],
        "community": layout["community"],
        "receptive_fields": rfs.reshape(-1, *c.frame_shape).astype(np.float32),
        "community_times": comm_times,
        "active_community": comm_active,
    }
    truth["visual_neurons"] = layout["visual"]
    for name in _BEHAVIORS:
        truth[f"{name}_neurons"] = layout[name]
        truth[f"{name}_gain"] = layout[f"{name}_gain"]
    return Session(
        spike_times=times[order],
        spike_neurons=neurons[order],
        n_neurons=c.n_neurons,
        start=0.0,
        stop=c.duration,
        frames=frames,
        frame_times=frame_times,
        behavior=behavior,
        truth=truth,
        metadata={"source": "rtdecode.simulator", "config": dataclasses.asdict(c)},
    )


# ---------------------------------------------------------------------------------------------------- structure
def _layout(c: SimulationConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Pick hubs, communities, and the disjoint visual / behavior sets from one random permutation."""
    perm = rng.permutation(c.n_neurons)
    sizes = [c.n_hubs, c.n_visual, c.n_speed, c.n_phi, c.n_theta]
    bounds = np.cumsum([0, *sizes])
    hubs, visual, speed, phi, theta = (np.sort(perm[a:b]).astype(np.int64) for a, b in zip(bounds[:-1], bounds[1:]))
    community = np.full(c.n_neurons, -1, dtype=np.int64)
    if c.n_hubs:
        # Communities are a random partition of the non-hubs, independent of the visual/behavior roles.
        others = rng.permutation(np.setdiff1d(np.arange(c.n_neurons), hubs))
        size = (c.n_neurons - c.n_hubs) // c.n_hubs
        for k, h in enumerate(hubs):
            community[others[k * size : (k + 1) * size]] = k
            community[h] = k
    out = {"hubs": hubs, "community": community, "visual": visual, "speed": speed, "phi": phi, "theta": theta}
    for name in _BEHAVIORS:
        n = out[name].size
        signs = rng.permutation(np.where(np.arange(n) % 2 == 0, 1.0, -1.0))  # balanced +/- gains
        out[f"{name}_gain"] = signs * c.behavior_gain * rng.uniform(0.75, 1.25, n)
    return out


def _connectivity(c: SimulationConfig, layout: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(N, N) float64 target x source: W[i, j] is the log-rate kick neuron j's spike gives neuron i."""
    n = c.n_neurons
    mask = rng.random((n, n)) < c.background_density
    sign = np.where(rng.random((n, n)) < 0.5, 1.0, -1.0)
    W = mask * sign * c.background_weight * rng.uniform(0.5, 1.5, (n, n))
    for k, h in enumerate(layout["hubs"]):
        targets = np.flatnonzero(layout["community"] == k)
        W[targets, h] = c.hub_weight  # overrides any background entry: the hub edge is the truth
    np.fill_diagonal(W, 0.0)
    return W


class _ExternalDrive:
    """Everything in the log-rate that does not depend on the network's own spikes, one chunk at a time."""

    def __init__(
        self,
        c: SimulationConfig,
        layout: dict[str, np.ndarray],
        visual_drive: np.ndarray,
        behavior: dict[str, Behavior],
        comm_times: np.ndarray,
        comm_active: np.ndarray,
    ) -> None:
        self.c, self.layout, self.visual_drive = c, layout, visual_drive
        self.comm_times, self.comm_active = comm_times, comm_active
        # z-score each behavior on its own trace, so behavior_gain is "log-rate per SD"
        self.z = {}
        for name, b in behavior.items():
            self.z[name] = (b.times, (b.values - b.values.mean()) / (b.values.std() + 1e-12))

    def chunk(self, step0: int, n: int) -> np.ndarray:
        """(n, N) float64 external log-rate for steps step0 .. step0 + n - 1."""
        c, lay = self.c, self.layout
        t = (step0 + np.arange(n)) * c.dt  # (n,) step start times
        ext = np.full((n, c.n_neurons), math.log(c.base_rate))
        if c.n_hubs:
            period = np.searchsorted(self.comm_times, t, side="right") - 1
            ext[np.arange(n), lay["hubs"][self.comm_active[period]]] += c.hub_drive
        if lay["visual"].size:
            frame = np.minimum((t * c.frame_rate + 1e-9).astype(np.int64), self.visual_drive.shape[0] - 1)
            ext[:, lay["visual"]] += self.visual_drive[frame]
        for name in _BEHAVIORS:
            if lay[name].size:
                times, z = self.z[name]
                ext[:, lay[name]] += np.interp(t, times, z)[:, None] * lay[f"{name}_gain"][None, :]
        return ext


def _chunk_len(c: SimulationConfig) -> int:
    """Steps per chunk: ~1 s, a multiple of the delay, and short enough that r**-L stays far from overflow."""
    d = c.delay_steps
    max_len = max(d, int(100.0 * c.synaptic_tau / c.dt))  # r**-L <= e**100 ~ 1e43, far below 1e308
    return max(d, (min(int(round(1.0 / c.dt)), max_len) // d) * d)


def _run_network(
    c: SimulationConfig,
    W: np.ndarray,
    drive: _ExternalDrive,
    rng: np.random.Generator,
    progress: Callable[[float], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the spikes; returns (step index (S,) int64, neuron (S,) int32) in step order.

    Spike rule at step t (u = t - chunk start): U < min(exp(ext + g) dt, max_rate dt) with U uniform. With
    E = -log U ~ Exp(1) this is g > -E - ext - log(dt) (and E > -log(max_rate dt)), i.e. Q > thr * r**-u.
    """
    n, d = c.n_neurons, c.delay_steps
    r = math.exp(-c.dt / c.synaptic_tau)
    chunk_len = _chunk_len(c)
    growth = r ** -np.arange(chunk_len, dtype=np.float64)  # (L,) r**-u
    lower = np.tri(d)  # (d, d): lower[row, k] = 1 if an arrival at block offset k is felt at offset row
    WT = np.ascontiguousarray(W.T)  # (source, target): a spiking source's row is contiguous
    log_dt, min_e = math.log(c.dt), -math.log(c.max_rate * c.dt)

    q = np.zeros(n)  # rescaled synaptic state at the current block's first step
    k = src = np.zeros(0, dtype=np.int64)  # offset and source of the previous block's spikes, still in flight
    out_steps, out_neurons = [], []
    total = c.n_steps
    for step0 in range(0, total, chunk_len):
        length = min(chunk_len, total - step0)
        n_blocks = -(-length // d)  # whole blocks; padding steps never fire
        e = rng.standard_exponential((length, n))
        thr = np.full((n_blocks * d, n), np.inf)
        thr[:length] = -e - drive.chunk(step0, length) - log_dt
        thr[:length][e <= min_e] = np.inf  # the max_rate clip
        thr *= growth[: n_blocks * d, None]
        thr3 = thr.reshape(n_blocks, d, n)
        fired = np.zeros((n_blocks, d, n), dtype=bool)
        # mix[b][row, k]: weight in Q at offset `row` of block b of a spike sent from offset k of block b - 1
        # (it arrives exactly d steps later, at offset k of block b, scaled by r**-arrival)
        mix = lower[None] * growth[: n_blocks * d].reshape(n_blocks, d)[:, None, :]  # (n_blocks, d, d)
        for b in range(n_blocks):
            if src.size:
                qb = q + mix[b][:, k] @ WT[src]  # (d, N)
                q = qb[-1]
            else:
                qb = q
            np.greater(qb, thr3[b], out=fired[b])
            k, src = fired[b].nonzero()
        # Move to the next chunk's frame: g = r**u Q, so Q scales by r**L; in-flight offsets k are unchanged.
        q = q * r ** (n_blocks * d)
        steps, neurons = fired.reshape(n_blocks * d, n)[:length].nonzero()
        out_steps.append(steps + step0)
        out_neurons.append(neurons.astype(np.int32))
        if progress is not None:
            progress((step0 + length) / total)
    return np.concatenate(out_steps).astype(np.int64), np.concatenate(out_neurons)
