"""Predicted activity (`rtdecode serve --generate`): the next window's spikes sampled from the model, off the
decode path.

The worker holds one pending request, the newest decoded window; a new request replaces an unstarted one (counted
in `dropped`), so generation can fall behind without ever delaying a decode. It runs its own inference sessions on
its own thread and hands each result back to the loop thread over an inproc socket, because only that thread
touches the PUB socket (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import numpy as np
import zmq

from rtdecode.data.tokenizer import WindowConfig, history_tokens, token_inputs
from rtdecode.data.window import ClosedWindow
from rtdecode.runtime import Bundle, Decoder
from rtdecode.serve.config import ServeConfig, backend_options

__all__ = ["GenerationWorker", "decode_result", "history_from_current"]


class GenerationWorker(threading.Thread):
    """Generates the activity of the window after each submitted one; results are pushed to `endpoint`."""

    def __init__(self, bundle: Bundle, config: ServeConfig, context: zmq.Context, endpoint: str) -> None:
        super().__init__(name="rtdecode-generate", daemon=True)
        opts = backend_options(config)
        self.decoder = Decoder(bundle, config.backend, **opts)
        self.window_cfg = bundle.window
        self.context, self.endpoint = context, endpoint
        self.temperature, self.top_p, self.rng_seed = config.temperature, config.top_p, config.seed
        self._cond = threading.Condition()
        self._pending: tuple[Any, ...] | None = None
        self._stopping = False
        self.dropped = 0
        self._count = 0

    def submit(self, feeds: dict[str, np.ndarray], window: ClosedWindow, in_seq: int, in_t_send: float) -> None:
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = (feeds, window, in_seq, in_t_send)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.join(timeout=5)

    def run(self) -> None:
        sock = self.context.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._stopping:
                        self._cond.wait()
                    if self._stopping or self._pending is None:
                        return
                    feeds, window, in_seq, in_t_send = self._pending
                    self._pending = None
                # the generated window is the one after `window`, conditioned on `window` as its history
                hist_feeds = history_from_current(feeds, window, self.window_cfg, self.decoder)
                ids, offs = self.decoder.generate(
                    hist_feeds, temperature=self.temperature, top_p=self.top_p, seed=self.rng_seed + self._count
                )
                self._count += 1
                t_start = window.end
                times = t_start + (offs[0] + 0.5) * self.window_cfg.dt
                header = msgpack.packb(
                    {"window": window.index + 1, "t_start": t_start, "in_seq": in_seq, "in_t_send": in_t_send}
                )
                sock.send_multipart([header, times.astype("<f8").tobytes(), ids[0].astype("<i4").tobytes()])
        finally:
            sock.close(linger=0)


def decode_result(frames: list[bytes]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """A worker result as the loop thread receives it: (header, spike times s, neuron indices)."""
    return msgpack.unpackb(frames[0]), np.frombuffer(frames[1], "<f8"), np.frombuffer(frames[2], "<i4")


def history_from_current(
    feeds: dict[str, np.ndarray], window: ClosedWindow, cfg: WindowConfig, decoder: Decoder
) -> dict[str, np.ndarray]:
    """Context for predicting the next window: its history is the just-closed window's (and earlier) spikes."""
    # the closed window's events and its history, in quanta relative to the closed window's start (token order)
    bins = np.concatenate([window.prev_offsets - cfg.prev_bins, window.offsets]).astype(np.int64)
    neurons = np.concatenate([window.prev_neurons, window.neurons])
    hist = history_tokens(bins, neurons, cfg.bins_per_window, cfg, decoder.vocab)  # the next window starts at B
    return {**feeds, **token_inputs(None, hist)}
