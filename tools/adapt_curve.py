"""A new recording day: decoding after minutes of adaptation, against a model trained from scratch on that day.

What it does, in one command:
  1. simulates K + 1 recording days of one circuit (`rtdecode.sim.days`: other units recorded, renumbered,
     drifted), K = --pretrain-days (default 1);
  2. trains the config on days 0 .. K-1 (the pretrained run; with K > 1 one multi-session model,
     `rtdecode.training.sessions`), the new day is day K;
  3. holds out the last `--eval-fraction` of the new day; for each number of minutes (default 0.5, 1, 2, 5) adapts
     the pretrained run to the first minutes of it (`rtdecode adapt`): without labels (next-spike loss only, the
     pretrained behavior heads), and with all labels of those minutes (heads and fused stack too); fits ridge on
     the binned counts of the same minutes;
  4. trains the config from scratch on all of the new day before the held-out part;
  5. scores every model on the held-out part (Pearson r per variable, the mean over variables), prints a table
     with each r as a share of the from-scratch r and the seconds each adaptation took, writes adapt.json and
     adapt.png.
Units shared between the days start from their pretrained rows with --same-units (the truth's mapping, as a
user would give after matching waveforms; the last pretraining day's units, adapting from its per-session run
when K > 1); by default every unit of the new day is new.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from rtdecode.core.config import RunConfig, load_config
from rtdecode.core.metrics import binned_counts, pearson_r, ridge_decode
from rtdecode.core.window_data import WindowData, context_reach
from rtdecode.data.session import Session
from rtdecode.io import save_session
from rtdecode.sim.days import simulate_days
from rtdecode.sim.simulator import SimulationConfig
from rtdecode.training.adapt import adapt
from rtdecode.training.checkpoint import LoadedRun, read_meta
from rtdecode.training.evaluate import evaluate
from rtdecode.training.sessions import train_sessions
from rtdecode.training.train import train

QUIET = {"log": lambda _: None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("adapt-out"), help="(default: %(default)s)")
    p.add_argument("--config", default="small", help="run config file or built-in name (default: %(default)s)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds per simulated day (default: %(default)s)")
    p.add_argument("--circuit", type=int, default=400, help="neurons in the circuit (default: %(default)s)")
    p.add_argument("--recorded", type=int, default=300, help="units recorded a day (default: %(default)s)")
    p.add_argument("--overlap", type=float, default=0.7, help="units shared by the days (default: %(default)s)")
    p.add_argument("--drift", type=float, default=0.1, help="log-rate/gain drift per day (default: %(default)s)")
    p.add_argument(
        "--train-minutes", type=float, default=5.0, help="budget of each full training (default: %(default)s)"
    )
    p.add_argument("--minutes", type=float, nargs="+", default=[0.5, 1, 2, 5], help="(default: %(default)s)")
    p.add_argument("--adapt-seconds", type=float, default=60.0, help="budget of each adaptation (default: %(default)s)")
    p.add_argument(
        "--eval-fraction", type=float, default=0.3, help="held-out end of the new day (default: %(default)s)"
    )
    p.add_argument("--same-units", action="store_true", help="shared units start from their pretrained rows")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the day-0 and from-scratch runs in --out (made with the same arguments)",
    )
    p.add_argument("--name", default="adapt", help="stem of the outputs (default: %(default)s)")
    p.add_argument(
        "--pretrain-days", type=int, default=1, help="days the pretrained run learns from (default: %(default)s)"
    )
    p.add_argument(
        "--new-day",
        type=int,
        default=None,
        help="index of the new day; pretraining uses the --pretrain-days days just before it (default: K)",
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    new_day = args.pretrain_days if args.new_day is None else args.new_day
    if not 1 <= args.pretrain_days <= new_day:
        raise SystemExit("need 1 <= --pretrain-days <= --new-day")

    days = simulate_days(
        SimulationConfig(n_neurons=args.circuit, duration=args.duration),
        days=new_day + 1,
        overlap=args.overlap,
        recorded=args.recorded,
        drift=args.drift,
    )
    first = new_day - args.pretrain_days
    pretrain_days, day1 = days[first:new_day], days[new_day]
    day0 = pretrain_days[-1]  # the pretraining day the new day shares most units with
    cfg = _config(args.config, args.train_minutes)
    cut = day1.start + (1 - args.eval_fraction) * day1.duration
    guard = cfg.window.window + context_reach(cfg)  # no held-out window reads what a trained one read
    before, held_out = day1.slice_time(day1.start, cut), day1.slice_time(cut + guard, day1.stop)
    if max(args.minutes) * 60 > before.duration:
        raise SystemExit(
            f"--minutes up to {max(args.minutes)} needs {max(args.minutes)} min of the new day before its held-out part"
        )
    day_names = [f"day{i}" for i in range(first, new_day)]
    pretrained = args.out / (day_names[0] if len(day_names) == 1 else f"days{first}-{new_day - 1}")
    if not (args.reuse and (pretrained / "checkpoint.json").exists()):
        units = "+".join(str(d.n_neurons) for d in pretrain_days)
        print(f"training on {', '.join(day_names)} ({units} units, at most {args.train_minutes:g} min) ...")
        if args.pretrain_days == 1:
            save_session(day0, args.out / f"{day_names[0]}.npz")
            train(cfg, args.out / f"{day_names[0]}.npz", pretrained, **QUIET)
        else:
            train_sessions(cfg, pretrain_days, pretrained, names=day_names, **QUIET)
    pre = read_meta(pretrained)
    names = [b.name for b in _targets(pretrained)]
    print(f"  pretrained: {pre['step']} steps; test r " + ", ".join(f"{n} {pre['test'][f'{n}_r']:.3f}" for n in names))
    # units are mapped by ID from one session's run; with several days, the last one's per-session run
    source = pretrained if args.pretrain_days == 1 else pretrained / "sessions" / day_names[-1]

    unit_map = _truth_map(day0, day1) if args.same_units else None
    if unit_map is not None:
        (args.out / "unit-map.json").write_text(json.dumps(unit_map))
    rows = []
    for minutes in args.minutes:
        row: dict = {"minutes": minutes}
        for kind, labels in (("unlabeled", 0.0), ("labeled", 1.0)):
            run = args.out / f"{args.name}-{minutes:g}-{kind}"
            t0 = time.perf_counter()
            res = adapt(
                source if unit_map else pretrained,
                before,
                run,
                minutes=minutes,
                labels=labels,
                unit_map=args.out / "unit-map.json" if unit_map else None,
                max_seconds=args.adapt_seconds,
                **QUIET,
            )
            row[f"{kind}_seconds"] = time.perf_counter() - t0
            row[f"{kind}_steps"] = res.step
            row.update({f"{kind}_{n}_r": r for n, r in _held_out_r(run, held_out, names).items()})
        row.update({f"ridge_{n}_r": r for n, r in _ridge_r(cfg, before, held_out, minutes, names).items()})
        rows.append(row)
        print(
            f"  {minutes:g} min: "
            + ", ".join(f"{k} r {_mean(row, k, names):.3f}" for k in ("unlabeled", "labeled", "ridge"))
            + f" (adapted in {row['unlabeled_seconds']:.0f} / {row['labeled_seconds']:.0f} s)"
        )
    scratch_dir = args.out / f"day{new_day}-scratch"
    if not (args.reuse and (scratch_dir / "checkpoint.json").exists()):
        print(f"training from scratch on day {new_day} before its held-out part ({before.duration / 60:.1f} min) ...")
        train(cfg, before, scratch_dir, **QUIET)
    scratch_steps = read_meta(scratch_dir)["step"]
    scratch_r = _held_out_r(scratch_dir, held_out, names)
    print(f"  from scratch: {scratch_steps} steps; held-out r " + ", ".join(f"{n} {scratch_r[n]:.3f}" for n in names))
    result = {
        "config": args.config,
        "days": {"circuit": args.circuit, "recorded": args.recorded, "overlap": args.overlap, "drift": args.drift},
        "same_units": bool(args.same_units),
        "pretrain_days": day_names,
        "new_day": new_day,
        "held_out_s": held_out.duration,
        "pretrain_steps": pre["step"],
        "scratch_steps": scratch_steps,
        "scratch_r": scratch_r,
        "rows": rows,
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    _print_table(rows, names, scratch_r)
    _plot(rows, names, scratch_r, args.out / f"{args.name}.png")
    print(f"wrote {args.out / f'{args.name}.json'} and {args.out / f'{args.name}.png'}")


def _config(name: str, minutes: float) -> RunConfig:
    cfg = load_config(name)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_minutes=minutes))


def _targets(run: Path) -> tuple:
    return LoadedRun(run).config.targets


def _truth_map(day0: Session, day1: Session) -> dict[str, int]:
    """{day-1 unit ID: day-0 unit ID} for the units both days recorded (the simulator's truth)."""
    assert day0.neuron_ids is not None and day1.neuron_ids is not None  # simulated days always name their units
    ids0 = {int(c): int(u) for c, u in zip(day0.truth["circuit_neuron"], day0.neuron_ids)}
    pairs = zip(day1.truth["circuit_neuron"], day1.neuron_ids)
    return {str(int(u)): ids0[int(c)] for c, u in pairs if int(c) in ids0}


def _held_out_r(run: Path, held_out: Session, names: list[str]) -> dict[str, float]:
    """Pearson r per target of `run` on every window of the held-out session."""
    loaded = LoadedRun(run)
    data = WindowData(held_out, loaded.config)
    metrics = evaluate(loaded.model, data, np.arange(data.n_windows), loaded.norm)
    return {n: float(metrics[f"{n}_r"]) for n in names}


def _ridge_r(cfg: RunConfig, before: Session, held_out: Session, minutes: float, names: list[str]) -> dict[str, float]:
    """Ridge on binned counts of the first `minutes` (its last fifth picks the penalty), scored on the held-out."""
    fit = WindowData(before.slice_time(before.start, before.start + 60 * minutes), cfg)
    test = WindowData(held_out, cfg)
    windows = np.arange(fit.n_windows)
    n_val = max(1, windows.size // 5)
    x = binned_counts(fit.tokens, windows)
    x_test = binned_counts(test.tokens, np.arange(test.n_windows))
    out = {}
    for n in names:
        y = fit.targets[n]
        pred, _ = ridge_decode(x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:], x_test)
        out[n] = pearson_r(test.targets[n], pred)
    return out


def _mean(row: dict, kind: str, names: list[str]) -> float:
    return float(np.mean([row[f"{kind}_{n}_r"] for n in names]))


def _print_table(rows: list[dict], names: list[str], scratch: dict[str, float]) -> None:
    ref = float(np.mean(list(scratch.values())))
    print(f"held-out r, mean over {', '.join(names)}; from scratch on the day: {ref:.3f}")
    print(f"{'minutes':>8} {'unlabeled':>16} {'labeled':>16} {'ridge':>16} {'adapt s (unlab/lab)':>20}")
    for row in rows:
        cells = [
            f"{_mean(row, k, names):.3f} ({_mean(row, k, names) / ref:>4.0%})"
            for k in ("unlabeled", "labeled", "ridge")
        ]
        print(
            f"{row['minutes']:>8g} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} "
            f"{row['unlabeled_seconds']:>9.0f} / {row['labeled_seconds']:.0f}"
        )


def _plot(rows: list[dict], names: list[str], scratch: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minutes"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, style in (("unlabeled", "o-"), ("labeled", "s-"), ("ridge", "^--")):
        ax.plot(
            minutes,
            [_mean(r, kind, names) for r in rows],
            style,
            label=f"adapted, {kind}" if kind != "ridge" else "ridge on the same minutes",
        )
    ref = float(np.mean(list(scratch.values())))
    ax.axhline(ref, color="k", lw=1, label="from scratch on the day")
    ax.axhline(0.95 * ref, color="k", lw=1, ls=":", label="95% of it")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
    ax.set_xlabel("minutes of the new day")
    ax.set_ylabel(f"held-out r (mean of {', '.join(names)})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
