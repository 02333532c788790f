"""`rtdecode train`: fit a Neuroformer on one session, evaluate on held-out time blocks, checkpoint as it goes.

Top-down: load the session -> windows and a time-block split with guard gaps -> normalisation from the training
windows -> model and AdamW (decay on Linear/Conv weights only) -> warm-up + cosine schedule -> steps of
length-grouped batches -> every `eval_every` steps: validation metrics, CSV/TensorBoard, checkpoint, best-per-
objective weights -> at the end: test-split metrics beside a ridge baseline on the same windows.

Runs unchanged under `torchrun --nproc-per-node K` (DDP: NCCL on GPU, gloo on CPU). Every rank draws the same
global batch from the same seeded generator and takes its own slice, so sampling needs no communication and a
resumed run replays exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from rtdecode.core.config import RunConfig
from rtdecode.core.metrics import (
    angular_error_deg,
    binned_counts,
    circular_r,
    pearson_r,
    r_squared,
    rate_baseline_f1,
    ridge_decode,
    ridge_decode_angle,
)
from rtdecode.core.normalisation import Normalisation
from rtdecode.core.window_data import WindowData, context_reach, make_split
from rtdecode.data.budget import budget_report
from rtdecode.data.session import Session
from rtdecode.data.splits import Split
from rtdecode.io import load_session
from rtdecode.io.token_store import load_tokens
from rtdecode.training.batches import LengthGroupedBatches
from rtdecode.training.checkpoint import (
    load_train_state,
    load_weights,
    read_meta,
    save_train_state,
    save_weights,
    weights_step,
    write_meta,
)
from rtdecode.training.counts import init_count_head, refit_count_intercept
from rtdecode.training.data import to_torch
from rtdecode.training.evaluate import evaluate
from rtdecode.training.freezing import FREEZE, freeze_except
from rtdecode.training.losses import compute_losses
from rtdecode.training.model import Neuroformer

__all__ = ["train", "TrainResult", "lr_lambda"]

# best-checkpoint objectives: name -> (validation metric, whether higher is better)
OBJECTIVES = {"val_loss": ("loss_total", False), "behavior_r": ("behavior_r_mean", True)}


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    val: dict[str, float]
    test: dict[str, float]
    baseline: dict[str, float]
    windows_per_s: float
    data_share: float


def lr_lambda(cfg: RunConfig) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine decay to min_lr_ratio at max_steps."""
    t = cfg.train

    def f(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / max(1, t.warmup_steps)
        progress = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device), initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def train(
    cfg: RunConfig,
    session_path: str | Path | Session,
    run_dir: str | Path,
    *,
    tokens_dir: str | Path | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    label_fraction: float = 1.0,
    freeze: str = "none",
    normalisation: Normalisation | None = None,
    device: str = "auto",
    allow_truncation: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train per `cfg` on the session at `session_path` (or a loaded `Session`: a part of a recording, selected
    units), writing checkpoints and logs to `run_dir`.

    Fine-tuning options (see `rtdecode.training.finetune`): `init_from` loads starting weights (safetensors);
    `label_fraction` trains on a seeded random fraction of the training windows (as if only they were
    labelled; normalisation comes from them alone, unless `normalisation` gives it); `freeze` is "none", "top"
    (train only the fused stack and the behavior heads), "backbone" (train only the behavior heads: a probe of
    the pretrained features), "units" (only the unit tables: `rtdecode.training.adapt`) or "units+top".

    Token budgets the config leaves at 0 are derived from the training windows (`rtdecode.data.budget`); a budget
    that drops more than 0.1% of spikes raises `TruncationError` unless `allow_truncation`.
    """
    if freeze not in FREEZE:
        raise ValueError(f"freeze must be one of {sorted(FREEZE)}; got {freeze!r}")
    if not 0 < label_fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1]; got {label_fraction}")
    run_dir = Path(run_dir)
    rank, world, dev = _distributed()
    if device == "cpu":
        dev = torch.device("cpu")
    is_main = rank == 0
    t = cfg.train
    torch.manual_seed(t.seed)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)

    session = session_path if isinstance(session_path, Session) else load_session(session_path)
    tokens = load_tokens(tokens_dir) if tokens_dir else None
    data = WindowData(session, cfg, tokens)
    split = make_split(data, cfg)
    train_windows = split.train
    if label_fraction < 1:
        n = max(t.batch_size * world, int(round(label_fraction * split.train.size)))
        pick = np.random.default_rng([t.seed, 1]).choice(split.train.size, size=min(n, split.train.size), replace=False)
        train_windows = np.sort(split.train[pick])
    norm = normalisation if normalisation is not None else data.normalisation(train_windows)
    vocab = data.tokens.vocab
    budget = budget_report(data.tokens, split.train, cfg.window)
    cfg = dataclasses.replace(cfg, window=budget.window)  # what the run, its checkpoints and bundles record
    data = data.with_budgets(cfg)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        source = session_path if not isinstance(session_path, Session) else "as selected"
        gap = cfg.window.window + context_reach(cfg)  # as make_split guards
        log(f"session {source}: {data.n_windows} windows; split {split.summary()} (guard gap {gap:.3f} s)")
        if label_fraction < 1:
            log(f"training on {train_windows.size} labelled windows ({label_fraction:.1%})")
        log(budget.describe())
    budget.check(allow_truncation)
    recorded = {
        "token_budget": budget.to_dict(),
        "units": {name: b.unit for name, b in session.behavior.items()},
    }

    model = Neuroformer(cfg, vocab).to(dev)
    if model.count_head is not None and init_from is None:
        init_count_head(model, data, train_windows, norm, t.seed)
    if init_from is not None:
        load_weights(model, Path(init_from))
    freeze_except(model, freeze)
    optimizer = model.configure_optimizer(t.lr, t.betas, t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    sampler = LengthGroupedBatches(train_windows, data.tokens.window_counts, t.batch_size * world, t.seed)
    step, best = 0, {name: None for name in OBJECTIVES}
    if resume:
        meta = read_meta(run_dir)
        if _without_run_length(RunConfig.from_saved(meta["config"])) != _without_run_length(cfg):
            raise ValueError(
                f"{run_dir}: --resume with a different config than the run was started with "
                "(only max_steps, max_minutes, eval_every and eval_windows may change)"
            )
        load_weights(model, run_dir / "model.safetensors")
        state = load_train_state(run_dir, optimizer, scheduler)
        step, best = int(state["step"]), state["best"]
        if weights_step(run_dir / "model.safetensors") != step:
            raise ValueError(
                f"{run_dir}: model.safetensors and train_state.json are from different steps (the run was killed "
                "while saving); restart the run, or fine-tune from its best-*.safetensors"
            )
        sampler.load_state(state["sampler"])
        norm = Normalisation.from_dict(meta["normalisation"])
        if is_main:
            log(f"resumed {run_dir} at step {step}")
    if is_main:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(
            f"model: {model.n_params() / 1e6:.2f} M parameters ({n_train / 1e6:.2f} M trainable) on {dev}"
            + (f", {world} processes" if world > 1 else "")
        )
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp) if dev.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    writer = _tensorboard(run_dir / "tb") if is_main else None
    csv_path = run_dir / "metrics.csv"
    val_metrics: dict[str, float] = {}
    t_data = t_model = 0.0
    windows_done = 0
    t_start = time.perf_counter()
    deadline = t_start + t.max_minutes * 60 if t.max_minutes > 0 else math.inf
    net.train()
    while step < t.max_steps:
        a = time.perf_counter()
        global_batch = sampler.next()
        mine = global_batch[rank * t.batch_size : (rank + 1) * t.batch_size]
        batch = to_torch(data.batch(mine, norm), dev)
        b = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = net(batch)
            losses = compute_losses(out, batch, cfg, vocab)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        if t.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        if dev.type == "cuda":
            torch.cuda.synchronize()
        c_done = time.perf_counter()
        t_data += b - a
        t_model += c_done - b
        windows_done += mine.size
        scalars = {k: float(v.detach()) for k, v in losses.items()}
        scalars["lr"] = float(scheduler.get_last_lr()[0])
        scalars["windows_per_s"] = windows_done * world / max(t_data + t_model, 1e-9)
        if progress and is_main:
            progress(step, t.max_steps, scalars)
        last = step >= t.max_steps or time.perf_counter() >= deadline
        if step % t.eval_every == 0 or last:
            if model.count_head is not None and any(p.requires_grad for p in model.count_head.parameters()):
                refit_count_intercept(model, data, train_windows, norm, dev)  # every rank: the weights stay equal
            val_metrics = _evaluate(model, data, split.val, norm, t.eval_windows, dev)
            if is_main:
                _log_metrics(csv_path, writer, step, scalars, val_metrics)
                improved = _update_best(best, val_metrics, step)
                for name in improved:
                    save_weights(model, run_dir / f"best-{name}.safetensors")
                save_weights(model, run_dir / "model.safetensors", step)
                save_train_state(
                    run_dir, optimizer, scheduler, {"step": step, "best": best, "sampler": sampler.state()}
                )
                write_meta(run_dir, cfg, vocab, norm, step, val_metrics, best, recorded)
                log(_format_eval(step, scalars, val_metrics))
        if last:
            break
    elapsed = max(t_data + t_model, 1e-9)
    wps, share = windows_done * world / elapsed, t_data / elapsed
    ddp = _check_ranks_agree(model) if world > 1 else None
    test_metrics, baseline = {}, {}
    if is_main:
        test_metrics = _evaluate(model, data, split.test, norm, 0, dev)
        # the baselines learn from the labelled windows the model learned from (all of them, or the fraction)
        baseline = _baselines(data, dataclasses.replace(split, train=train_windows), cfg)
        extra = {
            "test": test_metrics,
            "baseline": baseline,
            "throughput": {"windows_per_s": wps, "data_share": share},
            **recorded,
        }
        if ddp is not None:
            extra["ddp"] = ddp
        write_meta(run_dir, cfg, vocab, norm, step, val_metrics, best, extra)
        log(f"trained {step} steps at {wps:.0f} windows/s ({share:.1%} of the time loading data)")
    if writer:
        writer.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(run_dir, step, val_metrics, test_metrics, baseline, wps, share)


def _without_run_length(cfg: RunConfig) -> RunConfig:
    """The config minus the fields a resumed run may change (how long it runs and how often it evaluates)."""
    train = dataclasses.replace(cfg.train, max_steps=0, max_minutes=0.0, eval_every=1, eval_windows=0)
    return dataclasses.replace(cfg, train=train)


def _evaluate(
    model: Neuroformer, data: WindowData, windows: np.ndarray, norm: Normalisation, limit: int, dev: Any
) -> dict[str, float]:
    if limit and windows.size > limit:
        windows = windows[np.linspace(0, windows.size - 1, limit).astype(np.int64)]
    return evaluate(model, data, windows, norm, device=dev)


def _update_best(best: dict[str, Any], metrics: dict[str, float], step: int) -> list[str]:
    """Record each objective that improved at this evaluation; return their names."""
    improved = []
    for name, (key, higher_is_better) in OBJECTIVES.items():
        value = metrics.get(key)
        if value is None or not math.isfinite(value):
            continue
        old = best.get(name)
        if old is None or (value > old["value"] if higher_is_better else value < old["value"]):
            best[name] = {"value": value, "step": step, "metric": key}
            improved.append(name)
    return improved


def _baselines(data: WindowData, split: Split, cfg: RunConfig) -> dict[str, float]:
    """Ridge on binned counts (current + history window) per behavior target, and the rate set-F1 baseline.

    A circular target's ridge fits cos and sin separately and decodes atan2 (`ridge_decode_angle`); it is scored
    like the model (`evaluate`): `ridge_<name>_r` (r of cos/sin) and `ridge_<name>_mae_deg`."""
    out: dict[str, float] = {}
    if cfg.targets:
        x = {k: binned_counts(data.tokens, getattr(split, k)) for k in ("train", "val", "test")}
        for spec in cfg.targets:
            if spec.kind == "classification":
                continue
            y = {k: data.targets[spec.name][getattr(split, k)] for k in ("train", "val", "test")}
            if spec.kind == "circular":
                angle = ridge_decode_angle(x["train"], y["train"], x["val"], y["val"], x["test"])
                out[f"ridge_{spec.name}_r"] = circular_r(y["test"], angle)
                out[f"ridge_{spec.name}_mae_deg"] = angular_error_deg(y["test"], angle)
                continue
            pred, alpha = ridge_decode(x["train"], y["train"], x["val"], y["val"], x["test"])
            out[f"ridge_{spec.name}_r"] = pearson_r(y["test"], pred)
            out[f"ridge_{spec.name}_r2"] = r_squared(y["test"], pred)
    out.update({f"rate_set_{k}": v for k, v in rate_baseline_f1(data.tokens, split.train, split.test).items()})
    return out


def _check_ranks_agree(model: Neuroformer) -> dict[str, Any]:
    """All-gather a digest of the weights: DDP ranks must hold identical parameters."""
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    digest = [float(flat.sum()), float((flat * flat).sum()), float(flat[:: max(1, flat.numel() // 997)].sum())]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, digest)
    return {"world_size": len(gathered), "digests": gathered, "weights_agree": all(g == gathered[0] for g in gathered)}


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: CSV is always written
        return None
    return SummaryWriter(str(path))


def _log_metrics(path: Path, writer: Any, step: int, train: dict[str, float], val: dict[str, float]) -> None:
    row = {"step": step, **{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()}}
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    if writer is not None:
        for k, v in row.items():
            if k != "step":
                writer.add_scalar(k.replace("_", "/", 1), v, step)
        writer.flush()


def _format_eval(step: int, train: dict[str, float], val: dict[str, float]) -> str:
    parts = [
        f"step {step}",
        f"train loss {train['total']:.3f}",
        f"val loss {val.get('loss_total', float('nan')):.3f}",
        f"id acc {val.get('id_accuracy', 0):.3f}",
        f"set F1 {val.get('set_f1', 0):.3f}",
    ]
    parts += [f"{k[:-2]} r {v:.3f}" for k, v in val.items() if k.endswith("_r") and not k.startswith("loss")]
    return ", ".join(parts)
