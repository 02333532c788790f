"""The daemon's settings: one frozen dataclass, validated at construction, from which `rtdecode serve` generates
its options (each field's help below is the option's `--help`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAX_WARM_LEAD_MS", "ServeConfig", "backend_options"]

MAX_WARM_LEAD_MS = 20.0  # caches do not stay warm much longer than this


@dataclass(frozen=True)
class ServeConfig:
    """Daemon settings (the `rtdecode serve` options).

    Attributes:
        input: Endpoint to bind for producers (PULL). Loopback unless you say otherwise.
        output: Endpoint to bind for subscribers (PUB).
        backend: Inference backend: onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt, auto.
        threads: Inference threads (0 = all cores). One thread keeps the tail latency lowest on small CPUs: a
            spinning thread pool competes with the producer and subscriber for cores.
        memory_arena: Keep onnxruntime's CPU memory arena (the default): allocations are reused, so the process
            grows to the memory of the largest window it has decoded and stays there. --no-memory-arena lets memory
            follow the current windows at some cost in latency (docs/performance.md, Knobs).
        generate: Also publish the predicted activity of the next window (own thread and inference sessions).
        publish_windows: Also publish each decoded window's spikes as the daemon windowed them (`window` messages),
            for a monitor's incoming-spike raster: one more message per window, sent after its decode.
        temperature: Sampling temperature of the generated activity.
        top_p: Nucleus (top-p) sampling threshold of the generated activity.
        seed: Seed of the generated activity's sampling.
        record: Directory for a crash-safe recording of every message in and out.
        deadline_ms: Per-window latency budget from the closing message's arrival to the decode's publication
            (default: the window length).
        skip_backlog: When several windows close at once (a backlog, an overload), decode only the newest and
            count the rest as skipped; --no-skip decodes every window.
        streaming: Run each window's spikes through the model while it is open, so at close only the tail is
            left (same decodes within 1e-5). Default: on when the bundle and backend support it; windows that
            cannot be streamed exactly are decoded at close.
        warm_lead_ms: Streaming on CPU: re-read the model's weights into cache this long before each window's
            predicted close, on a helper thread (0 = off; at most 20). Host-dependent: measure with
            `rtdecode bench serve --modes streaming,streaming-warm`.
        start: Session start time, s (the first window starts at the first grid point at or after it).
        status_interval: Seconds between status messages.
        rcvhwm: ZeroMQ high-water mark (messages) of the input socket.
        sndhwm: ZeroMQ high-water mark (messages) of the output socket.
        curve_secret: The daemon's .key_secret file (`rtdecode keys`): CURVE-encrypt both sockets and admit only
            --allow-client keys.
        curve_allow: A client public key file (.key), or a folder of them, allowed to connect (repeatable; needs
            --curve-secret).
    """

    input: str = "tcp://127.0.0.1:5555"
    output: str = "tcp://127.0.0.1:5556"
    backend: str = "onnxruntime"
    threads: int = 1
    memory_arena: bool = True
    generate: bool = False
    publish_windows: bool = False
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int = 0
    record: Path | None = None
    deadline_ms: float | None = None
    skip_backlog: bool = field(default=True, metadata={"flags": ("--skip-backlog/--no-skip",)})
    streaming: bool | None = field(default=None, metadata={"flags": ("--streaming/--no-streaming",)})
    warm_lead_ms: float = 0.0
    start: float = 0.0
    status_interval: float = 1.0
    rcvhwm: int = 10_000
    sndhwm: int = 1_000
    curve_secret: Path | None = None
    curve_allow: tuple[Path, ...] = field(default=(), metadata={"flags": ("--allow-client",)})

    def __post_init__(self) -> None:
        if not 0 <= self.warm_lead_ms <= MAX_WARM_LEAD_MS:
            raise ValueError(
                f"warm_lead_ms must be between 0 and {MAX_WARM_LEAD_MS} ms (got {self.warm_lead_ms}): "
                "the warm-up is for caches, which do not stay warm much longer"
            )
        if self.curve_allow and self.curve_secret is None:
            raise ValueError("allowed client keys were given without --curve-secret: pass the daemon's key file too")


def backend_options(config: ServeConfig) -> dict[str, Any]:
    """The inference backend's options from the daemon settings (the onnxruntime backends take these)."""
    if not config.backend.startswith("onnxruntime"):
        return {}
    return {"memory_arena": config.memory_arena, **({"threads": config.threads} if config.threads else {})}
