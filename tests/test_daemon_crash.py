"""The daemon under the faults a rig actually has: killed without warning mid-recording, flooded faster than real
time, and hit by a bug in its own code. Real processes and sockets; waits are on messages, never on sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from test_daemon import collect, connected, final_status, running_daemon

from rtdecode.serve.recording import INPUT, OUTPUT, read_recording, repair
from rtdecode.wire.client import Producer, Subscriber
from rtdecode.wire.protocol import decode_output, encode_spikes
from rtdecode.wire.replay import send_paced, session_messages


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX-only")
def test_sigkill_mid_recording_keeps_every_durable_record_and_invents_nothing(tiny_bundle, tmp_path):
    ipc = Path(tempfile.mkdtemp(prefix="rtd-"))
    cmd = [
        sys.executable,
        "-m",
        "rtdecode.cli",
        "serve",
        str(tiny_bundle),
        "--input",
        f"ipc://{ipc}/in",
        "--output",
        f"ipc://{ipc}/out",
        "--record",
        str(tmp_path / "rec"),
        "--status-interval",
        "0.05",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sent: list[list[bytes]] = []
    durable = 0
    try:
        with Subscriber(f"ipc://{ipc}/out", topics=("status",)) as sub, Producer(f"ipc://{ipc}/in") as prod:
            sub.wait_for("status", timeout=60)
            deadline = time.monotonic() + 60
            k = 0
            while durable < 300 and time.monotonic() < deadline:  # until the daemon says >= 300 records are fsynced
                frames = encode_spikes(k, time.monotonic(), np.array([0.004 * k]), np.array([k % 60], np.int32))
                if prod.send(frames):
                    sent.append([bytes(f) for f in frames])
                k += 1
                msg = sub.receive(0.002)
                if msg is not None:
                    durable = max(durable, msg["counters"].get("recording_records_durable", 0))
            for j in range(k, k + 200):  # records in flight, not yet fsynced, when the kill lands
                frames = encode_spikes(j, time.monotonic(), np.array([0.004 * j]), np.array([j % 60], np.int32))
                if prod.send(frames):
                    sent.append([bytes(f) for f in frames])
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and durable >= 300
    (path,) = list((tmp_path / "rec").glob("*.rtrec"))
    records = list(read_recording(path))
    assert len(records) >= durable  # everything acknowledged as durable before the kill is there
    inputs = [r.frames for r in records if r.direction == INPUT]
    assert inputs == sent[: len(inputs)]  # in order, byte for byte, and nothing that was not sent
    for r in records:
        if r.direction == OUTPUT:
            decode_output(r.frames)  # every output record is a complete, valid message
    valid = read_recording(path).valid_bytes
    repair(path)  # a torn tail, if the kill left one, is cut; the valid prefix is untouched
    assert os.path.getsize(path) == valid and list(read_recording(path)) == records


def test_a_flooding_producer_cannot_make_the_decoder_miss_its_deadline(tiny_bundle, tiny_session):
    """30 s of data sent as fast as the producer can: the daemon decodes the newest window and counts the rest as
    skipped; every window is accounted for, and a decode is never later than the deadline after its message."""
    with (
        running_daemon(tiny_bundle, skip_backlog=True) as daemon,
        connected(daemon, topics=("decode", "status")) as (prod, sub),
    ):
        sent = send_paced(prod, session_messages(tiny_session, behavior=("theta",)), speed=0)
        last = daemon.bundle.window.window_index(tiny_session.stop) - 1
        prod.clock(tiny_session.stop)
        decodes = collect(sub, "decode", lambda out: out[-1]["window"] >= last, timeout=60)
        status = final_status(prod, sub)
    c = status["counters"]
    assert decodes[-1]["window"] == last
    assert status["windows"] + c.get("windows_skipped", 0) == last + 1  # decoded or counted as skipped
    assert status["deadline_misses"] <= 0.01 * status["windows"]
    assert [d["window"] for d in decodes] == sorted(d["window"] for d in decodes)
    if sent["dropped"]:  # the daemon's input queue was full: the producer counted what it could not send
        assert prod.dropped == sent["dropped"]


def test_a_bug_while_handling_one_message_is_counted_and_the_daemon_serves_on(tiny_bundle):
    # window at a time: the bug is injected into the whole-window decode, which streaming never runs
    with running_daemon(tiny_bundle, streaming=False) as daemon, connected(daemon) as (prod, sub):
        real = daemon.decoder.decode
        calls = {"n": 0}

        def fails_once(feeds):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected bug")
            return real(feeds)

        daemon.decoder.decode = fails_once
        prod.spikes(np.array([0.01]), np.array([1], np.int32))
        prod.clock(0.05)  # window 0: decode raises
        prod.clock(0.10)  # window 1: decoded
        (decode,) = collect(sub, "decode", lambda out: len(out) >= 1)
        status = final_status(prod, sub)
    assert decode["window"] == 1 and status["counters"]["internal_error"] == 1
