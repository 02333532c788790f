"""Tokenizer throughput on the simulated session: offline spikes/s and live cost per 64-spike batch.

What it measures:
  * offline: `tokenize_session` on the whole session (quantise, sort into token order, window pointers), plus
    packing every window into padded SOS/EOS/PAD arrays, as spikes per second; best of --repeats runs.
  * live: `RollingWindow.push` per batch of --batch spikes fed in time order, in microseconds. Batches that stay
    inside the open window (the common case at high rates) and batches that cross a window boundary (and so pay
    for sorting and closing that window) are reported separately, plus all batches together.
Caveats: a shared 2-core machine is noisy (+/-20%); compare figures only within one run. Batches of 64 spikes at
the simulated session's ~1,300 spikes/s span ~50 ms, so most of them cross a boundary; a rig sending 1-ms
batches pays the crossing cost once per window.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rtdecode.data.tokenizer import WindowConfig, tokenize_session
from rtdecode.data.window import RollingWindow
from rtdecode.sim.simulator import SimulationConfig, simulate


def bench_offline(times: np.ndarray, neurons: np.ndarray, n: int, stop: float, repeats: int) -> dict[str, float]:
    cfg = WindowConfig()
    best_tok, best_all = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        ts = tokenize_session(times, neurons, n, 0.0, stop, cfg)
        t1 = time.perf_counter()
        w = np.arange(ts.n_windows)
        ts.current(w), ts.history(w)
        t2 = time.perf_counter()
        best_tok, best_all = min(best_tok, t1 - t0), min(best_all, t2 - t0)
    return {"spikes_per_s": times.size / best_tok, "spikes_per_s_with_packing": times.size / best_all}


def bench_live(times: np.ndarray, neurons: np.ndarray, n: int, batch: int) -> dict[str, np.ndarray]:
    rw = RollingWindow(WindowConfig(), n)
    inside: list[float] = []
    crossing: list[float] = []
    clock = time.perf_counter_ns
    for lo in range(0, times.size - batch + 1, batch):
        t, nn = times[lo : lo + batch], neurons[lo : lo + batch]
        before = rw.open_index
        a = clock()
        rw.push(t, nn)
        b = clock()
        (crossing if rw.open_index != before else inside).append((b - a) / 1e3)
    return {"inside": np.array(inside), "crossing": np.array(crossing)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="simulated seconds (default: %(default)s)")
    p.add_argument("--neurons", type=int, default=300, help="simulated neurons (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="spikes per live batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="offline repeats, best kept (default: %(default)s)")
    args = p.parse_args()

    s = simulate(SimulationConfig(n_neurons=args.neurons, duration=args.duration))
    print(f"session: {s.n_neurons} neurons, {s.duration:.0f} s, {s.n_spikes:,} spikes")
    off = bench_offline(s.spike_times, s.spike_neurons, s.n_neurons, s.stop, args.repeats)
    print(
        f"offline tokenize: {off['spikes_per_s'] / 1e6:.1f} M spikes/s "
        f"({off['spikes_per_s_with_packing'] / 1e6:.1f} M spikes/s including padded packing of every window)"
    )
    live = bench_live(s.spike_times, s.spike_neurons, s.n_neurons, args.batch)
    allb = np.concatenate([live["inside"], live["crossing"]])
    for name, v in (("inside a window", live["inside"]), ("closing a window", live["crossing"]), ("all", allb)):
        if v.size:
            p50, p99, p999 = np.percentile(v, [50, 99, 99.9])
            print(
                f"live push, {args.batch}-spike batch, {name:16s} n={v.size:6d}  "
                f"mean {v.mean():5.1f} us  p50 {p50:5.1f} us  p99 {p99:5.1f} us  p99.9 {p999:6.1f} us"
            )


if __name__ == "__main__":
    main()
