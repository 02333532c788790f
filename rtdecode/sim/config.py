"""The simulated circuit's knobs: one frozen, validated dataclass shared by the network and its drives."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BEHAVIORS", "SimulationConfig"]

_STIMULI = ("gratings", "noise")
BEHAVIORS = ("speed", "phi", "theta")


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
