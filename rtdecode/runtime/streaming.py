"""Streaming decode: a window's spikes run through the model while the window is still open.

Window-at-a-time decoding pays the whole forward pass after the window closes. But the model is causal over a
window's tokens, and everything it attends to besides them (the previous window's spikes, the frames, the
behavior inputs) is known before the window closes. So:

* when the window opens (or when a frame or behavior sample that it will see arrives), the `context` graph turns
  history, frames and behavior inputs into every cross-attention block's keys/values;
* while it is open, each time quantum that can no longer change (data time has moved past it) goes through the
  `stream` graph (with token_order "time", each spike earlier than the newest one: tokens are in arrival order), which is given the filled part of a fixed-size KV cache and the running sum of final hidden
  states (`stream_feeds`): the new tokens' keys/values are written into the cache and the sum is kept;
* at close only the tail is left: the spikes of the last, still-incomplete quantum and EOS, one call of the same
  `stream` graph, whose behavior outputs (mean pool = hidden sum / token count, then the heads) are the decode;
* once data time has reached the last quantum, `speculate` runs that tail as it stands; if nothing more arrives
  in it before the close (always the case at the token cap, where the tail is EOS alone), the close reuses the
  result and runs no model at all. Either way the weights are warm in cache when the close comes.

With a bounded attention span (`ModelConfig.attention_span`) the `stream` graph is given only the cache slots
within the span, and tokens run `span` at a time, so a token's cost does not grow with the spikes before it.

Exactness: the result is the window-at-a-time decode up to float summation order (the parity test holds it
within 1e-5). The stream keeps what it committed; at close, `matches` checks that the closed window's tokens
start with exactly those (an event that arrived out of order into an already-committed quantum breaks this) and
that the context it used is still current. If not, the caller decodes the window at a time: slower, never wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import numpy as np

from rtdecode.data.window import ClosedWindow
from rtdecode.runtime.decoder import Decoder

__all__ = ["WindowStream", "StreamingError", "stream_feeds", "stream_outputs"]


class StreamingError(RuntimeError):
    """The bundle or backend cannot stream (bundles exported before the stream graphs, or a backend without them)."""


def stream_feeds(
    ids: np.ndarray,
    dts: np.ndarray,
    pos: int,
    past_k: np.ndarray,
    past_v: np.ndarray,
    context: dict[str, np.ndarray],
    hidden_before: np.ndarray,
    past: dict[str, np.ndarray] | None = None,
    span: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs of the `stream` graph: new tokens (B, t) at positions pos.., after the `pos` filled slots of a
    fixed-size cache (L, B, H, slots, hd) and the sum (B, D) of those tokens' final hidden states. The graph reads
    only the filled slots it needs (all of them, or with the model's attention `span` the last span - 1), one
    input per block (copies), and takes its mask ready-made (0 / -inf: causal, and within the span). With no
    slot to read it gets one, masked out: a graph input cannot be empty. `past`: those slots as `past_feeds`
    made them earlier, if at hand."""
    t = ids.shape[1]
    first = first_slot(pos, span)
    filled = max(pos - first, 1)
    mask = np.zeros((t, filled + t), np.float32)
    mask[:, filled:] = _causal(t, span)
    if pos == first:
        mask[:, 0] = -np.inf
    elif span > 0:  # query i (position pos + i) reads slots >= pos + i - span + 1
        mask[:, :filled] = _span_past(t, filled, pos - first, span)
    feeds = {
        "ids": np.ascontiguousarray(ids, np.int64),
        "dts": np.ascontiguousarray(dts, np.int64),
        "pos": np.array(pos, np.int64),
        "mask": mask,
        "hidden_before": hidden_before,
    }
    return {**feeds, **(past if past is not None else past_feeds(pos, past_k, past_v, span)), **context}


