"""Few-shot behavior decoding: pretrained-then-fine-tuned vs trained from scratch, across labelled fractions.

What it does, in one command:
  1. pretrains a model on the session's training split WITHOUT behavior supervision (next-spike prediction +
     spike/frame contrastive alignment; behavior heads exist but have loss weight 0);
  2. for each labelled fraction (default 1%, 5%, 10%, 100% of the training windows): fine-tunes the pretrained
     model's behavior decoding on that fraction (`--freeze`, default: only the behavior heads), and trains the same
     architecture from scratch on the same windows for the same number of steps;
  3. prints a table of held-out (test split) Pearson r per variable, beside a ridge decoder fitted on the same
     labelled windows, and writes fewshot.json and fewshot.png.
Caveats: figures are on the built-in simulated session unless --data is given; fractions below one batch of
windows are raised to one batch; the scratch model trains all its weights (freeze does not apply to it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rtdecode.core.config import load_config
from rtdecode.io import load_session, save_session
from rtdecode.sim.simulator import SimulationConfig, simulate
from rtdecode.training.finetune import finetune
from rtdecode.training.train import train


def pretrain_config(name: str, steps: int, minutes: float):
    """The config with behavior loss weights 0: the pretraining never sees a behavior label."""
    cfg = load_config(name)
    behavior = tuple(dataclasses.replace(b, weight=0.0) for b in cfg.behavior)
    return dataclasses.replace(
        cfg,
        behavior=behavior,
        train=dataclasses.replace(cfg.train, max_steps=steps, max_minutes=minutes, eval_every=max(1, steps // 4)),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="session file (default: simulate one)")
    p.add_argument(
        "--duration",
        type=float,
        default=300.0,
        help="simulated seconds when --data is not given (default: %(default)s)",
    )
    p.add_argument("--config", default="small", help="run config file or built-in name (default: %(default)s)")
    p.add_argument("--pretrain-steps", type=int, default=1500, help="(default: %(default)s)")
    p.add_argument("--pretrain-minutes", type=float, default=6.0, help="time cap of pretraining (default: %(default)s)")
    p.add_argument("--finetune-steps", type=int, default=300, help="(default: %(default)s)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 1.0], help="(default: %(default)s)")
    p.add_argument("--freeze", default="backbone", choices=["none", "top", "backbone"], help="(default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("fewshot-out"), help="(default: %(default)s)")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = args.out / "session.npz"
        save_session(simulate(SimulationConfig(duration=args.duration)), data)
    quiet = {"log": lambda _: None}
    print(f"pretraining ({args.pretrain_steps} steps, at most {args.pretrain_minutes} min; no behavior labels) ...")
    pre = train(
        pretrain_config(args.config, args.pretrain_steps, args.pretrain_minutes), data, args.out / "pretrained", **quiet
    )
    print(
        f"  pretrained {pre.step} steps at {pre.windows_per_s:.0f} windows/s; test set F1 {pre.test.get('set_f1', 0):.3f}"
    )
    names = [k[:-2] for k in pre.test if k.endswith("_r")]
    rows = []
    for fraction in args.fractions:
        row = {"fraction": fraction}
        for kind, scratch in (("pretrained", False), ("scratch", True)):
            res = finetune(
                args.out / "pretrained",
                data,
                args.out / f"{kind}-{fraction:g}",
                fraction=fraction,
                freeze=args.freeze,
                steps=args.finetune_steps,
                from_scratch=scratch,
                **quiet,
            )
            for n in names:
                row[f"{kind}_{n}_r"] = res.test.get(f"{n}_r", float("nan"))
                # both sides train on the same seeded windows; so does their ridge baseline
                row[f"ridge_{n}_r"] = res.baseline.get(f"ridge_{n}_r", float("nan"))
        rows.append(row)
        print(
            "  "
            + f"{fraction:>6.0%}: "
            + ", ".join(
                f"{n} r {row[f'pretrained_{n}_r']:.3f} vs {row[f'scratch_{n}_r']:.3f} vs {row[f'ridge_{n}_r']:.3f}"
                for n in names
            )
            + " (pretrained vs scratch vs ridge, same labelled windows)"
        )
    baseline = {k: v for k, v in pre.baseline.items() if k.startswith("ridge") and k.endswith("_r")}
    result = {
        "session": str(load_session(data).metadata.get("source", data)),
        "freeze": args.freeze,
        "pretrain_steps": pre.step,
        "finetune_steps": args.finetune_steps,
        "rows": rows,
        "ridge_full_data": baseline,
    }
    (args.out / "fewshot.json").write_text(json.dumps(result, indent=2))
    _print_table(rows, names, baseline)
    _plot(rows, names, args.out / "fewshot.png")
    print(f"wrote {args.out / 'fewshot.json'} and {args.out / 'fewshot.png'}")


def _print_table(rows: list[dict], names: list[str], baseline: dict[str, float]) -> None:
    head = "labelled  " + "  ".join(f"{n + ' pre':>10} {n + ' scr':>10} {n + ' ridge':>10}" for n in names)
    print(head)
    for row in rows:
        print(
            f"{row['fraction']:>8.0%}  "
            + "  ".join(
                f"{row[f'pretrained_{n}_r']:>10.3f} {row[f'scratch_{n}_r']:>10.3f} {row[f'ridge_{n}_r']:>10.3f}"
                for n in names
            )
        )
    print("ridge on all labelled windows: " + ", ".join(f"{k[6:-2]} r {v:.3f}" for k, v in baseline.items()))


def _plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    x = [r["fraction"] * 100 for r in rows]
    for ax, n in zip(axes[0], names):
        ax.plot(x, [r[f"pretrained_{n}_r"] for r in rows], "o-", label="pretrained + fine-tuned")
        ax.plot(x, [r[f"scratch_{n}_r"] for r in rows], "s--", label="from scratch")
        ax.plot(x, [r[f"ridge_{n}_r"] for r in rows], "^:", label="ridge, same windows")
        ax.set_xscale("log")
        ax.set_xlabel("labelled training windows (%)")
        ax.set_ylabel(f"{n}: test Pearson r")
        ax.set_ylim(min(0, *[r[f"scratch_{n}_r"] for r in rows]), 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
