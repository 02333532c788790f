"""Recordings: bit-exact round trips, durability, torn tails at every offset, a SIGKILLed writer, hostile files."""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import msgpack
import pytest

import rtdecode.serve.recording as recording
from rtdecode.serve.recording import (
    INPUT,
    MAGIC,
    OUTPUT,
    Record,
    RecordingError,
    RecordingWriter,
    read_recording,
    repair,
    replay_messages,
)

REPO = Path(__file__).resolve().parents[1]
BIG = 1 << 20


def frames_for(i: int) -> list[bytes]:
    """Deterministic frames for message i: topic, a header, and a binary buffer of varying size (some empty)."""
    body = bytes((i * 7 + k) % 256 for k in range((i * 37) % 300)) if i % 5 else b""
    return [b"spikes" if i % 2 == 0 else b"decode", msgpack.packb({"seq": i}), body]


def write_records(directory: Path, n: int) -> tuple[Path, list[Record]]:
    """A closed recording of n messages with explicit times; returns its path and the expected records."""
    expected = [Record(i % 2, 1.7e9 + i / 3, 100.0 + i / 7, frames_for(i)) for i in range(n)]
    with RecordingWriter(directory) as w:
        for r in expected:
            w.record(r.direction, r.frames, wall=r.wall, mono=r.mono)
    return w.path, expected


def boundaries(path: Path) -> list[int]:
    """Byte offsets where each record ends, parsed straight from the spec (independent of the reader)."""
    data = path.read_bytes()
    assert data[:8] == MAGIC
    pos, ends = 8, []
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 8 + length
        ends.append(pos)
    assert pos == len(data)
    return ends


def test_golden_bytes(tmp_path, monkeypatch):
    """Format version 1, pinned: a change here breaks every recording already on disk."""
    monkeypatch.setattr(recording, "_stamp", lambda: "20240101-000000")
    with RecordingWriter(tmp_path) as w:
        w.record(OUTPUT, [b"t", b"", b"\x00\xff"], wall=1.5, mono=2.25)
    payload = bytes.fromhex("84a16401a174cb3ff8000000000000a16dcb4002000000000000a16693c40174c400c40200ff")
    assert w.path.name == "session-20240101-000000.rtrec"
    assert w.path.read_bytes() == MAGIC + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    assert list(read_recording(w.path)) == [Record(1, 1.5, 2.25, [b"t", b"", b"\x00\xff"])]


def test_round_trip_is_bit_exact(tmp_path):
    path, expected = write_records(tmp_path, 200)
    extra = [
        Record(INPUT, 1.0, 2.0, [b"raw", os.urandom(BIG)]),
        Record(OUTPUT, 3.0, 4.0, []),
        Record(INPUT, 5.0, float("inf"), [b"", b"", b""]),
    ]
    with RecordingWriter(tmp_path) as w:
        for r in expected + extra:
            w.record(r.direction, r.frames, wall=r.wall, mono=r.mono)
        w.record(INPUT, [bytearray(b"abc"), memoryview(b"de")])  # copied to bytes; default times are now
    reader = read_recording(w.path)
    got = list(reader)
    assert got[:-1] == expected + extra
    assert got[-1].frames == [b"abc", b"de"] and got[-1].mono > 0
    assert len(reader) == len(got) and reader.dropped_tail_bytes == 0 and reader.tail_reason is None
    assert reader.valid_bytes == w.path.stat().st_size == w.stats["bytes"]
    assert list(read_recording(path)) == expected


def test_flush_close_and_record_after_close(tmp_path):
    w = RecordingWriter(tmp_path, fsync_interval=3600)
    for i in range(10):
        w.record(INPUT, frames_for(i))
    assert w.stats["records_durable"] == 0  # no fsync before the interval or a flush
    assert w.flush() == 10
    s = w.stats
    assert s["records_durable"] == s["records_written"] == 10 and s["fsyncs"] >= 1 and s["last_fsync_wall"]
    w.record(OUTPUT, [b"x"])
    w.close()
    w.close()  # idempotent
    assert w.stats["records_durable"] == 11 and w.flush() == 11
    with pytest.raises(RecordingError, match="closed"):
        w.record(INPUT, [b"late"])
    assert len(read_recording(w.path)) == 11


