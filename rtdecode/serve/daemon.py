"""`rtdecode serve`: the decode engine behind ZeroMQ sockets. Bind, poll, hand each message to the engine, publish.

One thread owns every socket (ZeroMQ sockets are not thread-safe): it polls the input PULL socket and an inproc
socket from the generation worker, hands input to `DecodeEngine.handle` and sends what the engine publishes on
the PUB socket, recording both directions when asked. Everything about messages (parsing, validation, windows,
decoding, status) is the engine's (`rtdecode.serve.engine`); this module is the shape of pyzmq's device
examples. Optional CURVE authentication (`rtdecode.wire.auth`) secures both sockets.

`serve_in_thread` runs a daemon on a background thread for tests, tools and the demo.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zmq

from rtdecode.runtime import Bundle, Decoder
from rtdecode.serve.config import ServeConfig
from rtdecode.serve.engine import DecodeEngine
from rtdecode.serve.generation import GenerationWorker, decode_result
from rtdecode.serve.recording import RecordingWriter
from rtdecode.wire.auth import CurveServer, exposure_warnings, is_loopback

__all__ = ["Daemon", "ServeConfig", "is_loopback", "serve_in_thread"]

log = logging.getLogger("rtdecode.serve")

DRAIN_BATCH = 1000  # input messages read per poll before the loop comes back to its other work
IDLE_POLL_MS = 20


class Daemon:
    """The serving loop. `run(stop)` blocks until `stop` is set; `ready` is set once sockets are bound."""

    def __init__(
        self, bundle_dir: str | Path, config: ServeConfig = ServeConfig(), context: zmq.Context | None = None
    ) -> None:
        bundle = Bundle.load(bundle_dir)
        if not bundle.targets and not config.generate:
            # a spikes-only model decodes nothing: predicted activity is all it can serve
            log.info("%s decodes no behavior (no targets): serving predicted activity (--generate)", bundle.path)
            config = dataclasses.replace(config, generate=True)
        self.config = config
        self.engine = DecodeEngine(bundle, config, self._send)
        self.ready = threading.Event()  # sockets bound
        self.stopped = threading.Event()  # the loop has ended and everything is closed
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.curve = CurveServer(config.curve_secret, config.curve_allow) if config.curve_secret is not None else None
        self.recorder = RecordingWriter(config.record) if config.record is not None else None
        self.generator: GenerationWorker | None = None
        self.pull: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self.gen_pull: zmq.Socket | None = None
        self.engine.extra_counters = self._shell_counters

    # what callers look at: the model, its decoder, the mode, the status
    @property
    def bundle(self) -> Bundle:
        return self.engine.bundle

    @property
    def decoder(self) -> Decoder:
        return self.engine.decoder

    @property
    def streaming(self) -> bool:
        return bool(self.engine.streaming)

    def status(self) -> dict:
        return self.engine.status()

    # ------------------------------------------------------------------ sockets
    def _bind(self) -> None:
        for warning in exposure_warnings((self.config.input, self.config.output), curve=self.curve is not None):
            log.warning(warning)
        if self.curve is not None:
            self.curve.start(self.context)  # the ZAP handler must run before the first client connects
        self.pull = pull = self._socket(zmq.PULL, zmq.RCVHWM, self.config.rcvhwm)
        self.pub = pub = self._socket(zmq.PUB, zmq.SNDHWM, self.config.sndhwm)
        pull.bind(self.config.input)
        pub.bind(self.config.output)
        self.input_endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.output_endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.engine.streamer.start()
        if self.config.generate:
            inproc = f"inproc://rtdecode-generate-{id(self)}"
            self.gen_pull = gen_pull = self.context.socket(zmq.PULL)
            gen_pull.setsockopt(zmq.LINGER, 0)
            gen_pull.bind(inproc)
            self.generator = GenerationWorker(self.bundle, self.config, self.context, inproc)
            self.engine.on_decoded = self.generator.submit
            self.generator.start()

    def _socket(self, kind: int, hwm_option: int, hwm: int) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(hwm_option, hwm)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.apply(sock)
        return sock

    def _send(self, frames: list[bytes]) -> None:
        """The engine's publish: out on the PUB socket, and into the recording."""
        pub = self.pub
        if pub is None:
            raise RuntimeError("the daemon published before binding its sockets")
        pub.send_multipart(frames, copy=False)
        if self.recorder is not None:
            self.recorder.record(1, frames)

    def _shell_counters(self) -> dict[str, int]:
        counters: dict[str, int] = {}
        if self.recorder is not None:
            counters.update(
                {f"recording_{k}": int(v) for k, v in self.recorder.stats.items() if isinstance(v, (int, np.integer))}
            )
        if self.generator is not None:
            counters["generate_dropped"] = self.generator.dropped
        if self.curve is not None:
            counters["auth_allowed"], counters["auth_denied"] = self.curve.allow.allowed, self.curve.allow.denied
        return counters

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; always closes sockets and flushes the recording."""
        engine = self.engine
        try:
            self._bind()
            pull, gen_pull = self.pull, self.gen_pull
            assert pull is not None  # bound by _bind
            poller = zmq.Poller()
            poller.register(pull, zmq.POLLIN)
            if gen_pull is not None:
                poller.register(gen_pull, zmq.POLLIN)
            next_status = time.monotonic()
            engine.guarded(engine.publish_describe)  # the readiness signal: sockets bound, model loaded
            self.ready.set()
            while not stop.is_set():
                events = dict(poller.poll(timeout=engine.poll_timeout_ms(IDLE_POLL_MS)))
                if pull in events:
                    for _ in range(DRAIN_BATCH):  # drain, but come back to the poller regularly
                        try:
                            frames = pull.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        t_recv = time.perf_counter()
                        if self.recorder is not None:
                            self.recorder.record(0, frames)
                        engine.guarded(engine.handle, frames, t_recv)
                engine.step()
                if gen_pull is not None and gen_pull in events:
                    engine.guarded(self._forward_activity, gen_pull)
                if time.monotonic() >= next_status:
                    engine.guarded(engine.publish_status)
                    next_status = time.monotonic() + self.config.status_interval
        finally:
            self.close()
            self.stopped.set()

    def _forward_activity(self, gen_pull: zmq.Socket) -> None:
        """Publish the generation worker's finished windows (only this thread touches the PUB socket)."""
        while True:
            try:
                frames = gen_pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.engine.publish_activity(*decode_result(frames))

    def close(self) -> None:
        if self.generator is not None:
            self.generator.stop()
        self.engine.streamer.stop()
        for sock in (self.pull, self.pub, self.gen_pull):
            if sock is not None:
                sock.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        if self.recorder is not None:
            self.recorder.close()
        if self._own_context:
            self.context.term()


@contextlib.contextmanager
def serve_in_thread(daemon: Daemon, ready_timeout: float = 30.0) -> Iterator[Daemon]:
    """Run `daemon` on a background thread until the block ends; yields it once its sockets are bound.

    Raises RuntimeError if it does not bind within `ready_timeout` s or does not stop within it afterwards.
    """
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), name="rtdecode-serve", daemon=True)
    thread.start()
    try:
        if not daemon.ready.wait(ready_timeout):
            raise RuntimeError(f"the daemon did not bind its sockets within {ready_timeout:g} s")
        yield daemon
    finally:
        stop.set()
        thread.join(ready_timeout)
        if thread.is_alive():
            raise RuntimeError("the daemon did not stop")
