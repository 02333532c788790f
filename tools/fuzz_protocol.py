"""Fuzz a live daemon's input socket: N messages, bad ones interleaved with a simulated session's valid traffic.

    python tools/fuzz_protocol.py                      # 100,000 messages, half of them bad, on the v1 test bundle
    python tools/fuzz_protocol.py --messages 1000000 --bundle bundle/ --seed 3

What it measures (exit status 1 if a check fails):
1. the daemon survives: after the last message it still answers a status request and its thread is running;
2. every bad message is counted: for each reject reason the daemon's counter equals the number of bad messages
   sent that `rtdecode.wire.hostile.expected_rejection` gives that reason (so the sums agree too), and the valid
   producer's sequence counters stay zero (a rejected message never touches sequence state);
3. the valid traffic decodes exactly as without the bad messages: a clean run of the same valid messages through
   a fresh daemon gives the same windows with bit-identical values, spike counts and closing sequence numbers.

Bad messages come from `rtdecode.wire.hostile.bad_message` (corpus entries, random bytes, byte mutations, truncations,
wrong-typed fields, wrong versions, oversized headers/arrays/frames) built from templates of all five input topics.
A candidate the daemon would accept (a mutation that stays valid, such as a flipped bit inside a spike time) is
not a bad message: sending it would change the decoder's state, so it is counted as "discarded" and not sent.
Caveats: everything goes through one PUSH socket (ordered, blocking sends: nothing is dropped for backpressure);
messages over 512 KiB (16 MiB frames, 65,537-spike arrays) are capped by --huge; timings share the machine with
whatever else runs on it.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import zmq

from rtdecode.runtime import Bundle
from rtdecode.serve.daemon import Daemon, ServeConfig, serve_in_thread
from rtdecode.sim.simulator import SimulationConfig, simulate
from rtdecode.wire.hostile import REJECT_REASONS, bad_message, expected_rejection
from rtdecode.wire.protocol import (
    INPUT_TOPICS,
    encode_behavior,
    encode_clock,
    encode_control,
    encode_frame,
    encode_spikes,
)
from rtdecode.wire.replay import session_messages

ROOT = Path(__file__).resolve().parents[1]
V1_BUNDLE = ROOT / "tests" / "fixtures" / "v1" / "bundle"
ENCODERS: dict[str, Callable[..., list[bytes]]] = {
    "spikes": encode_spikes,
    "frame": encode_frame,
    "behavior": encode_behavior,
    "clock": encode_clock,
}
SRC = "fuzz-valid"


def valid_traffic(bundle: Bundle, n: int, seed: int) -> list[list[bytes]]:
    """The first n messages of a simulated session matching the bundle, encoded once (both runs send these bytes)."""
    fr = bundle.frames
    shape = (fr.height, fr.width) if fr.enabled else (32, 64)
    duration = n / 300 + 2.0  # ~360 messages per second of session at 5-ms batches
    k = bundle.vocab.n_neurons // 8
    session = simulate(
        SimulationConfig(
            n_neurons=bundle.vocab.n_neurons,
            duration=duration,
            n_visual=k,
            n_speed=k,
            n_phi=k,
            n_theta=k,
            frame_shape=shape,
            seed=seed,
        )
    )
    names = tuple(b.name for b in bundle.behavior_inputs if b.name in session.behavior)
    out = []
    for i, (_, kind, args) in enumerate(session_messages(session, batch=0.005, behavior=names)):
        if i == n:
            break
        out.append(ENCODERS[kind](i, 0.0, *args, src=SRC))
    return out


def run(bundle_dir: Path, messages, workdir: Path) -> tuple[dict[int, tuple], dict, bool, float]:
    """Serve `messages` (an iterable of frames) through a fresh daemon; (decodes by window, counters, alive, s)."""
    ipc = Path(tempfile.mkdtemp(prefix="fz-", dir=workdir))
    # decoding at close: bit-identical run to run (a streamed window's float sums depend on arrival timing)
    daemon = Daemon(
        bundle_dir,
        ServeConfig(input=f"ipc://{ipc}/in", output=f"ipc://{ipc}/out", status_interval=0.2, streaming=False),
    )
    ctx = zmq.Context()
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)  # unbounded: decodes wait here while this thread is busy sending
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        with serve_in_thread(daemon):
            sub.connect(daemon.output_endpoint)
            push.connect(daemon.input_endpoint)
            sub.poll(10_000)  # the subscription is live once anything (a periodic status) arrives
            start = time.perf_counter()
            for frames in messages:
                push.send_multipart(frames)  # blocking: the fuzz must not lose messages to backpressure
            push.send_multipart(encode_control(0, 0.0, "status"))  # after everything else on this socket
            decodes, counters = {}, None
            while counters is None and sub.poll(120_000):
                topic, header = sub.recv_multipart()[:2]
                h = msgpack.unpackb(header)
                if topic == b"decode":
                    decodes[h["window"]] = (h["values"], h["n_spikes"], h["truncated"], h["in_seq"])
                elif topic == b"status" and h["counters"].get("msg_control", 0) >= 1:
                    counters = h["counters"]
            elapsed = time.perf_counter() - start
        # alive: it answered the status request sent after everything else (a dead loop answers nothing)
        return decodes, counters or {}, counters is not None, elapsed
    finally:
        push.close(linger=0)
        sub.close(linger=0)
        ctx.term()
        shutil.rmtree(ipc, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=100_000, help="messages sent in the fuzzed run, bad + valid")
    ap.add_argument("--bad-fraction", type=float, default=0.5, help="share of bad messages")
    ap.add_argument("--bundle", type=Path, default=V1_BUNDLE, help="model bundle the daemon serves")
    ap.add_argument("--huge", type=int, default=20, help="at most this many bad messages over 512 KiB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.bundle / "manifest.json").exists():
        ap.error(f"{args.bundle} is not a bundle; make one with `rtdecode export` or pass the repository's {V1_BUNDLE}")
    bundle = Bundle.load(args.bundle)
    logging.getLogger("rtdecode").setLevel(logging.ERROR)  # one warning per reason per second; the table counts all
    n_bad = round(args.messages * args.bad_fraction)
    t0 = time.perf_counter()
    valid = valid_traffic(bundle, args.messages - n_bad, args.seed)
    templates = valid[:400] + [encode_control(0, 0.0, "status", src=SRC), encode_control(1, 0.0, "reset", 0.0)]
    fr = bundle.frames
    shape = (fr.height, fr.width) if fr.enabled else None
    behaviors = {b.name for b in bundle.behavior_inputs}
    rng = random.Random(args.seed)
    is_bad = [True] * n_bad + [False] * len(valid)
    rng.shuffle(is_bad)
    expected: collections.Counter[str] = collections.Counter()
    sent: collections.Counter[str] = collections.Counter()
    by_topic: collections.Counter[str] = collections.Counter()
    discarded: collections.Counter[str] = collections.Counter()
    huge_left = [args.huge]

    def next_bad() -> list[bytes]:
        while True:  # bad messages are made as they are sent: 50k of them would not fit in memory at once
            category, frames = bad_message(rng, templates, huge=huge_left[0] > 0)
            reason = expected_rejection(frames, shape, behaviors) if frames else None
            if reason is None:  # accepted by the daemon, or no frame at all (ZeroMQ cannot send that)
                discarded[category] += 1
                continue
            huge_left[0] -= sum(map(len, frames)) > 512 * 1024
            expected[reason] += 1
            sent[category] += 1
            topic = bytes(frames[0]).decode("ascii", "replace") if frames else ""
            by_topic[topic if topic in INPUT_TOPICS else "other"] += 1
            return frames

    def fuzzed():
        it = iter(valid)
        for bad in is_bad:
            yield next_bad() if bad else next(it)

    t_gen = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        clean, clean_counters, clean_alive, t_clean = run(args.bundle, valid, Path(tmp))
        fuzz, counters, alive, t_fuzz = run(args.bundle, fuzzed(), Path(tmp))

    print(
        f"fuzz_protocol: {args.messages} messages ({n_bad} bad, {len(valid)} valid), seed {args.seed}, "
        f"bundle {args.bundle}"
    )
    print(
        f"\n{'bad messages by category':<28}{'sent':>10}{'discarded':>11}   (discarded: accepted by the daemon, "
        "or zero frames)"
    )
    for c in sorted(set(sent) | set(discarded)):
        print(f"  {c:<26}{sent[c]:>10}{discarded[c]:>11}")
    print(f"  {'(of which over 512 KiB)':<26}{args.huge - huge_left[0]:>10}")
    print(f"\n{'bad messages by topic':<28}{'sent':>10}")
    for t in (*INPUT_TOPICS, "other"):
        print(f"  {t:<26}{by_topic[t]:>10}")
    print(f"\n{'reject counter':<28}{'expected':>10}{'counted':>11}{'clean run':>11}")
    ok_counts = True
    for r in REJECT_REASONS:
        got = int(counters.get(r, 0))
        ok_counts &= got == expected[r] and not clean_counters.get(r, 0)
        print(f"  {r:<26}{expected[r]:>10}{got:>11}{int(clean_counters.get(r, 0)):>11}")
    total = sum(int(counters.get(r, 0)) for r in REJECT_REASONS)
    print(f"  {'total':<26}{sum(expected.values()):>10}{total:>11}")
    seq_noise = {k: v for k, v in counters.items() if k.startswith("seq_") and v}
    same = clean == fuzz
    checks = {
        "daemon alive after the fuzz": alive and clean_alive,
        "every bad message counted under its reason": ok_counts and total == n_bad,
        "valid producer's sequence counters untouched": not seq_noise,
        f"valid decodes identical to the clean run ({len(clean)} windows)": same and len(clean) > 0,
    }
    print()
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    if not same:
        diff = [w for w in set(clean) | set(fuzz) if clean.get(w) != fuzz.get(w)]
        print(f"    {len(diff)} windows differ, first {sorted(diff)[:5]}")
    if seq_noise:
        print(f"    sequence counters: {seq_noise}")
    print(
        f"\ntime: generating valid traffic {t_gen:.1f} s, clean run {t_clean:.1f} s ({len(valid) / t_clean:,.0f} msg/s), "
        f"fuzzed run {t_fuzz:.1f} s ({args.messages / t_fuzz:,.0f} msg/s, bad messages made on the fly)"
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
