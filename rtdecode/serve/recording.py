"""Session recordings: every message the daemon receives and publishes, on disk, crash-safe, replayable bit-exactly.

Format (version 1)
------------------
A recording is one append-only file, ``DIR/session-YYYYmmdd-HHMMSS.rtrec`` (local time at creation; ``-2``,
``-3``, ... is added before ``.rtrec`` when that name is taken). All integers are little-endian.

    file    = magic record*
    magic   = b"RTREC\\x00\\x01\\n"                       8 bytes: name, NUL, format version (1), newline
    record  = length:u32 crc:u32 payload[length]
    length  = byte length of payload, 0 < length <= MAX_PAYLOAD (64 MiB)
    crc     = zlib.crc32(payload)
    payload = msgpack map, keys in this order:
                "d": int, 0 = input (received by the daemon), 1 = output (published by it)
                "t": float64, wall-clock time, s since the epoch (time.time()) when the message was recorded
                "m": float64, monotonic time, s (time.monotonic()); only differences within one file mean anything
                "f": array of bin, the ZeroMQ multipart frames exactly as sent/received (topic, header, buffers)

Torn tails. A crash can leave a partial last record. Readers scan from the start; the first record whose 8-byte
header is incomplete, whose length is 0, above MAX_PAYLOAD or past the end of the file, whose crc does not match,
or whose payload is not a map of exactly the fields above, ends the valid prefix. Nothing after it is read,
resynchronised or invented: the valid prefix is the recording. `read_recording` stops there and reports the
dropped bytes; `repair` truncates the file to the valid prefix.

Appending. Writers never reopen an old file: a restarted daemon starts a new recording (the wall times in the
records order them), and `repair` fixes the tail of the old one.

Why this is not temp-file + `os.replace` (style rule 15): a recording is a stream that must be durable while it
grows, so it cannot be published once at the end. The same guarantee comes from two other steps: the file is
created as a temporary holding the full magic, fsynced, then published with `os.link` (atomic, and fails instead of
overwriting), so a recording's name never exists without its header; afterwards the file is only appended to, and
the crc-framed records make any torn tail detectable, so a crash at any byte leaves a valid prefix that
reads the same as before the crash. `repair` truncates in place rather than copying a possibly many-GB file: a crash
during `ftruncate` leaves the old or the new length, and both read as the same records.

Durability. `RecordingWriter.record` only enqueues (a lock, a deque append: about a microsecond), so the daemon's hot
path never waits on the disk. A background thread writes queued records to the OS every 10 ms (a killed process
then loses nothing that was written) and fsyncs every `fsync_interval` seconds (a power cut loses at most that
much); `flush()` forces both and says how many records are durable.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import os
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgpack

from rtdecode.io.atomic import _fsync_dir

__all__ = [
    "INPUT",
    "OUTPUT",
    "MAGIC",
    "MAX_PAYLOAD",
    "Record",
    "RecordingError",
    "RecordingWriter",
    "RecordingReader",
    "read_recording",
    "repair",
    "replay_messages",
]

log = logging.getLogger(__name__)

MAGIC = b"RTREC\x00\x01\n"
INPUT, OUTPUT = 0, 1
MAX_PAYLOAD = 64 * 2**20
SUFFIX = ".rtrec"
_HEADER = struct.Struct("<II")  # payload length, crc32 of payload
_WRITE_INTERVAL = 0.01  # s between the writer thread's wake-ups: how long a record may sit in memory only
_CHUNK = 2**20  # bytes of encoded records per write() call
_FRAME_OVERHEAD = 5  # msgpack bin32 prefix; with _MAP_OVERHEAD an upper bound on payload size from frame lengths
_MAP_OVERHEAD = 64


class RecordingError(RuntimeError):
    """The recording cannot take more records (closed, or the disk write failed)."""


class Record(NamedTuple):
    """One recorded message: direction (INPUT/OUTPUT), wall and monotonic time (s), and its frames."""

    direction: int
    wall: float
    mono: float
    frames: list[bytes]


def _stamp() -> str:
    """The time part of a new recording's name (a function so tests can force two writers into one second)."""
    return time.strftime("%Y%m%d-%H%M%S")


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a regular-file write may be partial, e.g. on a signal or a full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _create(directory: Path) -> tuple[int, Path]:
    """Create a new recording holding just the magic; return (fd open for writing at its end, path)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".session-", suffix=SUFFIX + ".tmp", dir=directory)
    try:
        _write_all(fd, MAGIC)
        os.fsync(fd)
        stamp = _stamp()
        for n in itertools.count(1):
            path = directory / f"session-{stamp}{'' if n == 1 else f'-{n}'}{SUFFIX}"
            try:
                os.link(tmp, path)  # atomic publish that never overwrites: FileExistsError if the name is taken
                break
            except FileExistsError:
                continue
            except OSError:  # no hard links (FAT, some network mounts): exclusive create, then the header; a crash
                # between the two leaves a file that read_recording rejects as not a recording (it holds no records)
                with contextlib.suppress(FileExistsError):
                    new_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # mkstemp's mode too
                    os.close(fd)
                    fd = new_fd
                    _write_all(fd, MAGIC)
                    os.fsync(fd)
                    break
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)
    return fd, path


def _encode(direction: int, wall: float, mono: float, frames: list[bytes]) -> bytes:
    """One framed record: header + msgpack payload (bytes values pack as msgpack bin)."""
    payload = msgpack.packb({"d": direction, "t": wall, "m": mono, "f": frames}, use_bin_type=True)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} bytes exceeds MAX_PAYLOAD ({MAX_PAYLOAD})")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class RecordingWriter:
    """Records messages to a new file in `directory` from a background thread; `record` never touches the disk.

    Args:
        directory: where the recording is created (made if missing); the chosen file is `self.path`.
        fsync_interval: s between fsyncs while records arrive: the most a power cut can lose.
        max_queue: records held in memory before `record` starts dropping (and counting) them. At 10 ms per
            drain this is only reached if the disk stalls or is far slower than the message rate; a non-zero
            `stats["dropped"]` means the recording is incomplete and is logged as an error.

    Use as a context manager, or call `close()`; an unclosed writer is closed at interpreter exit.
    """

    def __init__(self, directory: str | os.PathLike[str], fsync_interval: float = 0.5, max_queue: int = 100_000):
        if fsync_interval <= 0 or max_queue < 1:
            raise ValueError("fsync_interval must be > 0 and max_queue >= 1")
        self._fd, self.path = _create(Path(directory))
        self.fsync_interval = fsync_interval
        self.max_queue = max_queue
        self._queue: collections.deque[tuple[int, float, float, list[bytes]]] = collections.deque()
        # RLock: close() may run from a signal handler that interrupted record() on the same thread.
        self._lock = threading.RLock()
        self._cond = threading.Condition()  # wakes the writer for flush/close; wakes flush() when records are durable
        self._closed = False
        self._stop = False
        self._flush_requested = False
        self._error: BaseException | None = None
        self._enqueued = self._dropped = self._written = self._durable = self._fsyncs = 0
        self._bytes = len(MAGIC)
        self._last_fsync_wall: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"recording-{self.path.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def record(
        self, direction: int, frames: Sequence[bytes], wall: float | None = None, mono: float | None = None
    ) -> None:
        """Enqueue one message (hot path: no I/O). `wall`/`mono` default to now (time.time(), time.monotonic()).

        Frames that are not `bytes` (bytearray, memoryview, zmq.Frame) are copied, so a caller reusing its buffer
        cannot change what is recorded. Raises RecordingError once closed or after a write failure, ValueError
        for a bad direction or frames larger than MAX_PAYLOAD in total.
        """
        if direction not in (INPUT, OUTPUT):
            raise ValueError(f"direction must be INPUT (0) or OUTPUT (1), got {direction!r}")
        direction = int(direction)  # a bool or numpy int would pack as another msgpack type
        wall = time.time() if wall is None else float(wall)
        mono = time.monotonic() if mono is None else float(mono)
        frames = [f if type(f) is bytes else bytes(f) for f in frames]
        if sum(map(len, frames)) + _FRAME_OVERHEAD * len(frames) + _MAP_OVERHEAD > MAX_PAYLOAD:
            raise ValueError(
                f"message of {sum(map(len, frames))} bytes is too large to record (MAX_PAYLOAD = "
                f"{MAX_PAYLOAD}); the protocol's frame limits should reject it before it gets here"
            )
        with self._lock:
            if self._error is not None:
                raise RecordingError(f"recording {self.path} failed: {self._error!r}") from self._error
            if self._closed:
                raise RecordingError(f"recording {self.path} is closed; start a new RecordingWriter to record more")
            if len(self._queue) >= self.max_queue:
                if self._dropped == 0:
                    log.error(
                        "recording %s: queue full (%d records), dropping records; is the disk stalled?",
                        self.path,
                        self.max_queue,
                    )
                self._dropped += 1
                return
            self._queue.append((direction, wall, mono, frames))
            self._enqueued += 1

    def flush(self, timeout: float = 5.0) -> int:
        """Block until every record enqueued so far is written and fsynced; return the number of durable records.

        Raises TimeoutError if that takes longer than `timeout` s, RecordingError if the writer failed.
        """
        with self._lock:
            target = self._enqueued
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            done = self._cond.wait_for(
                lambda: self._durable >= target or self._error is not None or not self._thread.is_alive(), timeout
            )
            self._raise_if_failed()
            if not done or self._durable < target:
                raise TimeoutError(
                    f"recording {self.path}: {self._durable} of {target} records durable after "
                    f"{timeout} s; the disk is too slow or stalled"
                )
            return self._durable

    def close(self, timeout: float | None = None) -> None:
        """Write and fsync everything enqueued, stop the thread and close the file. Idempotent.

        Safe from a signal handler's cleanup path; a `record()` call that the signal interrupted may or may not be
        in the file. Waits for the disk unless `timeout` (s) is given (then TimeoutError if the writer is stuck).
        """
        with self._lock:
            self._closed = True
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"recording {self.path}: writer still busy after {timeout} s")
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            atexit.unregister(self.close)
        self._raise_if_failed()

    @property
    def stats(self) -> dict[str, Any]:
        """records_written (handed to the OS), records_durable (fsynced), bytes (file size written), dropped
        (queue full), fsyncs, last_fsync_wall (time.time() of the last fsync, None before the first)."""
        with self._cond:
            return {
                "records_written": self._written,
                "records_durable": self._durable,
                "bytes": self._bytes,
                "dropped": self._dropped,
                "fsyncs": self._fsyncs,
                "last_fsync_wall": self._last_fsync_wall,
            }

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RecordingError(f"recording {self.path} failed: {self._error!r}") from self._error

    def _run(self) -> None:
        """Writer thread: drain the queue every _WRITE_INTERVAL, fsync every fsync_interval, on flush and on stop."""
        last_fsync = time.monotonic()
        try:
            while True:
                with self._cond:
                    if not (self._stop or self._flush_requested):
                        self._cond.wait(_WRITE_INTERVAL)
                    stop, flush, self._flush_requested = self._stop, self._flush_requested, False
                n = len(self._queue)  # only this thread pops, so these n records are there to take
                while n:  # in chunks of about _CHUNK bytes: one write per chunk, not one copy of the whole queue
                    chunk: list[bytes] = []
                    size = 0
                    while n and size < _CHUNK:
                        chunk.append(_encode(*self._queue.popleft()))
                        size += len(chunk[-1])
                        n -= 1
                    _write_all(self._fd, b"".join(chunk))
                    with self._cond:
                        self._written += len(chunk)
                        self._bytes += size
                now = time.monotonic()
                if self._written > self._durable and (stop or flush or now - last_fsync >= self.fsync_interval):
                    written = self._written
                    os.fsync(self._fd)
                    last_fsync = now
                    with self._cond:
                        self._durable = written
                        self._fsyncs += 1
                        self._last_fsync_wall = time.time()
                if flush or stop:
                    with self._cond:
                        self._cond.notify_all()
                if stop and not self._queue:
                    return
        except BaseException as e:  # disk full, I/O error: record()/flush()/close() raise it from now on
            log.error("recording %s: writer failed: %r", self.path, e)
            with self._cond:
                self._error = e
                self._cond.notify_all()


class RecordingReader:
    """The valid prefix of a recording: iterate for Records; `len()` is the number of records.

    Attributes:
        path: the file.
        records: number of valid records.
        valid_bytes: length of the valid prefix (magic + complete records).
        dropped_tail_bytes: bytes after it (a torn or corrupt tail; 0 for a cleanly closed file).
        tail_reason: why the scan stopped before the end of the file, or None.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.records = 0
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            magic = f.read(len(MAGIC))
            if magic != MAGIC:
                if magic[:5] == MAGIC[:5] and len(magic) == len(MAGIC):
                    raise ValueError(
                        f"{self.path}: recording format version {magic[6]} is not supported "
                        f"(this rtdecode reads version {MAGIC[6]}); upgrade rtdecode"
                    )
                raise ValueError(f"{self.path} is not an rtdecode recording (no {MAGIC!r} header)")
            pos, self.tail_reason = len(MAGIC), None
            while pos < size:
                step = _next_record(f, pos, size)
                if isinstance(step, str):
                    self.tail_reason = f"{step} at byte {pos}"
                    break
                pos = step[1]
                self.records += 1
        self.valid_bytes = pos
        self.dropped_tail_bytes = size - pos

    def __len__(self) -> int:
        return self.records

    def __iter__(self) -> Iterator[Record]:
        with open(self.path, "rb") as f:
            f.seek(len(MAGIC))
            pos = len(MAGIC)
            while pos < self.valid_bytes:
                step = _next_record(f, pos, self.valid_bytes)
                if isinstance(step, str):  # the file changed under us since the scan
                    raise ValueError(f"{self.path}: {step} at byte {pos}, inside the prefix that scanned valid")
                yield step[0]
                pos = step[1]


