"""The `describe` message's body: everything a client needs to talk to this daemon, without reading the bundle.

A rig programmer should not have to open `manifest.json` to learn the window grid, the unit IDs the model knows,
which behavior names it accepts or what frame size it takes: the daemon says so on the wire (docs/protocol.md,
"describe"), on start and whenever asked. Built once per daemon from the bundle and the serve config; only
plain msgpack types (str, int, float, bool, list, map, nil).
"""

from __future__ import annotations

from typing import Any

from rtdecode.data.vocab import QUANTUM_TOLERANCE
from rtdecode.runtime import Bundle
from rtdecode.serve.config import ServeConfig
from rtdecode.serve.sequence import MAX_SOURCES
from rtdecode.wire.protocol import (
    MAX_BEHAVIOR_SAMPLES,
    MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    MAX_SPIKES,
    MAX_SRC_CHARS,
    PROTOCOL,
)

__all__ = ["describe"]


def describe(
    bundle: Bundle, config: ServeConfig, *, backend: str, streaming: bool, deadline_ms: float
) -> dict[str, Any]:
    """The description of a daemon serving `bundle` with `config` (docs/protocol.md lists every key)."""
    w = bundle.window
    units: dict[str, str] = bundle.manifest.get("units", {})
    frames = bundle.frames
    frame_rate = frames.n_frames / w.frame_window if frames.enabled and w.frame_window > 0 else None
    return {
        "protocol": PROTOCOL,
        "ready": True,
        "model": {
            "sha256": bundle.source.get("sha256", ""),
            "step": bundle.source.get("step") or 0,
            "backend": backend,
            "streaming": bool(streaming),
            "generate": bool(config.generate),
            "decodes": bool(bundle.targets),
            "publishes_windows": bool(config.publish_windows),
        },
        "window": {
            "length_s": w.window,
            "bins_per_window": w.bins_per_window,
            "origin_s": w.origin,
            "start_s": config.start,
            "quantum_s": w.dt,
            "quantum_tolerance": QUANTUM_TOLERANCE,
            "history_s": w.prev_window,
            "context_at": w.context_at,
            "token_order": w.token_order,
            "time_of_index": "t_start = origin_s + (window * bins_per_window) * quantum_s; [t_start, t_start + length_s)",
        },
        "neurons": {"n": bundle.vocab.n_neurons, "unit_ids": [int(u) for u in bundle.vocab.neuron_ids]},
        "behavior_inputs": [
            {"name": b.name, "unit": units.get(b.name, ""), "window_s": b.input_window} for b in bundle.behavior_inputs
        ],
        "targets": [_target(b.name, b.kind, list(b.bins), units.get(b.name, "")) for b in bundle.targets],
        "frames": (
            {
                "height": frames.height,
                "width": frames.width,
                "dtype": "uint8",
                "n_frames": frames.n_frames,
                "window_s": w.frame_window,
                "rate_hz": frame_rate,
            }
            if frames.enabled
            else None
        ),
        "limits": {
            "header_bytes": MAX_HEADER_BYTES,
            "spikes_per_message": MAX_SPIKES,
            "behavior_samples_per_message": MAX_BEHAVIOR_SAMPLES,
            "frame_bytes": MAX_FRAME_BYTES,
            "src_chars": MAX_SRC_CHARS,
            "producers_tracked": MAX_SOURCES,
            "input_queue_messages": config.rcvhwm,
            "output_queue_messages": config.sndhwm,
            "spikes_per_window": w.max_spikes,
            "history_spikes": w.prev_block_size,
        },
        "deadline_ms": float(deadline_ms),
        "status_interval_s": config.status_interval,
    }


def _target(name: str, kind: str, bins: list[float], unit: str) -> dict[str, Any]:
    """One decoded variable. A circular target is published in radians in (-pi, pi], whatever unit the session
    stored it in; a classification target publishes a class index (0 to len(bins), as a float like every value)
    into `bins`, edges in `unit`; a regression target publishes the value in `unit`."""
    target: dict[str, Any] = {"name": name, "kind": kind, "unit": "rad" if kind == "circular" else unit}
    if kind == "classification":
        target["bins"] = bins
    return target
