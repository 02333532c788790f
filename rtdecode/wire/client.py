"""A small Python client for rig software: `Producer` sends data to the daemon, `Subscriber` reads its outputs.

    with Producer("tcp://127.0.0.1:5555") as p, Subscriber("tcp://127.0.0.1:5556", topics=("decode",)) as s:
        model = s.describe(p)          # waits until the daemon serves: window grid, unit IDs, targets, limits
        p.spikes(times, neurons)       # seconds on the session clock, model indices
        p.frame(t, pixels)             # uint8 H x W
        p.clock(t)                     # "no data older than t will come"
        for msg in s.messages(timeout=1.0):
            print(msg["window"], msg["values"]["speed"], s.latency_ms(msg))

Sends never block an acquisition loop: when the daemon's queue is full the message is dropped and counted in
`Producer.dropped` (see docs/protocol.md, "Sockets"); the daemon sees the gap in the producer's `seq`.

Against a daemon started with `--curve-secret`, give both clients the daemon's public key and your own key pair
(files from `rtdecode keys`): `Producer(endpoint, curve_server_key="daemon.key", curve_keys="client.key_secret")`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from rtdecode.wire.protocol import (
    decode_output,
    encode_behavior,
    encode_clock,
    encode_control,
    encode_frame,
    encode_spikes,
)

__all__ = ["Producer", "Subscriber"]

Key = str | bytes | Path


def _secure(
    socket: zmq.Socket,
    server_key: Key | None,
    keys: str | Path | None,
    public: str | bytes | None,
    secret: str | bytes | None,
) -> None:
    if server_key is None:
        if keys is not None or public is not None or secret is not None:
            raise ValueError("CURVE client keys were given without curve_server_key (the daemon's public key)")
        return
    from rtdecode.wire.auth import configure_client

    configure_client(socket, server_key, keys=keys, public=public, secret=secret)


class Producer:
    """Connects a PUSH socket to the daemon's input endpoint and numbers every message.

    Args:
        name: this producer's `src` (docs/protocol.md): the daemon checks `seq` per name. Default: a random name
            per instance, so a restarted process is a new producer; pass a fixed name to have the daemon count a
            restart as `seq_reset`.
        curve_server_key, curve_keys, curve_public, curve_secret: CURVE authentication (rtdecode.wire.auth), for a
            daemon started with `--curve-secret`: its public key (or key file) and this client's key pair, as a
            `.key_secret` file or as two Z85 keys.
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        sndhwm: int = 10_000,
        name: str | None = None,
        curve_server_key: Key | None = None,
        curve_keys: str | Path | None = None,
        curve_public: str | bytes | None = None,
        curve_secret: str | bytes | None = None,
    ) -> None:
        self.src = name or f"py-{os.getpid()}-{secrets.token_hex(4)}"
        self._own = context is None
        self.context = context or zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        try:
            self.socket.setsockopt(zmq.SNDHWM, sndhwm)
            self.socket.setsockopt(zmq.LINGER, 2000)  # give queued messages 2 s to leave on close
            _secure(self.socket, curve_server_key, curve_keys, curve_public, curve_secret)
            self.socket.connect(endpoint)
        except BaseException:
            self.close()
            raise
        self.seq = 0
        self.sent = 0
        self.dropped = 0

    def send(self, frames: list[bytes]) -> bool:
        """Send raw protocol frames without blocking; False (and counted) if the daemon's queue is full."""
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def _next(self) -> tuple[int, float]:
        self.seq += 1
        return self.seq - 1, time.monotonic()

    def spikes(self, times: np.ndarray, neurons: np.ndarray, unit_ids: bool = False) -> bool:
        """Spike times (s, session clock) and neuron indices (or acquisition unit IDs with unit_ids=True)."""
        return self.send(encode_spikes(*self._next(), np.asarray(times), np.asarray(neurons), unit_ids, src=self.src))

    def frame(self, t: float, pixels: np.ndarray) -> bool:
        return self.send(encode_frame(*self._next(), t, np.asarray(pixels, np.uint8), src=self.src))

    def behavior(self, name: str, times: np.ndarray, values: np.ndarray) -> bool:
        return self.send(encode_behavior(*self._next(), name, np.asarray(times), np.asarray(values), src=self.src))

    def clock(self, t: float) -> bool:
        return self.send(encode_clock(*self._next(), t, src=self.src))

    def control(self, cmd: str, start: float | None = None) -> bool:
        return self.send(encode_control(*self._next(), cmd, start, src=self.src))

    def close(self) -> None:
        self.socket.close()
        if self._own:
            self.context.term()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Subscriber:
    """Connects a SUB socket to the daemon's output endpoint; yields parsed messages (dicts, see protocol.md)."""

    def __init__(
        self,
        endpoint: str,
        topics: tuple[str, ...] = ("decode", "activity", "status"),
        context: zmq.Context | None = None,
        rcvhwm: int = 10_000,
        curve_server_key: Key | None = None,
        curve_keys: str | Path | None = None,
        curve_public: str | bytes | None = None,
        curve_secret: str | bytes | None = None,
    ) -> None:
        self._own = context is None
        self.context = context or zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        try:
            self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
            self.socket.setsockopt(zmq.LINGER, 0)
            for topic in topics:
                self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
            _secure(self.socket, curve_server_key, curve_keys, curve_public, curve_secret)  # see Producer
            self.socket.connect(endpoint)
        except BaseException:
            self.close()
            raise

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, or None after `timeout` seconds."""
        if timeout is not None and not self.socket.poll(int(timeout * 1000)):
            return None
        frames = self.socket.recv_multipart()
        msg = decode_output(frames)
        msg["t_receive"] = time.monotonic()
        return msg

    def messages(self, timeout: float = 1.0) -> Iterator[dict[str, Any]]:
        """Messages until none arrives for `timeout` seconds."""
        while (msg := self.receive(timeout)) is not None:
            yield msg

    def wait_for(self, topic: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next message of `topic`; raises TimeoutError (use it to wait until the daemon is reachable)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is not None and msg["topic"] == topic:
                return msg
        raise TimeoutError(f"no '{topic}' message within {timeout} s")

    def describe(self, producer: Producer, timeout: float = 10.0, every: float = 0.25) -> dict[str, Any]:
        """Wait until the daemon is ready and return its description (docs/protocol.md, "describe").

        Asks for it through `producer` (a `control` "describe") every `every` s, because a PUB socket drops what
        it sent before this subscriber joined; the first answer means the daemon is serving. Raises TimeoutError
        when none comes (no daemon there, or one older than protocol 1.1). Other messages that arrive meanwhile are
        dropped, and this subscriber stays subscribed to `describe`: call it before reading data.
        """
        self.socket.setsockopt(zmq.SUBSCRIBE, b"describe")
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            producer.control("describe")
            ask_again = time.monotonic() + min(every, left)
            while (wait := ask_again - time.monotonic()) > 0:
                msg = self.receive(wait)
                if msg is not None and msg["topic"] == "describe":
                    return msg
        raise TimeoutError(f"no description from the daemon within {timeout} s (is it running, at protocol 1.1?)")

    @staticmethod
    def latency_ms(msg: dict[str, Any]) -> float:
        """End-to-end latency of a decode/activity: producer send -> this receive, both on this host's monotonic
        clock (valid when the producer runs on the same machine, as `rtdecode bench serve` does)."""
        return (msg["t_receive"] - msg["in_t_send"]) * 1e3

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._own:
            self.context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
