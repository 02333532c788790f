"""CURVE authentication (rtdecode.wire.auth) with real handshakes: key files, an authorised producer and subscriber
served by the daemon, and unknown keys refused without disturbing it. Uses the committed v1 bundle (fast, no
torch). Synchronisation waits on status messages, never on sleeps."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

pytest.importorskip("onnxruntime")
if not zmq.has("curve"):
    pytest.skip("libzmq without CURVE", allow_module_level=True)

from test_daemon import collect, running_daemon

from rtdecode.serve.daemon import Daemon, ServeConfig
from rtdecode.wire.auth import (
    AuthError,
    exposure_warnings,
    load_allowed_keys,
    load_keypair,
    load_public_key,
    write_keypair,
)
from rtdecode.wire.client import Producer, Subscriber

V1_BUNDLE = Path(__file__).parent / "fixtures" / "v1" / "bundle"


def test_keypair_files(tmp_path: Path) -> None:
    public, secret = write_keypair(tmp_path / "keys", "daemon")
    assert (public.name, secret.name) == ("daemon.key", "daemon.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    pub, sec = load_keypair(secret)
    assert zmq.curve_public(sec) == pub == load_public_key(public) == load_public_key(secret) == load_public_key(pub)
    assert zmq.auth.load_certificate(secret) == (pub, sec)  # the ZeroMQ certificate format: czmq/pyzmq read it
    assert [p.name for p in sorted(public.parent.iterdir())] == ["daemon.key", "daemon.key_secret"]  # no temporaries
    with pytest.raises(AuthError, match="--force"):
        write_keypair(tmp_path / "keys", "daemon")
    assert load_public_key(write_keypair(tmp_path / "keys", "daemon", force=True)[0]) != pub
    bare = tmp_path / "bare.txt"
    bare.write_bytes(pub + b"\n")  # a bare Z85 key is a public key file too
    assert load_allowed_keys([bare, tmp_path / "keys"]) == {pub, load_public_key(public)}


def test_key_errors_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "junk.key").write_text("hello\n")
    with pytest.raises(AuthError, match="40 Z85 characters"):
        load_public_key(tmp_path / "junk.key")
    (tmp_path / "junk.key").write_text("hello\nworld\n")
    with pytest.raises(AuthError, match="no CURVE key"):
        load_public_key(tmp_path / "junk.key")
    with pytest.raises(AuthError, match="rtdecode keys"):
        load_public_key(tmp_path / "missing.key")
    with pytest.raises(AuthError, match="no secret key"):
        load_keypair(write_keypair(tmp_path, "x")[0])  # the public file where the secret one is needed
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuthError, match="no \\*.key"):
        load_allowed_keys([tmp_path / "empty"])
    with pytest.raises(ValueError, match="--curve-secret"):
        Daemon(V1_BUNDLE, ServeConfig(curve_allow=(tmp_path / "x.key",)))
    with pytest.raises(AuthError, match="--allow-client"):
        Daemon(V1_BUNDLE, ServeConfig(curve_secret=tmp_path / "x.key_secret", curve_allow=()))
    with pytest.raises(ValueError, match="curve_server_key"):
        Producer("ipc:///nonexistent", curve_keys=tmp_path / "x.key_secret")


def _status_when(sub: Subscriber, ok, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sub.wait_for("status", timeout=deadline - time.monotonic())
        if ok(status["counters"]):
            return status
    raise TimeoutError("status condition not reached")


def test_curve_admits_allowed_clients_and_refuses_unknown_keys(tmp_path: Path) -> None:
    _, daemon_secret = write_keypair(tmp_path, "daemon")
    client_public, client_secret = write_keypair(tmp_path, "client")
    _, rogue_secret = write_keypair(tmp_path, "rogue")
    server = tmp_path / "daemon.key"
    with (
        running_daemon(V1_BUNDLE, curve_secret=daemon_secret, curve_allow=(client_public,)) as daemon,
        Subscriber(daemon.output_endpoint, curve_server_key=server, curve_keys=client_secret) as sub,
        Producer(daemon.input_endpoint, curve_server_key=server, curve_keys=client_secret) as prod,
        Producer(daemon.input_endpoint, curve_server_key=server, curve_keys=rogue_secret) as rogue,
        Subscriber(daemon.output_endpoint, curve_server_key=server, curve_keys=rogue_secret) as rogue_sub,
    ):
        rogue.spikes(np.array([0.01, 0.011, 0.012]), np.array([1, 2, 3], np.int32))
        rogue.clock(0.2)
        # both rogue sockets have tried and been refused (their handshakes are retried, so >= 2)
        _status_when(sub, lambda c: c.get("auth_denied", 0) >= 2)
        prod.spikes(np.array([0.02]), np.array([5], np.int32))
        prod.clock(0.05)
        (decode,) = collect(sub, "decode", lambda out: len(out) >= 1, timeout=20)
        status = _status_when(sub, lambda c: c.get("msg_clock", 0) >= 1)
        assert rogue_sub.receive(timeout=0.3) is None  # a bounded check that nothing arrives, not a wait
    assert decode["window"] == 0 and decode["n_spikes"] == 1  # the rogue's 3 spikes never reached the window
    c = status["counters"]
    assert (c["msg_spikes"], c["msg_clock"]) == (1, 1) and c["auth_allowed"] >= 2 and c["auth_denied"] >= 2


def test_exposure_warnings_are_loud(tmp_path: Path) -> None:
    assert exposure_warnings(("tcp://127.0.0.1:5555", "ipc:///tmp/x"), curve=False) == []
    (w,) = exposure_warnings(("tcp://0.0.0.0:5555", "tcp://127.0.0.1:5556"), curve=False)
    assert "0.0.0.0:5555" in w and "WITHOUT AUTHENTICATION" in w
    assert "CURVE" in exposure_warnings(("tcp://10.0.0.2:5555",), curve=True)[0]
    # `rtdecode serve` prints it on stderr before anything else (here it then stops: the folder is no bundle)
    r = subprocess.run(
        [sys.executable, "-m", "rtdecode.cli", "serve", str(tmp_path), "--input", "tcp://0.0.0.0:5555"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert r.returncode == 2 and "WARNING" in r.stderr and "WITHOUT AUTHENTICATION" in r.stderr, r.stderr