def _next_record(f: BinaryIO, pos: int, size: int) -> tuple[Record, int] | str:
    """Read the record at `pos` (f positioned there): (record, next position), or why it is not a valid record."""
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return "incomplete record header"
    length, crc = _HEADER.unpack(head)
    if length == 0 or length > MAX_PAYLOAD:
        return f"record length {length} outside 1..{MAX_PAYLOAD}"
    end = pos + _HEADER.size + length
    if end > size:
        return f"record of {length} bytes runs past the end of the file"
    payload = f.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return "crc mismatch"
    record = _decode(payload)
    if record is None:
        return "payload is not a valid record map"
    return record, end


def _decode(payload: bytes) -> Record | None:
    """The Record in a payload, or None if it is not exactly the version-1 map."""
    try:
        obj = msgpack.unpackb(payload, raw=False)
    except Exception:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...) on bad input
        return None
    if not isinstance(obj, dict) or list(obj) != ["d", "t", "m", "f"]:
        return None
    d, t, m, frames = obj["d"], obj["t"], obj["m"], obj["f"]
    if (
        type(d) is not int
        or d not in (INPUT, OUTPUT)
        or type(t) is not float
        or type(m) is not float
        or not isinstance(frames, list)
        or not all(type(x) is bytes for x in frames)
    ):
        return None
    return Record(d, t, m, frames)


