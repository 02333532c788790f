"""The Decoder: behavior decoding and KV-cached generation from a bundle, in numpy + a backend.

Inputs are the same batch arrays training builds (`ids`, `dts`, `lengths`, `prev_*`, `frames`, `in_*`), made by
the shared tokenizer (`pack_tokens`) from a live `ClosedWindow` or from a `TokenizedSession`; `window_feeds`
builds them for one live window. Outputs are in the data's units (regression de-normalised; classification as
the class index; circular as the angle atan2(sin, cos) of the head's (cos, sin), radians in (-pi, pi]).

Generation keeps a fixed-size KV cache (layers, batch, heads, block_size slots, head_dim) allocated once per batch
size; each step the backend returns only the new tokens' keys/values and they are written in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtdecode.core.config import BehaviorSpec
from rtdecode.core.metrics import angle_of
from rtdecode.data.alignment import behavior_input_samples, normalise_frames
from rtdecode.data.tokenizer import token_inputs
from rtdecode.data.window import ClosedWindow
from rtdecode.runtime.backends import Backend, create_backend
from rtdecode.runtime.bundle import STREAM_GRAPH_VERSION, Bundle
from rtdecode.runtime.sampling import WindowSampler

__all__ = ["Decoder"]


class Decoder:
    """Runs a bundle. `backend` is a name (see rtdecode.runtime.backends) or a Backend instance."""

    def __init__(self, bundle: Bundle | str, backend: str | Backend = "auto", **backend_options: Any) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.backend = create_backend(self.bundle, backend, **backend_options) if isinstance(backend, str) else backend
        self.window = self.bundle.window
        self.vocab = self.bundle.vocab
        self._behavior_norm = self.bundle.norm.behavior
        self._frame_norm = self.bundle.norm.frames
        self.targets = self.bundle.targets
        self._decode_inputs = self.bundle.input_names("decode") if self.can_decode else []
        self._context_inputs = self.bundle.input_names("context")
        # the context graph's memories (the step and stream graphs' inputs); a count head's output comes after them
        names = self.bundle.output_names("context")
        self.has_count_head = bool(names) and names[-1] == "count_log_rate"
        self._context_outputs = names[:-1] if self.has_count_head else names
        c = self.bundle.cache
        self._cache_shape = (c.layers, 0, c.heads, c.slots, c.head_dim)
        self._cache_k = self._cache_v = np.zeros(0, np.float32)

    # ------------------------------------------------------------------ decoding
    @property
    def can_decode(self) -> bool:
        """Whether the model decodes behavior: a spikes-only model (no targets) has no `decode` graph and only
        generates."""
        return bool(self.targets) and self.bundle.has_graph("decode")

    @property
    def can_stream(self) -> bool:
        """Whether this bundle and backend support streaming decode (`rtdecode.runtime.streaming`)."""
        return self.bundle.stream_graph_version == STREAM_GRAPH_VERSION and "stream" in self.backend.graphs

    def decode(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Behavior of each window in the batch, name -> (B,) in the data's units (class index for classifiers,
        radians in (-pi, pi] for circular targets)."""
        if not self.can_decode:
            raise RuntimeError(f"{self.bundle.path} decodes no behavior (its model has no targets): it only generates")
        return self.to_units(self.backend.run("decode", {n: feeds[n] for n in self._decode_inputs}))

    def to_units(self, outs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Graph behavior outputs (in target order; the `decode` graph's or the `stream` graph's) -> name -> (B,) in
        the data's units. A circular target's (B, 2) (cos, sin) becomes its angle, atan2, in (-pi, pi]; its stored
        normalisation is not used (angles are never z-scored)."""
        result = {}
        for spec, y in zip(self.targets, outs):
            if spec.kind == "regression":
                mean, std = self._behavior_norm[spec.name]
                result[spec.name] = y.astype(np.float64) * std + mean
            elif spec.kind == "circular":
                result[spec.name] = angle_of(y[..., 0], y[..., 1])
            else:
                result[spec.name] = y.argmax(-1)
        return result

    def window_feeds(
        self,
        window: ClosedWindow,
        frames: np.ndarray | None = None,
        behavior: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        frame_valid: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Batch-of-one inputs for a live window (tokens via the shared packer, trimmed like training batches).

        Args:
            window: a window closed by RollingWindow.
            frames: (n_frames, H, W) uint8, the frames shown before the window end (its start with
                `context_at = "start"`), oldest first, if the model takes video; None gives the mean image (as
                training does before the first frame).
            frame_valid: (n_frames,) bool, False where no frame had been shown yet (mean image, as in training).
            behavior: name -> (sample times s, values) of each input behavior variable (the samples before the
                window's context time are used).
        """
        feeds = token_inputs(*window.tokens(self.window, self.vocab))
        fr = self.bundle.frames
        if fr.enabled:
            shape = (1, fr.n_frames, fr.height, fr.width)
            if frames is None:
                feeds["frames"] = np.zeros(shape, np.float32)
            else:
                feeds["frames"] = normalise_frames(np.asarray(frames).reshape(shape), *self._frame_norm)
                if frame_valid is not None:
                    feeds["frames"][0, ~np.asarray(frame_valid, bool)] = 0.0
        for spec in self.bundle.behavior_inputs:
            times, values = (behavior or {}).get(spec.name, (np.zeros(0), np.zeros(0)))
            feeds.update(self._behavior_input(spec, self.window.context_time(window.start, window.end), times, values))
        return feeds

    def _behavior_input(
        self, spec: BehaviorSpec, end: float, times: np.ndarray, values: np.ndarray
    ) -> dict[str, np.ndarray]:
        vals, ages, valid = behavior_input_samples(
            np.asarray(times, np.float64),
            np.asarray(values, np.float64),
            np.array([end]),
            spec.input_window,
            self.window.dt,
        )
        mean, std = self._behavior_norm[spec.name]
        name = spec.name
        return {
            f"in_{name}": np.where(valid, (vals - mean) / std, 0.0).astype(np.float32),
            f"in_{name}_age": ages,
            f"in_{name}_valid": valid,
        }

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        feeds: dict[str, np.ndarray],
        *,
        temperature: float = 1.0,
        top_p: float = 0.95,
        seed: int | None = None,
        max_tokens: int | None = None,
        use_count: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Sample the next window for each context in `feeds` (history/frames/behavior inputs of a batch).

        Returns per window (neuron indices, time offsets in dt quanta). temperature 0 = greedy. The token grammar
        and the sampler are `rtdecode.runtime.sampling`'s, shared with training.generate: IDs are neurons or EOS,
        offsets are in the window and non-decreasing; with a count head (and `use_count`) each window holds the
        spike count drawn from it before its first spike.
        """
        limit = self.window.max_spikes if max_tokens is None else min(max_tokens, self.window.max_spikes)
        outs = self.backend.run("context", {n: feeds[n] for n in self._context_inputs})
        ctx = dict(zip(self._context_outputs, outs))
        B = feeds["prev_ids"].shape[0]
        past_k, past_v = self._cache(B)
        sampler = WindowSampler(
            self.vocab, self.window.bins_per_window, B, temperature=temperature, top_p=top_p, seed=seed
        )
        if use_count and self.has_count_head:
            sampler.set_counts(outs[-1], limit)
        ids, dts = sampler.first_tokens()
        for pos in range(limit):
            id_logits, dt_logits, new_k, new_v = self.backend.run(
                "step",
                {"ids": ids, "dts": dts, "pos": np.array(pos, np.int64), "past_k": past_k, "past_v": past_v, **ctx},
            )
            past_k[:, :, :, pos] = new_k[:, :, :, 0]
            past_v[:, :, :, pos] = new_v[:, :, :, 0]
            ids, dts = sampler.step(id_logits, dt_logits)
            if sampler.finished:
                break
        return sampler.windows()

    def _cache(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The fixed-size KV cache for `batch` windows, allocated once per batch size (stale slots are masked)."""
        shape = self._cache_shape[:1] + (batch,) + self._cache_shape[2:]
        if self._cache_k.shape != shape:
            self._cache_k = np.zeros(shape, np.float32)
            self._cache_v = np.zeros(shape, np.float32)
        return self._cache_k, self._cache_v
