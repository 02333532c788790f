"""`rtdecode bench serve BUNDLE`: end-to-end latency of the real daemon, with the floors measured beside it.

In one run:
1. floors: a bare ZeroMQ round trip through the same topology (producer PUSH -> echo process PULL -> PUB ->
   subscriber SUB, same transport) and a bare model decode of a typical window (Decoder.decode, in-process);
2. the daemon (`rtdecode serve`, its own process) fed the simulated session (or --data) by a paced producer, at
   each speed (1 = real time, 0 = as fast as possible): end-to-end latency per decoded window = producer send of
   the message that closed the window -> subscriber receive of its decode, on this host's monotonic clock;
   windows/s, deadline misses and skipped windows from the daemon's status; the daemon's CPU use from /proc.
Each daemon mode asked for (window = decode at close, streaming = `--streaming`) gets its own daemon process, one
after the other. Per run: post-close latency (the daemon's own figure: closing message taken off the socket ->
decode computed; encoding and sending are the `publish` stage) beside end-to-end latency, the two
transport legs (time a message waits in the socket behind other work is in the inbound leg, so compare modes on
end-to-end), and post-close p99 by quartile of spikes per window. Counters are per run (one daemon serves every
speed); `stages_ms` medians span the daemon's last 1000 windows.
The daemon's own overhead is p50 end-to-end - p50 bare decode - p50 bare round trip. Writes latency.json (every
raw latency) and latency.png (histograms). Caveat: producer, subscriber and daemon share this machine's cores.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.bench.figures import latency_histogram
from rtdecode.bench.model import percentiles
from rtdecode.data.session import Session
from rtdecode.runtime import Bundle, Decoder
from rtdecode.wire.client import Producer, Subscriber
from rtdecode.wire.replay import send_paced, session_messages

__all__ = ["bench_serve"]

ECHO = """
import sys, zmq
ctx = zmq.Context()
pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
pull.bind(sys.argv[1]); pub.bind(sys.argv[2])
while True:
    frames = pull.recv_multipart()
    if frames[0] == b"quit":
        break
    pub.send_multipart([b"decode"] + frames[1:])
"""


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def zmq_round_trip(transport_dir: Path, n: int = 2000) -> dict[str, float]:
    """Producer -> echo process -> subscriber round trips of a 64-spike message, ms."""
    from rtdecode.wire.protocol import encode_spikes

    a, b = f"ipc://{transport_dir}/echo-in", f"ipc://{transport_dir}/echo-out"
    proc = subprocess.Popen([sys.executable, "-c", ECHO, a, b])
    try:
        with Producer(a) as prod, Subscriber(b, topics=("decode",)) as sub:
            msg = encode_spikes(0, 0.0, np.linspace(0, 0.01, 64), np.arange(64, dtype=np.int32))
            while True:  # wait until the echo is up and the subscription live
                prod.send(msg)
                if sub.socket.poll(100):
                    sub.socket.recv_multipart()
                    break
            out = np.empty(n)
            for i in range(n):
                t0 = time.perf_counter()
                prod.send(msg)
                sub.socket.recv_multipart()
                out[i] = (time.perf_counter() - t0) * 1e3
            prod.send([b"quit"])
    finally:
        proc.wait(timeout=10)
    return percentiles(out)


def bare_decode(bundle: Bundle, session: Session, threads: int, n: int = 300) -> dict[str, float]:
    from rtdecode.data.window import RollingWindow

    decoder = Decoder(bundle, "onnxruntime", **({"threads": threads} if threads else {}))
    rw = RollingWindow(bundle.window, bundle.vocab.n_neurons, start=session.start)
    stop = session.start + 20 * bundle.window.window
    hi = np.searchsorted(session.spike_times, stop)
    windows = rw.push(session.spike_times[:hi], session.spike_neurons[:hi]) + rw.advance(stop)
    feeds = [decoder.window_feeds(w) for w in windows]  # frames, if the model takes them: the mean image
    for f in feeds[:5]:
        decoder.decode(f)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        decoder.decode(feeds[i % len(feeds)])
        out[i] = (time.perf_counter() - t0) * 1e3
    return percentiles(out)


def _collector(endpoint: str, results: Any, stop: Any, ready: Any, newest: Any) -> None:
    """The subscriber, in its own process (as on a rig: a thread beside the producer would share its GIL and add
    milliseconds to the tail). Sends back (window, end-to-end ms, post-close ms, spikes, outbound ms) per decode.

    Post-close is the daemon's own figure: the message that closed the window received -> its decode published.
    Outbound: the daemon's publish stamp -> this receive (same host, same monotonic clock); inbound is the rest.
    """
    sink: list[tuple[int, float, float, int, float]] = []
    with Subscriber(endpoint, topics=("decode", "status")) as sub:
        sub.wait_for("status", timeout=60)
        ready.set()
        while not stop.is_set():
            msg = sub.receive(0.1)
            if msg is not None and msg["topic"] == "decode":
                sink.append(
                    (
                        msg["window"],
                        Subscriber.latency_ms(msg),
                        msg["latency_ms"],
                        msg["n_spikes"],
                        (msg["t_receive"] - msg["t_send"]) * 1e3,
                    )
                )
                newest.value = msg["window"]
    results.send(sink)


MODES = ("window", "streaming", "streaming-warm")
WARM_LEAD_MS = 2.0  # the lead "streaming-warm" serves with


def bench_serve(
    bundle_dir: str | Path,
    session: Session,
    *,
    speeds: tuple[float, ...] = (1.0, 0.0),
    threads: int = 0,
    generate: bool = False,
    modes: tuple[str, ...] = ("window",),
    block: float = 0.005,
    out_dir: Path = Path("bench-serve"),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Modes: "window" (decode each window when it closes), "streaming" (`rtdecode serve --streaming`) and
    "streaming-warm" (streaming with the pre-close cache warm-up, `--warm-lead-ms 2`), each with its own daemon
    process, one after the other in the same run so their figures compare. `block`: seconds of data per spike
    message, each followed by its clock watermark (the rig's acquisition block)."""
    bundle = Bundle.load(bundle_dir)
    if session.n_neurons != bundle.vocab.n_neurons:
        raise ValueError(f"the session has {session.n_neurons} neurons but the model {bundle.vocab.n_neurons}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rtd-bench-"))
    result: dict[str, Any] = {
        "bundle": str(bundle_dir),
        "session_s": session.duration,
        "block_s": block,
        "token_order": bundle.config.window.token_order,
        "runs": {},
    }
    result["floor_zmq_round_trip_ms"] = zmq_round_trip(tmp)
    result["floor_decode_ms"] = bare_decode(bundle, session, threads)
    log(
        f"floors: bare ZMQ round trip p50 {result['floor_zmq_round_trip_ms']['p50']:.3f} ms, bare decode p50 "
        f"{result['floor_decode_ms']['p50']:.3f} ms (p99 {result['floor_decode_ms']['p99']:.3f})"
    )
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        _serve_and_measure(
            bundle_dir, bundle, session, tmp, mode, speeds, threads, generate, block, result, len(modes) > 1, log
        )
    if "real_time" in result["runs"]:
        rt = result["runs"]["real_time"]["latency_ms"]["p50"]
        result["daemon_overhead_ms"] = rt - result["floor_decode_ms"]["p50"] - result["floor_zmq_round_trip_ms"]["p50"]
        log(
            f"daemon overhead at real time (p50 end-to-end - bare decode - bare round trip): {result['daemon_overhead_ms']:.3f} ms"
        )
    (out_dir / "latency.json").write_text(json.dumps(result, indent=2))
    latency_histogram(result["runs"], out_dir / "latency.png")
    log(f"wrote {out_dir / 'latency.json'} and {out_dir / 'latency.png'}")
    return result