def read_recording(path: str | os.PathLike[str]) -> RecordingReader:
    """Open a recording for reading; scans it once for the valid prefix (raises ValueError if not a recording)."""
    return RecordingReader(path)


def repair(path: str | os.PathLike[str]) -> int:
    """Truncate a torn or corrupt tail in place, fsynced; return the number of bytes removed (0 if none).

    Do not repair a file that a live writer is still appending to: its in-flight tail would be cut.
    """
    reader = RecordingReader(path)
    if reader.dropped_tail_bytes:
        log.warning(
            "%s: removing %d bytes after the last valid record (%s)",
            path,
            reader.dropped_tail_bytes,
            reader.tail_reason,
        )
        with open(path, "r+b") as f:
            f.truncate(reader.valid_bytes)
            f.flush()
            os.fsync(f.fileno())
    return reader.dropped_tail_bytes


def replay_messages(path: str | os.PathLike[str], direction: int = INPUT) -> Iterator[tuple[float, list[bytes]]]:
    """Yield (offset s, frames) for each record of `direction`, in file order, for re-sending at original pacing.

    The offset is the record's monotonic time minus that of the first yielded record (so the first is 0.0).
    """
    first: float | None = None
    for rec in read_recording(path):
        if rec.direction == direction:
            first = rec.mono if first is None else first
            yield rec.mono - first, rec.frames