def stream_outputs(
    outs: list[np.ndarray],
    layers: int,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The `stream` graph's outputs in order (`rtdecode.export.graphs.StreamGraph`), split: the running hidden-state
    sum (B, D), the new keys and the new values (one (B, H, t, hd) per causal block), the behavior outputs."""
    return outs[0], outs[1 : 1 + layers], outs[1 + layers : 1 + 2 * layers], outs[1 + 2 * layers :]


def first_slot(pos: int, span: int) -> int:
    """The earliest cache slot a token at position `pos` or later may read (0 without a span)."""
    return max(0, pos - span + 1) if span > 0 else 0


def past_feeds(pos: int, past_k: np.ndarray, past_v: np.ndarray, span: int = 0) -> dict[str, np.ndarray]:
    """The `stream` graph's cache inputs: the filled slots (at least one) of each causal block that tokens from
    `pos` on may read (`first_slot`). Always copies (a contiguous slice, e.g. one head, would be a view): the
    caller may write its cache while these are in use, by another thread too."""
    first = first_slot(pos, span)
    end = first + max(pos - first, 1)
    feeds = {}
    for i in range(past_k.shape[0]):
        feeds[f"past_k{i}"] = past_k[i, :, :, first:end].copy()
        feeds[f"past_v{i}"] = past_v[i, :, :, first:end].copy()
    return feeds


@functools.lru_cache(maxsize=512)
def _causal(t: int, span: int = 0) -> np.ndarray:
    """(t, t) additive causal mask (within `span`), made once per size (it is on the close's critical path)."""
    back = np.arange(t)[:, None] - np.arange(t)[None, :]
    ok = (back >= 0) & (back < span) if span > 0 else back >= 0
    mask = np.where(ok, 0.0, -np.inf).astype(np.float32)
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=512)
def _span_past(t: int, filled: int, back: int, span: int) -> np.ndarray:
    """(t, filled) additive mask of t new tokens over the `filled` cached slots given to the graph, which start
    `back` positions before the first new token: slot c holds position pos - back + c, and query i (position
    pos + i) reads it while (pos + i) - (pos - back + c) < span."""
    gap = np.arange(t)[:, None] + back - np.arange(filled)[None, :]
    mask = np.where(gap < span, 0.0, -np.inf).astype(np.float32)
    mask.flags.writeable = False
    return mask


class WindowStream:
    """The incremental decode of one open window (a batch of one).

    Args:
        decoder: a Decoder whose bundle has the `stream` graph (`Decoder.can_stream`).
        opened: the open window as `RollingWindow.open_window()` gives it (its history is final).
        context_feeds: history/frames/behavior inputs of the window (`Decoder.window_feeds(opened, ...)`).
        context_key: anything that changes when the frames or behavior the window would see change.
    """

    def __init__(
        self, decoder: Decoder, opened: ClosedWindow, context_feeds: dict[str, np.ndarray], context_key: Hashable
    ) -> None:
        if not decoder.can_stream:
            raise StreamingError(
                "this bundle or backend has no stream graph (or an earlier form of it): re-export the run with this "
                "rtdecode, or serve window at a time"
            )
        self.index = opened.index
        self._d = decoder
        self._max = decoder.window.max_spikes
        c = decoder.bundle.cache
        shape = (c.layers, 1, c.heads, c.slots, c.head_dim)
        self._k = np.zeros(shape, np.float32)
        self._v = np.zeros(shape, np.float32)
        self.neurons = np.empty(self._max, np.int64)
        self.offsets = np.empty(self._max, np.int64)
        self.n_committed = 0
        self._spec: tuple[int, np.ndarray, np.ndarray, dict[str, Any]] | None = (
            None  # (n, tail neurons, offsets, result)
        )
        self._layers = c.layers
        self._span = decoder.bundle.config.model.attention_span
        # A call scores its t new tokens against all t + past keys before masking: with a bounded span, t tokens
        # at once cost ~t^2, so a backlog (a burst, a late stream) runs `span` tokens per call, at a cost per token
        # that stays flat; without a span every token reads the whole window anyway, one call is cheapest.
        self._chunk = self._span if self._span > 0 else 1 << 30
        self.broken = False  # the committed prefix changed (or a step failed): decode window at a time
        self.key: Hashable = None
        self._past: tuple[int, dict[str, np.ndarray]] = (-1, {})  # (pos, `past_feeds` at pos): made once per pos
        self.set_context(context_feeds, context_key)

    # ------------------------------------------------------------------ while the window is open
    def set_context(self, context_feeds: dict[str, np.ndarray], context_key: Hashable) -> None:
        """(Re)compute the cross-attention context and re-run the committed tokens against it."""
        d = self._d
        self._spec = None
        self.key = None  # matches nothing until the context is complete
        try:
            outs = d.backend.run("context", {n: context_feeds[n] for n in d._context_inputs})
            self._ctx = dict(zip(d._context_outputs, outs))
            self._pos, self._past = 0, (-1, {})  # the committed slots are about to be rewritten
            self._sum = np.zeros((1, d.bundle.config.model.d_model), np.float32)
            n = self.n_committed
            vocab = d.vocab
            self._feed(
                np.concatenate(([vocab.id_sos], self.neurons[:n])), np.concatenate(([vocab.dt_sos], self.offsets[:n]))
            )
        except BaseException:
            self.broken = True  # a half-built state must never decode: the close falls back to window at a time
            raise
        self.key = context_key

    speculation_used = False  # whether the last `finish` reused a speculation

    def commit(self, opened: ClosedWindow, boundary: int) -> int:
        """Run the open window's events in quanta < `boundary` that are not yet committed; returns how many ran.

        `opened` is the open window now; its first `n_committed` events must be those already committed.
        """
        return self.commit_first(opened, int(np.searchsorted(opened.offsets, boundary, side="left")))

    def commit_first(self, opened: ClosedWindow, end: int) -> int:
        """Run the open window's first `end` events (in token order; those that can no longer change) that are not
        yet committed; returns how many ran."""
        n = self.n_committed
        if self.broken or n >= self._max:
            return 0
        if not (
            np.array_equal(opened.neurons[:n], self.neurons[:n])
            and np.array_equal(opened.offsets[:n], self.offsets[:n])
        ):
            self.broken = True
            return 0
        end = min(end, self._max)
        if end <= n:
            return 0
        self.neurons[n:end] = opened.neurons[n:end]
        self.offsets[n:end] = opened.offsets[n:end]
        try:
            self._feed(self.neurons[n:end], self.offsets[n:end])
        except BaseException:
            self.broken = True
            raise
        self.n_committed = end
        return end - n

    def speculate(self, opened: ClosedWindow) -> None:
        """Run the tail as it stands now (uncommitted events, truncated, then EOS) and keep the result for `finish`.

        It leaves the cache and the sum as they were (see `_run_tail`), so a speculation that turns out wrong costs
        nothing but its time."""
        n = self.n_committed
        if self.broken or not (
            np.array_equal(opened.neurons[:n], self.neurons[:n])
            and np.array_equal(opened.offsets[:n], self.offsets[:n])
        ):
            return
        tail = slice(n, max(n, min(opened.neurons.size, self._max)))
        neurons, offsets = opened.neurons[tail].copy(), opened.offsets[tail].copy()
        if (
            self._spec is not None
            and self._spec[0] == n
            and np.array_equal(self._spec[1], neurons)
            and np.array_equal(self._spec[2], offsets)
        ):
            return  # already speculated on exactly this tail
        self._spec = (n, neurons, offsets, self._run_tail(neurons, offsets))

    def warm_steps(self) -> list[tuple[str, dict[str, np.ndarray]]]:
        """A throwaway one-token `stream` step after the committed tokens, against this window's context: it reads
        the weights and the cross-attention keys/values the close will read (`rtdecode.runtime.warming`).
        Another thread may run it while this stream goes on: the cache slots are copies, the sum and the context
        arrays are replaced, never written in place, and the results are thrown away."""
        v = self._d.vocab
        return [
            (
                "stream",
                stream_feeds(
                    np.array([[v.id_eos]], np.int64),
                    np.array([[v.dt_eos]], np.int64),
                    self._pos,
                    self._k,
                    self._v,
                    self._ctx,
                    self._sum,
                    self._past_slots(),
                    self._span,
                ),
            )
        ]

    # ------------------------------------------------------------------ at close
    def matches(self, window: ClosedWindow, context_key: Hashable) -> bool:
        """Can `finish` decode this closed window exactly?"""
        n = self.n_committed
        return (
            not self.broken
            and self.key is not None
            and window.index == self.index
            and context_key == self.key
            and window.neurons.size >= n
            and np.array_equal(window.neurons[:n], self.neurons[:n])
            and np.array_equal(window.offsets[:n], self.offsets[:n])
        )

    def finish(self, window: ClosedWindow) -> dict[str, Any]:
        """The tail (uncommitted spikes, truncated like the tokenizer, then EOS), the pool and the heads; nothing
        to run when a speculation already covered exactly this tail."""
        n = self.n_committed
        tail = slice(n, max(n, min(window.neurons.size, self._max)))
        spec = self._spec
        if (
            spec is not None
            and spec[0] == n
            and np.array_equal(spec[1], window.neurons[tail])
            and np.array_equal(spec[2], window.offsets[tail])
        ):
            self.speculation_used = True
            return spec[3]
        self.speculation_used = False
        return self._run_tail(window.neurons[tail], window.offsets[tail])

    def _run_tail(self, neurons: np.ndarray, offsets: np.ndarray) -> dict[str, Any]:
        """The decode for this tail after the committed tokens: the behavior outputs of its last `stream` call. It
        leaves the position and the sum as they were (it may make this position's `past_feeds` copies): nothing
        reads the tail's keys/values (a speculation may turn out wrong; after the close the stream is done), so a
        tail of one chunk writes none, and a longer one only into slots past the committed ones, which no one
        reads (`past_feeds` copies slots below the position) and the next commit overwrites."""
        d = self._d
        ids, dts = np.append(neurons, d.vocab.id_eos), np.append(offsets, d.vocab.dt_eos)
        last = max(0, ids.size - self._chunk)
        saved = self._pos, self._sum, self._past
        try:
            if last:
                self._feed(ids[:last], dts[:last])
            return d.to_units(stream_outputs(self._step(ids[last:], dts[last:]), self._layers)[3])
        finally:
            self._pos, self._sum, self._past = saved

    def _feed(self, ids: np.ndarray, dts: np.ndarray) -> None:
        """Commit tokens, `_chunk` at a time (see __init__)."""
        for lo in range(0, ids.shape[0], self._chunk):
            self._feed_chunk(ids[lo : lo + self._chunk], dts[lo : lo + self._chunk])

    def _feed_chunk(self, ids: np.ndarray, dts: np.ndarray) -> None:
        """Run tokens, write their keys/values into the cache, keep the running hidden-state sum."""
        t = ids.shape[0]
        hidden_sum, new_k, new_v, _ = stream_outputs(self._step(ids, dts), self._layers)
        for i, (k, v) in enumerate(zip(new_k, new_v)):
            self._k[i, :, :, self._pos : self._pos + t] = k
            self._v[i, :, :, self._pos : self._pos + t] = v
        self._sum = hidden_sum  # a new array each call: a warm-up may still be reading the previous one
        self._pos += t

    def _step(self, ids: np.ndarray, dts: np.ndarray) -> list[np.ndarray]:
        t = ids.shape[0]
        return self._d.backend.run(
            "stream",
            stream_feeds(
                ids.reshape(1, t),
                dts.reshape(1, t),
                self._pos,
                self._k,
                self._v,
                self._ctx,
                self._sum,
                self._past_slots(),
                self._span,
            ),
        )

    def _past_slots(self) -> dict[str, np.ndarray]:
        """`past_feeds` at the current position, copied once per position: a speculation or a warm-up makes
        them before the close, which then only reads them (they are never written, so other threads may too).
        The position only grows, and the slots below it are written once, so the position is the whole key; only
        `set_context` rewrites them, and it drops the copies."""
        if self._past[0] != self._pos:
            self._past = (self._pos, past_feeds(self._pos, self._k, self._v, self._span))
        return self._past[1]
