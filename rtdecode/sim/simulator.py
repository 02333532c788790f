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

import numpy as np

from rtdecode.data.session import Behavior, Session
from rtdecode.sim.config import BEHAVIORS, SimulationConfig
from rtdecode.sim.drives import (
    _behavior,
    _community_schedule,
    _receptive_fields,
    _stimulus,
    _visual_drive,
)

__all__ = ["DriveOffsets", "SimulationConfig", "simulate"]


# ---------------------------------------------------------------------------------------------------- public entry
def simulate(
    config: SimulationConfig = SimulationConfig(),
    progress: Callable[[float], None] | None = None,
    *,
    day_seed: int | None = None,
    offsets: DriveOffsets | None = None,
    trial: int = 0,
    redraw: tuple[str, ...] = (),
) -> Session:
    """Simulate the circuit described by `config` and return it as a Session with the ground truth attached.

    Args:
        config: the circuit; see SimulationConfig.
        progress: optional callback, called with the fraction of steps done (0, 1] after each ~1 s chunk.
        day_seed: None draws every stream from `config.seed`. An int keeps the structure (W, hubs, communities,
            receptive fields, behavior-coupled sets and gains) from `config.seed` and draws the stimulus,
            behavior, community schedule, spikes and jitter from SeedSequence([config.seed, day_seed]): another
            recording of the same circuit (rtdecode.sim.days).
        offsets: per-neuron changes of the drives (drift across days); None = none. With offsets the truth also
            holds "log_rate_offset" and "log_gain_offset" (N,).
        trial: 0 = the session. k > 0 = a repeat trial: the same circuit, stimulus, behavior and community
            schedule (every cause of activity), with the spikes and their jitter drawn afresh. Two trials agree
            only as far as the causes determine the spikes: how well any generator could match the recording
            (`rtdecode.report.generation`'s repeat-trial ceiling).
        redraw: with `trial`, causes drawn afresh too: "behavior" (speed, eye position), "community" (the hub
            schedule). Such a trial shares only the rest (e.g. the stimulus) with the session: the ceiling of a
            generator that is not given those causes (a closed loop decoding behavior it is never shown).

    Returns:
        Session on [0, duration) with spikes, uint8 frames (F, H, W), behavior "speed" (cm/s), "phi" and
        "theta" (deg), for gratings "direction" (the drift direction of each frame, radians in (-pi, pi]: a
        circular variable, decoded from the frames and the visual neurons' responses), and `truth`: "W" (N, N) float32 target x source log-rate weights, "hubs" (n_hubs,),
        "community" (N,) (hub k and its targets are k, others -1), "visual_neurons", "speed_neurons",
        "phi_neurons", "theta_neurons" (int64 index arrays), "speed_gain"/"phi_gain"/"theta_gain" (log-rate per
        SD, aligned with the index arrays), "receptive_fields" (n_visual, H, W) float32, and the community
        schedule "community_times" (K,) start times with "active_community" (K,).
    """
    c = config
    seeds = np.random.SeedSequence(c.seed).spawn(6)
    if day_seed is not None:  # same structure stream, new draws for everything that happens during a recording
        seeds[1:] = np.random.SeedSequence([c.seed, day_seed]).spawn(5)
    unknown = set(redraw) - {"behavior", "community"}
    if unknown or (redraw and not trial):
        raise ValueError(f"redraw takes 'behavior' and 'community', with a trial > 0; got {redraw!r}, trial {trial}")
    if trial:
        seeds[4:] = np.random.SeedSequence([c.seed, day_seed or 0, trial]).spawn(2)
        fresh = np.random.SeedSequence([c.seed, day_seed or 0, trial, 1]).spawn(2)
        if "behavior" in redraw:
            seeds[2] = fresh[0]
        if "community" in redraw:
            seeds[3] = fresh[1]
    streams = [np.random.Generator(np.random.PCG64(s)) for s in seeds]
    rng_struct, rng_stim, rng_beh, rng_comm, rng_spike, rng_jitter = streams
    layout = _layout(c, rng_struct)
    W = _connectivity(c, layout, rng_struct)
    rfs = _receptive_fields(c, rng_struct)
    frames, direction = _stimulus(c, rng_stim)
    frame_times = np.arange(frames.shape[0]) / c.frame_rate
    visual_drive = _visual_drive(frames, rfs, c.visual_gain)
    if offsets is not None:
        offsets.check(c.n_neurons)
        visual_drive = visual_drive * np.exp(offsets.log_gain[layout["visual"]])[None, :]
        layout = {
            **layout,
            **{f"{b}_gain": layout[f"{b}_gain"] * np.exp(offsets.log_gain[layout[b]]) for b in BEHAVIORS},
        }
    behavior = _behavior(c, rng_beh)
    comm_times, comm_active = _community_schedule(c, rng_comm)

    log_rate = None if offsets is None else offsets.log_rate
    drive = _ExternalDrive(c, layout, visual_drive, behavior, comm_times, comm_active, log_rate)
    if direction is not None:  # a stimulus variable, not a behavior that drives neurons: added after the drive
        behavior = {**behavior, "direction": Behavior(frame_times.copy(), direction, "rad")}
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
    for name in BEHAVIORS:
        truth[f"{name}_neurons"] = layout[name]
        truth[f"{name}_gain"] = layout[f"{name}_gain"]
    if offsets is not None:
        truth["log_rate_offset"] = offsets.log_rate.copy()
        truth["log_gain_offset"] = offsets.log_gain.copy()
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
        metadata={"source": "rtdecode.sim.simulator", "config": dataclasses.asdict(c)},
    )


