"""The simulator's external drives: the stimulus movie and receptive fields, the behavior traces (running speed,
eye phi/theta) and the schedule of which hub community is active. Each is a pure function of the config and
its own random stream, so `rtdecode.sim.simulator` can change the network without changing what drives it.
"""

from __future__ import annotations

import math

import numpy as np

from rtdecode.data.session import Behavior
from rtdecode.sim.config import SimulationConfig


def _receptive_fields(c: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """(n_visual, H * W) float64 Gabor filters, zero mean and unit L2 norm, tuned near the grating frequency."""
    h, w = c.frame_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((c.n_visual, h * w))
    for i in range(c.n_visual):
        wavelength = _grating_wavelength(c) * rng.uniform(0.75, 1.25)
        sigma = 0.4 * wavelength
        x0, y0 = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        xr = (xx - x0) * np.cos(theta) + (yy - y0) * np.sin(theta)
        env = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
        g = (env * np.cos(2 * np.pi * xr / wavelength + phase)).ravel()
        g -= g.mean()
        out[i] = g / np.linalg.norm(g)
    return out


def _grating_wavelength(c: SimulationConfig) -> float:
    """Pixels per grating cycle: five cycles across the frame width."""
    return c.frame_shape[1] / 5.0


# ---------------------------------------------------------------------------------------------------- stimulus
def _stimulus(c: SimulationConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """(F, H, W) uint8 movie, F = floor(duration * frame_rate); 127.5 is mean gray, 0/255 full contrast. Also the
    drift direction of each frame, radians in (-pi, pi], for gratings (None for noise, which has none)."""
    n_frames = max(1, int(math.floor(c.duration * c.frame_rate + 1e-9)))
    out = np.empty((n_frames, *c.frame_shape), dtype=np.uint8)
    if c.stimulus == "gratings":
        return out, _gratings(c, out, rng)
    _noise(c, out, rng)
    return out, None


def _to_uint8(contrast: np.ndarray) -> np.ndarray:
    """Contrast in [-1, 1] -> uint8 gray levels (done per chunk so the float movie never exists whole)."""
    return np.clip(np.rint(127.5 + 127.5 * contrast), 0, 255).astype(np.uint8)


def _gratings(c: SimulationConfig, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill `out` with drifting sinusoids: 2 Hz, one of 8 directions and a random phase per 2-4 s epoch. Returns
    each frame's drift direction, radians in (-pi, pi] (a circular variable to decode)."""
    n_frames, h, w = out.shape
    t = np.arange(n_frames) / c.frame_rate
    n_epochs = int(c.duration / 2.0) + 2
    starts = np.concatenate([[0.0], np.cumsum(rng.uniform(2.0, 4.0, n_epochs))])
    directions = rng.integers(0, 8, n_epochs + 1) * (np.pi / 4)
    phase0 = rng.uniform(0, 2 * np.pi, n_epochs + 1)
    epoch = np.searchsorted(starts, t, side="right") - 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    k = 2 * np.pi / _grating_wavelength(c)
    for e in np.unique(epoch):  # one vectorised block per epoch
        sel = np.flatnonzero(epoch == e)
        proj = k * (np.cos(directions[e]) * xx + np.sin(directions[e]) * yy)  # (H, W) radians along the drift
        temporal = (2 * np.pi * 2.0 * (t[sel] - starts[e]) + phase0[e]).astype(np.float32)  # (n,) 2 Hz drift
        out[sel] = _to_uint8(np.sin(proj[None] - temporal[:, None, None]))
    return np.angle(np.exp(1j * directions[epoch]))  # wrapped to (-pi, pi]


def _noise(c: SimulationConfig, out: np.ndarray, rng: np.random.Generator) -> None:
    """Fill `out` with Gaussian noise smoothed in space (FFT blur, sigma 2 px) and time (AR(1), 100 ms)."""
    n_frames, h, w = out.shape
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2 * (np.pi * 2.0) ** 2 * (fy**2 + fx**2))  # Fourier transform of the Gaussian blur
    rho = math.exp(-1.0 / (c.frame_rate * 0.1))
    state = np.zeros((h, w))
    chunk = 1000
    for a in range(0, n_frames, chunk):
        white = rng.standard_normal((min(chunk, n_frames - a), h, w))
        smooth = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=(h, w))
        smooth /= smooth.std()
        for i in range(smooth.shape[0]):  # AR(1) keeps unit variance: rho**2 + (1 - rho**2) = 1
            state = rho * state + math.sqrt(1 - rho**2) * smooth[i]
            smooth[i] = state
        out[a : a + smooth.shape[0]] = _to_uint8(smooth / 3.0)  # +/- 3 SD spans the full contrast range


def _visual_drive(frames: np.ndarray, rfs: np.ndarray, gain: float) -> np.ndarray:
    """(F, n_visual) log-rate drive: gain * relu(RF . frame / RMS over the movie).

    RMS normalisation makes a one-SD response worth `gain` whatever the stimulus contrast, so gratings and noise
    drive visual neurons comparably.
    """
    dots = np.empty((frames.shape[0], rfs.shape[0]))
    chunk = 2000
    for a in range(0, frames.shape[0], chunk):
        x = frames[a : a + chunk].reshape(-1, rfs.shape[1]).astype(np.float64)  # (F_chunk, H*W)
        dots[a : a + chunk] = ((x - 127.5) / 127.5) @ rfs.T
    rms = np.sqrt(np.mean(dots**2, axis=0)) + 1e-12
    return gain * np.maximum(dots / rms, 0.0)


# ---------------------------------------------------------------------------------------------------- behavior
def _behavior(c: SimulationConfig, rng: np.random.Generator) -> dict[str, Behavior]:
    """Running speed (softplus of a 2 s OU process, cm/s) and saccadic eye position phi/theta (deg)."""
    n = max(1, int(math.floor(c.duration * c.behavior_rate + 1e-9)))
    times = np.arange(n) / c.behavior_rate
    speed = 8.0 * np.logaddexp(0.0, 1.5 * _ou(n, 2.0 * c.behavior_rate, rng))
    # Saccades: conjugate jumps at Poisson times (mean 1.5 s apart) to new fixations, plus slow small drift.
    n_sacc = int(c.duration / 1.5 * 2) + 10
    jumps = np.cumsum(rng.exponential(1.5, n_sacc))
    fixation = np.searchsorted(jumps, times, side="right")
    phi = rng.normal(0.0, 10.0, n_sacc + 1)[fixation] + 0.5 * _ou(n, 0.5 * c.behavior_rate, rng)
    theta = rng.normal(0.0, 6.0, n_sacc + 1)[fixation] + 0.3 * _ou(n, 0.5 * c.behavior_rate, rng)
    return {
        "speed": Behavior(times, speed, "cm/s"),
        "phi": Behavior(times, phi, "deg"),
        "theta": Behavior(times, theta, "deg"),
    }


def _ou(n: int, tau_samples: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) stationary unit-variance AR(1) (discretised Ornstein-Uhlenbeck) with time constant in samples."""
    rho = math.exp(-1.0 / tau_samples)
    noise = rng.standard_normal(n) * math.sqrt(1 - rho**2)
    out = np.empty(n)
    x = rng.standard_normal()
    for i in range(n):
        x = rho * x + noise[i]
        out[i] = x
    return out


def _community_schedule(c: SimulationConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start times (K,) float64 and active community (K,) int64 of each dwell period; consecutive ones differ."""
    if c.n_hubs == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    starts = [0.0]
    while starts[-1] < c.duration:
        starts.append(starts[-1] + rng.exponential(c.community_switch))
    starts_arr = np.asarray(starts[:-1])
    active = np.empty(starts_arr.size, dtype=np.int64)
    active[0] = rng.integers(c.n_hubs)
    for k in range(1, active.size):
        step = rng.integers(1, c.n_hubs) if c.n_hubs > 1 else 0  # uniform among the *other* communities
        active[k] = (active[k - 1] + step) % c.n_hubs
    return starts_arr, active


# ---------------------------------------------------------------------------------------------------- dynamics