def test_record_does_no_io_on_the_callers_thread(tmp_path, monkeypatch):
    io_threads: list[str] = []
    with RecordingWriter(tmp_path, fsync_interval=3600) as w:  # creating the file does I/O here; recording must not
        for name in ("write", "fsync"):
            real = getattr(os, name)
            monkeypatch.setattr(
                os, name, lambda *a, _real=real: (io_threads.append(threading.current_thread().name), _real(*a))[1]
            )
        for i in range(10_000):
            w.record(i % 2, [b"t", i.to_bytes(4, "little")])
        assert w.flush() == 10_000
    assert io_threads and threading.main_thread().name not in io_threads
    assert [int.from_bytes(r.frames[1], "little") for r in read_recording(w.path)] == list(range(10_000))


def test_full_queue_drops_and_counts_without_blocking(tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_write = os.write

    def stalled_write(fd, data):  # the writer thread's first write stalls, as on a hung disk
        if threading.current_thread() is not threading.main_thread() and not release.is_set():
            entered.set()
            release.wait(10)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", stalled_write)
    with RecordingWriter(tmp_path, max_queue=5) as w:
        w.record(INPUT, [b"0"])
        assert entered.wait(10)
        for i in range(1, 9):
            w.record(INPUT, [str(i).encode()])  # 5 fit in the queue, 3 are dropped
        assert w.stats["dropped"] == 3
        release.set()
        assert w.flush() == 6
    assert [r.frames for r in read_recording(w.path)] == [[str(i).encode()] for i in range(6)]


def test_write_failure_is_reported(tmp_path, monkeypatch):
    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    w = RecordingWriter(tmp_path)
    monkeypatch.setattr(os, "write", full_disk)
    w.record(INPUT, [b"x"])
    with pytest.raises(RecordingError, match="No space"):
        w.flush()
    with pytest.raises(RecordingError):
        w.record(INPUT, [b"y"])
    with pytest.raises(RecordingError):
        w.close()


def test_bad_arguments(tmp_path, monkeypatch):
    with RecordingWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="direction"):
            w.record(2, [b"x"])
        monkeypatch.setattr(recording, "MAX_PAYLOAD", 1000)
        with pytest.raises(ValueError, match="too large"):
            w.record(INPUT, [bytes(1000)])
        w.record(True, [bytes(100)])  # a bool direction is stored as the int 1
    assert list(read_recording(w.path))[0].direction == 1