@dataclasses.dataclass(frozen=True)
class DriveOffsets:
    """Per-neuron changes of the drives, on the log scale (what drifts between recording days).

    Attributes:
        log_rate: (N,) float64 added to each neuron's log base rate (0.1 = a 10.5% higher rate).
        log_gain: (N,) float64 added to the log of each neuron's tuning gain: its visual gain for receptive-field
            neurons, its behavior gain for speed/phi/theta neurons (the sets are disjoint, so one gain each);
            ignored for the others. Signs never flip: gains scale by exp(log_gain).
    """

    log_rate: np.ndarray
    log_gain: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_rate", np.asarray(self.log_rate, dtype=np.float64))
        object.__setattr__(self, "log_gain", np.asarray(self.log_gain, dtype=np.float64))

    def check(self, n_neurons: int) -> None:
        """Raise ValueError unless both arrays are finite with shape (n_neurons,)."""
        for name in ("log_rate", "log_gain"):
            a = getattr(self, name)
            if a.shape != (n_neurons,) or not np.all(np.isfinite(a)):
                raise ValueError(f"DriveOffsets.{name} must be finite with shape ({n_neurons},); got {a.shape}")


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
    out: dict[str, np.ndarray] = {
        "hubs": hubs,
        "community": community,
        "visual": visual,
        "speed": speed,
        "phi": phi,
        "theta": theta,
    }
    for name in BEHAVIORS:
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
        log_rate: np.ndarray | None = None,
    ) -> None:
        self.c, self.layout, self.visual_drive, self.log_rate = c, layout, visual_drive, log_rate
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
        if self.log_rate is not None:
            ext += self.log_rate[None, :]
        if c.n_hubs:
            period = np.searchsorted(self.comm_times, t, side="right") - 1
            ext[np.arange(n), lay["hubs"][self.comm_active[period]]] += c.hub_drive
        if lay["visual"].size:
            frame = np.minimum((t * c.frame_rate + 1e-9).astype(np.int64), self.visual_drive.shape[0] - 1)
            ext[:, lay["visual"]] += self.visual_drive[frame]
        for name in BEHAVIORS:
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
