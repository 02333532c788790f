"""The token space: the time grid a session is cut into (`WindowConfig`) and the token vocabularies (`Vocab`).

Both travel with every checkpoint and bundle (JSON), so training, export and the daemon agree on which window
and quantum a spike falls in and which token it becomes (the semantics are in `rtdecode.data.tokenizer`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["QUANTUM_TOLERANCE", "Vocab", "WindowConfig", "quantize", "quantize_floor"]

QUANTUM_TOLERANCE = 1e-6  # in units of dt; see the module docstring


def _as_quanta(seconds: float, dt: float, what: str) -> int:
    """`seconds` as a whole number of `dt` quanta, or a ValueError saying why not."""
    n = round(seconds / dt)
    if n <= 0 or not math.isclose(n * dt, seconds, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"{what} ({seconds} s) must be a positive whole multiple of dt ({dt} s)")
    return int(n)


@dataclass(frozen=True)
class WindowConfig:
    """How a stream of spikes is cut into windows and tokens.

    Args:
        window: current window length, s (release: 0.05). Windows tile time without overlap.
        prev_window: history length before each window, s (release: 0.05; longer gives more context).
        dt: time quantum, s (release: 0.01). window and prev_window must be whole multiples of it.
        frame_window: video before the window end fed to the model, s (release: 0.15).
        block_size: token slots for a current window, SOS and EOS included (release: 100). 0 = derive it from the
            training data (`rtdecode.data.budget`): a run config may say 0, a trained model always has a number.
        prev_block_size: token slots for the history (no SOS/EOS); 0 = derive it, as block_size.
        origin: time, s, at which the window grid starts; windows start at origin + k * window.
        context_at: "end" (the reference) reads a window's context (its frame_window of video, its behavior
            inputs) up to the window's end; "start" up to its start, so the context is final when the window opens:
            a live stream never has to re-run the window's spikes because a frame arrived while it was open (one
            window less recent video, for a real-time close at rig scale).
        token_order: order of a window's tokens inside one time quantum. "neuron" (the reference): by neuron
            index. "time": by spike time (then neuron index), the order spikes arrive in, so a live stream can run
            a spike through the model as soon as a later one has arrived instead of waiting for its quantum to
            end: at rig scale the close is then left with the last acquisition block, not the last quantum.
            A model is trained in one order and served in the same (it is part of the window config).
    """

    window: float = 0.05
    prev_window: float = 0.05
    dt: float = 0.01
    frame_window: float = 0.15
    block_size: int = 100
    prev_block_size: int = 100
    origin: float = 0.0
    context_at: str = "end"
    token_order: str = "neuron"

    def __post_init__(self) -> None:
        if self.context_at not in ("end", "start"):
            raise ValueError(f'context_at must be "end" or "start"; got {self.context_at!r}')
        if self.token_order not in ("neuron", "time"):
            raise ValueError(f'token_order must be "neuron" or "time"; got {self.token_order!r}')
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise ValueError(f"dt must be a positive number of seconds; got {self.dt}")
        _as_quanta(self.window, self.dt, "window")
        _as_quanta(self.prev_window, self.dt, "prev_window")
        if self.frame_window < 0:
            raise ValueError(f"frame_window must be >= 0; got {self.frame_window}")
        if self.block_size != 0 and self.block_size < 3:
            raise ValueError(f"block_size must be >= 3 (SOS, one spike, EOS), or 0 to derive it; got {self.block_size}")
        if self.prev_block_size < 0:
            raise ValueError(f"prev_block_size must be >= 1, or 0 to derive it; got {self.prev_block_size}")
        if not math.isfinite(self.origin):
            raise ValueError(f"origin must be finite; got {self.origin}")

    @property
    def bins_per_window(self) -> int:
        """B: quanta per current window."""
        return _as_quanta(self.window, self.dt, "window")

    @property
    def prev_bins(self) -> int:
        """P: quanta per history window."""
        return _as_quanta(self.prev_window, self.dt, "prev_window")

    @property
    def has_budgets(self) -> bool:
        """Whether both token budgets are numbers (not 0 = still to be derived from data)."""
        return self.block_size > 0 and self.prev_block_size > 0

    def require_budgets(self) -> None:
        """Raise ValueError unless both budgets are resolved: tokens cannot be packed into "derive later"."""
        if not self.has_budgets:
            raise ValueError(
                "this window config derives its token budgets from the training data (block_size or "
                "prev_block_size = 0); resolve them first (rtdecode.data.budget.budget_report) or set them"
            )

    @property
    def max_spikes(self) -> int:
        """Spike tokens that fit in a current window (block_size minus SOS and EOS)."""
        self.require_budgets()
        return self.block_size - 2

    def context_time(self, start: Any, end: Any) -> Any:
        """The time up to which a window [start, end) reads its context (`context_at`); arrays or floats."""
        return start if self.context_at == "start" else end

    def window_start(self, k: int | np.ndarray) -> Any:
        """Start time(s), s, of absolute window index k."""
        return self.origin + (np.asarray(k) * self.bins_per_window) * self.dt

    def window_index(self, t: float) -> int:
        """Absolute index of the window containing time t (the same quantisation as the spikes)."""
        return int(quantize(np.array([t]), self)[0]) // self.bins_per_window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowConfig:
        allowed = set(cls.__dataclass_fields__)
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown window config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**d)


@dataclass(frozen=True)
class Vocab:
    """Token vocabularies, serialisable to JSON so checkpoints and bundles carry them.

    Args:
        n_neurons: N; neuron ID tokens are 0..N-1.
        n_time: number of time-offset tokens before the specials (max of B and P).
        neuron_ids: (N,) acquisition unit IDs, index i <-> unit neuron_ids[i]; the daemon maps incoming unit IDs
            through it and counts unknown ones.
    """

    n_neurons: int
    n_time: int
    neuron_ids: tuple[int, ...] = ()

    @classmethod
    def for_config(cls, config: WindowConfig, n_neurons: int, neuron_ids: Any = None) -> Vocab:
        ids = tuple(int(i) for i in (range(n_neurons) if neuron_ids is None else neuron_ids))
        if len(ids) != n_neurons:
            raise ValueError(f"neuron_ids has {len(ids)} entries for {n_neurons} neurons")
        return cls(n_neurons=n_neurons, n_time=max(config.bins_per_window, config.prev_bins), neuron_ids=ids)

    # ID vocabulary
    @property
    def id_sos(self) -> int:
        return self.n_neurons

    @property
    def id_eos(self) -> int:
        return self.n_neurons + 1

    @property
    def id_pad(self) -> int:
        return self.n_neurons + 2

    @property
    def id_size(self) -> int:
        return self.n_neurons + 3

    # time-offset vocabulary
    @property
    def dt_sos(self) -> int:
        return self.n_time

    @property
    def dt_eos(self) -> int:
        return self.n_time + 1

    @property
    def dt_pad(self) -> int:
        return self.n_time + 2

    @property
    def dt_size(self) -> int:
        return self.n_time + 3

    def to_json(self) -> str:
        return json.dumps({"n_neurons": self.n_neurons, "n_time": self.n_time, "neuron_ids": list(self.neuron_ids)})

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        d = json.loads(text)
        return cls(n_neurons=int(d["n_neurons"]), n_time=int(d["n_time"]), neuron_ids=tuple(d["neuron_ids"]))


def quantize_floor(times: np.ndarray, config: WindowConfig) -> np.ndarray:
    """Global time quanta of `times` as whole-valued float64 (NaN stays NaN, so callers can range-check first)."""
    q = np.subtract(times, config.origin, dtype=np.float64)
    q /= config.dt
    q += QUANTUM_TOLERANCE
    return np.floor(q, out=q)


def quantize(times: np.ndarray, config: WindowConfig) -> np.ndarray:
    """Global time quanta of finite `times` (s): (S,) float64 -> (S,) int64. See the module docstring."""
    return quantize_floor(times, config).astype(np.int64)