def _serve_and_measure(
    bundle_dir: str | Path,
    bundle: Bundle,
    session: Session,
    tmp: Path,
    mode: str,
    speeds: tuple[float, ...],
    threads: int,
    generate: bool,
    block: float,
    result: dict[str, Any],
    tagged: bool,
    log: Callable[[str], None],
) -> None:
    """One daemon process in `mode`, fed the session at each speed; adds one entry per speed to result["runs"]."""
    inp, outp = f"ipc://{tmp}/in-{mode}", f"ipc://{tmp}/out-{mode}"
    cmd = [
        sys.executable,
        "-m",
        "rtdecode.cli",
        "serve",
        str(bundle_dir),
        "--input",
        inp,
        "--output",
        outp,
        "--status-interval",
        "0.25",
        "--threads",
        str(threads),
        "--start",
        str(session.start),
    ]
    cmd += ["--generate"] if generate else []
    cmd += ["--streaming"] if mode.startswith("streaming") else ["--no-streaming"]
    cmd += ["--warm-lead-ms", str(WARM_LEAD_MS)] if mode == "streaming-warm" else []
    daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    behavior = tuple(b.name for b in bundle.behavior_inputs)
    try:
        for speed in speeds:
            mp = multiprocessing.get_context("spawn")
            stop, ready, newest = mp.Event(), mp.Event(), mp.Value("q", -1)
            receive_end, send_end = mp.Pipe(duplex=False)
            collector = mp.Process(target=_collector, args=(outp, send_end, stop, ready, newest), daemon=True)
            collector.start()
            if not ready.wait(120):
                raise RuntimeError("the daemon (or the subscriber process) did not come up")
            with Producer(inp) as prod, Subscriber(outp, topics=("status",)) as status_sub:
                before = status_sub.wait_for("status")  # one daemon serves every speed: counters are per run
                prod.control("reset", start=session.start)
                cpu0, wall0 = _cpu_seconds(daemon.pid), time.monotonic()
                sent = send_paced(prod, session_messages(session, batch=block, behavior=behavior), speed=speed)
                last = bundle.window.window_index(session.stop) - 1
                deadline = time.monotonic() + 60
                while newest.value < last and time.monotonic() < deadline:
                    time.sleep(0.01)  # waiting for the tail of the run to be decoded (bounded)
                cpu = (_cpu_seconds(daemon.pid) - cpu0) / (time.monotonic() - wall0)
                while status_sub.receive(0) is not None:
                    pass  # periodic statuses queued during the run: stale
                prod.control("status")
                status = status_sub.wait_for("status")
            stop.set()
            sink = receive_end.recv() if receive_end.poll(30) else []
            collector.join(5)
            lat = np.array([x[1] for x in sink])
            post = np.array([x[2] for x in sink])
            spikes = np.array([x[3] for x in sink])
            outbound = np.array([x[4] for x in sink])
            name = "real_time" if speed == 1 else ("as_fast_as_possible" if speed == 0 else f"speed_{speed:g}")
            name += "" if mode == "window" else "_" + mode.replace("-", "_")
            c0, c1 = before["counters"], status["counters"]
            status = {
                **status,
                "deadline_misses": status["deadline_misses"] - before["deadline_misses"],
                "counters": {k: v - c0.get(k, 0) for k, v in c1.items()},
            }
            run = {
                "mode": mode,
                "speed": speed,
                "latency_ms": percentiles(lat),
                "post_close_ms": percentiles(post),
                "windows": len(sink),
                "windows_per_s": len(sink) / max(sent["wall_seconds"], 1e-9),
                "wall_s": sent["wall_seconds"],
                "deadline_misses": status["deadline_misses"],
                "skipped": status["counters"].get("windows_skipped", 0),
                # spikes the bundle's token budget cut, in every window that closed (decoded or skipped)
                "spikes_truncated": status["counters"].get("spikes_truncated", 0),
                "spikes": int(spikes.sum()),
                "overload_episodes": status["counters"].get("overload_episodes", 0),
                "streamed": status["counters"].get("windows_streamed", 0),
                "stream_fallback": status["counters"].get("stream_fallback", 0),
                "daemon_cpu": cpu,
                "stages_ms": status.get("stages_ms", {}),
                "inbound_ms": percentiles(lat - post - outbound),
                "outbound_ms": percentiles(outbound),
                "dropped_by_producer": sent["dropped"],
                "raw_ms": lat.tolist(),
                "raw_post_close_ms": post.tolist(),
                "spikes_per_window": spikes.tolist(),
                "counters": status["counters"],
            }
            run["post_close_p99_by_spikes_ms"] = _p99_by_spikes(post, spikes)
            per_minute = int(round(60 / bundle.window.window))  # windows per minute of session time
            run["p99_by_minute_ms"] = [
                float(np.percentile(lat[i : i + per_minute], 99))
                for i in range(0, lat.size - per_minute // 2, per_minute)
            ]
            result["runs"][name] = run
            p, q = run["latency_ms"], run["post_close_ms"]
            log(
                f"{name:30s}: {run['windows']} windows in {run['wall_s']:.1f} s ({run['windows_per_s']:.0f}/s); post-close "
                f"p50 {q['p50']:.2f} / p99 {q['p99']:.2f} / p99.9 {q['p99.9']:.2f} ms; end-to-end p50 {p['p50']:.2f}, "
                f"p99 {p['p99']:.2f}, p99.9 {p['p99.9']:.2f}, max {p['max']:.2f} ms; deadline misses "
                f"{run['deadline_misses']}, skipped {run['skipped']}, spikes truncated {run['spikes_truncated']}"
                + (
                    f", streamed {run['streamed']}, fell back {run['stream_fallback']}, warm-ups "
                    f"{run['counters'].get('stream_warm_runs', 0)} ({run['counters'].get('stream_warm_overlap', 0)} still "
                    "running at a close)"
                    if mode != "window"
                    else ""
                )
                + f", daemon CPU {cpu:.0%}"
            )
            if run["stages_ms"]:
                log(
                    f"{'':30s}  post-close p50 by stage: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in run["stages_ms"].items())
                    + f" ms; producer -> daemon p50 {run['inbound_ms']['p50']:.3f} / p99 {run['inbound_ms']['p99']:.3f} ms, "
                    f"daemon -> subscriber p50 {run['outbound_ms']['p50']:.3f} / p99 {run['outbound_ms']['p99']:.3f} ms"
                )
            if len(run["p99_by_minute_ms"]) > 1:
                log(
                    f"{'':30s}  p99 per minute of data: "
                    + ", ".join(f"{x:.2f}" for x in run["p99_by_minute_ms"])
                    + " ms"
                )
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _p99_by_spikes(post: np.ndarray, spikes: np.ndarray) -> dict[str, float]:
    """Post-close p99 per quartile of spikes per window: flat means the close does not pay for the window's size."""
    if post.size < 8:
        return {}
    edges = np.unique(np.percentile(spikes, [0, 25, 50, 75, 100]))
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (spikes >= lo) & ((spikes < hi) | (hi == edges[-1]))
        if sel.sum() >= 4:
            out[f"{int(lo)}-{int(hi)}"] = float(np.percentile(post[sel], 99))
    return out