def test_torn_tail_at_every_offset(tmp_path):
    path, expected = write_records(tmp_path, 30)
    data, ends = path.read_bytes(), boundaries(path)
    start = ends[-3]  # the tear falls inside one of the last 2 records, or exactly on a boundary
    offsets = sorted(
        set(range(start, len(data), max(1, (len(data) - start) // 50)))
        | {start, start + 1, start + 7, start + 8, ends[-2] - 1, ends[-2], ends[-2] + 1, len(data) - 1}
    )
    torn = tmp_path / "torn" / "t.rtrec"
    torn.parent.mkdir()
    for cut in offsets:
        torn.write_bytes(data[:cut])
        complete = sum(end <= cut for end in ends)
        valid = ends[complete - 1]
        reader = read_recording(torn)
        assert list(reader) == expected[:complete], cut
        assert (reader.valid_bytes, reader.dropped_tail_bytes) == (valid, cut - valid), cut
        assert (reader.tail_reason is None) == (cut == valid)
        assert repair(torn) == cut - valid
        assert torn.stat().st_size == valid
        reader = read_recording(torn)
        assert reader.dropped_tail_bytes == 0 and list(reader) == expected[:complete]
        assert repair(torn) == 0


@pytest.mark.parametrize("where", ["crc", "payload", "length"])
def test_corruption_in_the_middle_ends_the_valid_prefix(tmp_path, where):
    path, expected = write_records(tmp_path, 20)
    data, ends = bytearray(path.read_bytes()), boundaries(path)
    at = {"crc": ends[4] + 4, "payload": ends[4] + 12, "length": ends[4] + 3}[where]
    data[at] ^= 0xFF  # record 5 (0-based) is damaged; records 6.. are intact but are never read
    path.write_bytes(bytes(data))
    reader = read_recording(path)
    assert list(reader) == expected[:5]
    assert reader.valid_bytes == ends[4] and reader.dropped_tail_bytes == len(data) - ends[4]
    assert repair(path) == len(data) - ends[4] and list(read_recording(path)) == expected[:5]


def test_hostile_files(tmp_path):
    def rec(payload: bytes, crc: int | None = None) -> bytes:
        return struct.pack("<II", len(payload), zlib.crc32(payload) if crc is None else crc) + payload

    good = msgpack.packb({"d": 0, "t": 1.0, "m": 2.0, "f": [b"x"]})
    cases = {
        "huge length": struct.pack("<II", 0xFFFFFFFF, 0) + b"\0" * 64,
        "zero length": struct.pack("<II", 0, 0),
        "not msgpack": rec(b"\xc1\xc1"),
        "trailing bytes": rec(good + b"\x00"),
        "wrong keys": rec(msgpack.packb({"d": 0, "t": 1.0, "f": [b"x"]})),
        "bad direction": rec(msgpack.packb({"d": 2, "t": 1.0, "m": 2.0, "f": [b"x"]})),
        "int time": rec(msgpack.packb({"d": 0, "t": 1, "m": 2.0, "f": [b"x"]})),
        "str frame": rec(msgpack.packb({"d": 0, "t": 1.0, "m": 2.0, "f": ["x"]})),
    }
    for name, bad in cases.items():
        p = tmp_path / f"{name}.rtrec"
        p.write_bytes(MAGIC + rec(good) + bad + rec(good))
        reader = read_recording(p)
        assert (len(reader), reader.valid_bytes) == (1, len(MAGIC) + len(rec(good))), name
    (tmp_path / "other.bin").write_bytes(b"PK\x03\x04 not a recording")
    with pytest.raises(ValueError, match="not an rtdecode recording"):
        read_recording(tmp_path / "other.bin")
    (tmp_path / "v2.rtrec").write_bytes(b"RTREC\x00\x02\n")
    with pytest.raises(ValueError, match="version 2"):
        read_recording(tmp_path / "v2.rtrec")


@pytest.mark.parametrize("hard_links", [True, False])
def test_names_are_unique_and_never_overwrite(tmp_path, monkeypatch, hard_links):
    monkeypatch.setattr(recording, "_stamp", lambda: "20240101-120000")
    if not hard_links:  # filesystems without link(2) (FAT, some network mounts) fall back to O_EXCL
        monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted")))
    writers = [RecordingWriter(tmp_path) for _ in range(3)]
    try:
        for i, w in enumerate(writers):
            w.record(INPUT, [str(i).encode()])
    finally:
        for w in writers:
            w.close()
    names = [w.path.name for w in writers]
    assert names == [
        "session-20240101-120000.rtrec",
        "session-20240101-120000-2.rtrec",
        "session-20240101-120000-3.rtrec",
    ]
    assert [list(read_recording(w.path))[0].frames for w in writers] == [[b"0"], [b"1"], [b"2"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporaries left behind


def test_replay_messages(tmp_path):
    with RecordingWriter(tmp_path) as w:
        for i, mono in enumerate([10.0, 10.5, 10.25, 11.0, 12.5]):
            w.record(INPUT if i != 2 else OUTPUT, [b"m", bytes([i])], mono=mono)
    assert list(replay_messages(w.path)) == [
        (0.0, [b"m", b"\0"]),
        (0.5, [b"m", b"\1"]),
        (1.0, [b"m", b"\3"]),
        (2.5, [b"m", b"\4"]),
    ]
    assert list(replay_messages(w.path, direction=OUTPUT)) == [(0.0, [b"m", b"\2"])]


CHILD = """
import sys
from tests.test_recording import frames_for
from rtdecode.serve.recording import RecordingWriter
n = int(sys.argv[2])
w = RecordingWriter(sys.argv[1], fsync_interval=3600)
for i in range(n):
    w.record(i % 2, frames_for(i))
w.flush()
for i in range(n, n + 200):  # records in flight (queued or being written) when the kill comes
    w.record(i % 2, frames_for(i) + ([bytes(20_000)] if i % 50 == 0 else []))
print("flushed", n, w.path, flush=True)
i = n + 200
while True:  # keep recording, never flushing, until killed
    w.record(i % 2, frames_for(i) + ([bytes(20_000)] if i % 50 == 0 else []))
    i += 1
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX-only")
def test_sigkilled_writer_loses_nothing_flushed(tmp_path):
    n = 500
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(n)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert line.startswith(f"flushed {n} "), f"child did not report its flush: {line!r} {err}"
    assert proc.returncode == -signal.SIGKILL
    reader = read_recording(line.split(" ", 2)[2].strip())
    got = list(reader)
    assert len(got) >= n
    for i, r in enumerate(got):  # the flushed records, and every later record that made it, are exactly right
        assert r.direction == i % 2 and r.frames[:3] == frames_for(i), i
