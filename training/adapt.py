"""`rtdecode adapt`: a pretrained run on a new recording day, by learning that day's units and nothing else.

Sorted units change between days: some are lost, new ones appear, the sorter renumbers them. In a Neuroformer
everything but two tables is shared by all units: the ID embedding (a unit as the model reads it) and the rows of
the next-ID head (a unit as the model predicts it). Adapting gives the new day its own rows in both and trains
only them, from minutes of its spikes, with the self-supervised next-spike loss: no behavior labels are needed,
and the behavior heads from pretraining decode the new day through the frozen backbone. With a labelled
fraction, the behavior heads and the fused stack are fine-tuned too. The result is an ordinary run (its own
vocabulary), so it exports and serves like any other.

A new unit starts from the mean of the pretrained units' rows (plus a little seeded noise, so units that start
alike can part); a unit the user says is a pretrained one (`--same-units`, or a unit map) starts from its rows.

What to know: the tables' SOS/EOS/PAD rows train with the units (they are the day's window grammar too); the
minutes are split like any training data (about 80% train, guard gaps), so the reported test figures are on a
few seconds of them; a label fraction below 1 trains every loss on that fraction of the windows; and the
schedule is `steps` long, so a time budget that stops it early leaves the learning rate mid-schedule.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rtdecode.core.config import RunConfig
from rtdecode.core.normalisation import Normalisation
from rtdecode.data.session import Session, SessionError
from rtdecode.data.vocab import Vocab
from rtdecode.io import load_session
from rtdecode.training.checkpoint import read_meta
from rtdecode.training.train import TrainResult, train

__all__ = ["UNIT_TABLES", "adapt", "adapted_weights", "read_unit_map", "unit_sources"]

UNIT_TABLES = ("id_emb.weight", "id_head.weight", "id_head.bias")  # rows per ID: the day-specific parameters
NEW_UNIT_NOISE = 0.02  # SD of the noise added to a new unit's starting rows (the rows' init scale)


def unit_sources(old: Vocab, new: Vocab, unit_map: Mapping[int, int]) -> np.ndarray:
    """(new.n_neurons,) index of the pretrained unit each new unit starts from, or -1 for a new unit.

    `unit_map` maps new unit IDs to pretrained unit IDs (the user's word that they are the same units)."""
    old_index = {int(u): i for i, u in enumerate(old.neuron_ids)}
    return np.array([old_index[unit_map[int(u)]] if int(u) in unit_map else -1 for u in new.neuron_ids], np.int64)


def adapted_weights(
    state: dict[str, torch.Tensor], old: Vocab, new: Vocab, sources: np.ndarray, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The pretrained weights with the unit tables re-rowed for `new`'s units; the special tokens' rows (SOS,
    EOS, PAD, after the units) and every other parameter unchanged."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    known = torch.from_numpy(sources >= 0)
    for key in UNIT_TABLES:
        table = state[key]
        units, specials = table[: old.n_neurons], table[old.n_neurons :]
        rows = units.mean(0, keepdim=True).expand(new.n_neurons, *units.shape[1:]).clone()
        rows += NEW_UNIT_NOISE * torch.randn(rows.shape, generator=gen) * (~known).view(-1, *[1] * (rows.dim() - 1))
        rows[known] = units[torch.from_numpy(sources[sources >= 0])]
        out[key] = torch.cat([rows, specials]).contiguous()
    return out


def read_unit_map(path: str | Path, old: Vocab, new: Vocab) -> dict[int, int]:
    """A JSON object {new unit ID: pretrained unit ID}; every ID must exist on its side, no pretrained unit twice.

    Raises ValueError naming the first problem."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON unit map ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: a unit map is a JSON object {{"new unit ID": pretrained unit ID}}')
    new_ids, old_ids = {int(u) for u in new.neuron_ids}, {int(u) for u in old.neuron_ids}
    out: dict[int, int] = {}
    for key, value in raw.items():
        try:
            k, v = int(key), int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: {key!r}: {value!r} is not a pair of integer unit IDs") from None
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{path}: {key!r}: {value!r} is not a pair of integer unit IDs")
        if k not in new_ids:
            raise ValueError(f"{path}: unit {k} is not a unit of the new session")
        if v not in old_ids:
            raise ValueError(f"{path}: unit {v} is not a unit of the pretrained run")
        out[k] = v
    _check_one_to_one(out, str(path))
    return out


def _check_one_to_one(mapping: Mapping[int, int], where: str) -> None:
    twice = [v for v, n in Counter(mapping.values()).items() if n > 1]
    if twice:
        raise ValueError(f"{where}: pretrained unit {twice[0]} is mapped from more than one new unit")


def adapt(
    from_run: str | Path,
    session: str | Path | Session,
    out: str | Path,
    *,
    minutes: float = 2.0,
    labels: float = 0.0,
    same_units: bool = False,
    unit_map: str | Path | None = None,
    steps: int = 400,
    max_seconds: float = 60.0,
    lr: float = 3e-3,
    weights: str = "model",
    device: str = "cpu",
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Adapt `from_run` to the first `minutes` of `session` (see the module docstring).

    Args:
        labels: fraction of the adaptation windows whose behavior labels are used (0: none, self-supervised).
        same_units: a unit ID the new session shares with the pretrained run is the same unit.
        unit_map: a JSON file {new unit ID: pretrained unit ID} saying which units are the same (overrides
            `same_units` for the IDs it names).
        steps, max_seconds: the schedule; training stops at whichever comes first.
    """
    from_run, out = Path(from_run), Path(out)
    meta = read_meta(from_run)
    cfg = RunConfig.from_saved(meta["config"])
    old = Vocab.from_json(json.dumps(meta["vocab"]))
    if not 0 <= labels <= 1:
        raise ValueError(f"labels must be a fraction in [0, 1]; got {labels}")
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0; got {minutes}")
    if steps < 1 or not max_seconds > 0:
        raise ValueError(f"steps must be >= 1 and max_seconds > 0; got {steps} and {max_seconds}")
    if "sessions" in meta and (same_units or unit_map is not None):
        names = ", ".join(str(s["name"]) for s in meta["sessions"])
        raise ValueError(
            f"{from_run} is a multi-session run: its units are numbered across sessions, so unit IDs name no unit. "
            f"To start units from a session's, adapt from that session's run: {from_run}/sessions/<name> ({names})"
        )
    day = session if isinstance(session, Session) else load_session(session)
    _check_compatible(cfg, day)
    day = day.slice_time(day.start, min(day.stop, day.start + 60.0 * minutes))
    new = Vocab.for_config(cfg.window, day.n_neurons, day.neuron_ids)
    mapping = (
        {int(u): int(u) for u in set(map(int, new.neuron_ids)) & set(map(int, old.neuron_ids))} if same_units else {}
    )
    if unit_map is not None:
        mapping.update(read_unit_map(unit_map, old, new))
    _check_one_to_one(mapping, "the unit map together with --same-units")
    sources = unit_sources(old, new, mapping)
    log(
        f"adapting {from_run} to {day.n_neurons} units ({int((sources >= 0).sum())} started from pretrained units) "
        f"on {day.duration:.0f} s, {'self-supervised' if not labels else f'{labels:.0%} of the labels'}"
    )
    out.mkdir(parents=True, exist_ok=True)
    init = out / "adapt-init.safetensors"
    state = load_file(str(from_run / f"{weights}.safetensors"))
    save_file(adapted_weights(state, old, new, sources, cfg.train.seed), str(init))
    try:
        return train(
            adapt_config(cfg, labels=labels, steps=steps, max_seconds=max_seconds, lr=lr),
            day,
            out,
            init_from=init,
            label_fraction=labels or 1.0,
            freeze="units" if not labels else "units+top",
            normalisation=Normalisation.from_dict(meta["normalisation"]),  # the heads' scale, not the new day's
            allow_truncation=True,  # the pretrained token budget; a busier day's cut spikes are counted, as when served
            device=device,
            log=log,
            progress=progress,
        )
    finally:
        init.unlink(missing_ok=True)


def adapt_config(cfg: RunConfig, *, labels: float, steps: int, max_seconds: float, lr: float) -> RunConfig:
    """The pretrained config with a short schedule and no weight decay (it would shrink the trained rows whatever
    the data); without labels the behavior losses are off (their heads stay as pretrained), with labels every
    target weighs at least 1 (a run adapted without labels has them at 0); the contrastive loss is off (its
    projections are frozen either way)."""
    behavior = tuple(
        dataclasses.replace(b, weight=(b.weight or 1.0) if labels else 0.0) if b.role == "target" else b
        for b in cfg.behavior
    )
    t = dataclasses.replace(
        cfg.train,
        max_steps=steps,
        max_minutes=max_seconds / 60.0,
        lr=lr,
        weight_decay=0.0,
        warmup_steps=min(20, max(1, steps // 10)),
        eval_every=max(1, steps),
    )
    return dataclasses.replace(
        cfg, behavior=behavior, train=t, contrastive=dataclasses.replace(cfg.contrastive, weight=0.0)
    )


def _check_compatible(cfg: RunConfig, day: Session) -> None:
    """The new day must carry what the model reads (and, to be scored, what it decodes)."""
    need = [b.name for b in cfg.inputs] + [b.name for b in cfg.targets]
    missing = [n for n in need if n not in day.behavior]
    if missing:
        raise SessionError(
            f"the new session has no {missing} (the pretrained model reads {[b.name for b in cfg.inputs]} "
            f"and decodes {[b.name for b in cfg.targets]}; the session has {sorted(day.behavior)})"
        )
    fr = cfg.frames
    if fr.enabled:
        if day.frames is None:
            raise SessionError("the pretrained model reads video and the new session has no frames")
        if tuple(day.frames.shape[1:]) != (fr.height, fr.width):
            raise SessionError(
                f"the new session's frames are {day.frames.shape[1]} x {day.frames.shape[2]}; the pretrained model "
                f"reads {fr.height} x {fr.width}"
            )
