"""One typed config for a Neuroformer run: TOML in, frozen dataclasses out, unknown keys rejected.

Sections (every field has a default; see configs/*.toml for complete examples):

    [window]        the tokenizer's WindowConfig (rtdecode.data.tokenizer); token budgets not given (or 0) are derived
                    from the training data when the run starts (rtdecode.data.budget)
    [model]         width, heads, dropout, depth of every stack, frame patching
    [frames]        whether video is an input
    [[behavior]]    one table per behavior variable: name, role ("target" or "input"), kind ("regression",
                    "classification" with bin edges, or "circular" for an angle target), input window
    [contrastive]   CLIP-style alignment between pooled modality features
    [train]         optimisation, schedule, loss weights, evaluation cadence, split

Nothing here imports torch: the daemon reads the same config from a bundle's manifest.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtdecode.data.tokenizer import WindowConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "BehaviorSpec",
    "ContrastiveConfig",
    "FramesConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "builtin_configs",
]


@dataclass(frozen=True)
class ModelConfig:
    """Transformer sizes. Depths are per stack, in the order data flows (as in the Neuroformer reference).

    Attributes:
        d_model: width of every token embedding and block.
        n_heads: attention heads (d_model must divide by it).
        dropout: dropout in attention and MLPs during training.
        attention_dropout: dropout of the attention weights; None = `dropout`. Any nonzero value makes CPU
            training fall back from the fused attention kernel to an explicit softmax, several times slower at
            1000+ tokens per window: the rig config sets 0.
        mlp_ratio: hidden width of each block's MLP, as a multiple of d_model.
        feature_layers: causal self-attention blocks over the current window's tokens.
        frame_layers: self-attention blocks over frame patch tokens.
        history_layers: cross-attention blocks from current tokens to the previous window's tokens.
        frame_cross_layers: cross-attention blocks from current tokens to frame tokens.
        behavior_cross_layers: cross-attention blocks to each input behavior group.
        fused_layers: final causal self-attention blocks.
        frame_patch: (t, h, w) Conv3d kernel = stride of the frame patch embedding.
        attention_span: each current-window token's causal self-attention reads the last `attention_span`
            tokens (itself included); 0 = every earlier token of the window. A bound makes a token's cost
            independent of how many spikes came before it in the window (bursts at rig scale); the pooled
            decode still averages every token.
        history_latents: 0 = current tokens attend to each previous-window token; N > 0 = N learned latent
            queries first read the previous window's tokens (once per window, in the context), and current
            tokens attend to those N summaries: every history spike still counts, at a per-token cost that
            does not grow with the history.
        count_head: a head on the window's context (history spike counts, frames, behavior inputs) that predicts
            its spike count (Poisson log-rate, trained on every window). Generation draws the count from it and
            then samples exactly that many spikes. Without it a window's count is wherever EOS happens to be
            sampled, and the generated population rate does not follow the recording (docs/results.md,
            Generation). Runs saved before this option existed load with it off.
        history_count_token: one more history token, made from the number of history spikes in each
            window-length stretch of the history (log1p, then an MLP). Attention averages over the tokens it
            reads, so without it the model sees which neurons fired before the window but hardly how many: the
            population rate, the best single predictor of the next window's count. Off in runs saved before it.
    """

    d_model: int = 128
    n_heads: int = 4
    dropout: float = 0.1
    attention_dropout: float | None = None
    mlp_ratio: int = 4
    feature_layers: int = 2
    frame_layers: int = 1
    history_layers: int = 1
    frame_cross_layers: int = 1
    behavior_cross_layers: int = 1
    fused_layers: int = 2
    frame_patch: tuple[int, int, int] = (3, 8, 8)
    attention_span: int = 0
    history_latents: int = 0
    count_head: bool = True
    history_count_token: bool = True

    def __post_init__(self) -> None:
        for name in ("attention_span", "history_latents"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise ValueError(f"model.{name} must be an integer >= 0; got {getattr(self, name)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"model.{name} must be in [0, 1); got {value!r}")
        if self.feature_layers + self.fused_layers < 1:
            raise ValueError("need at least one causal self-attention block (feature_layers + fused_layers >= 1)")


@dataclass(frozen=True)
class FramesConfig:
    """Video as a model input.

    Attributes:
        enabled: feed the frames of the `window.frame_window` before each window end to the model.
        n_frames: frames per window (frame_window x frame rate; 3 for 150 ms at 20 fps).
        height, width: frame size the model is built for (the session's frames must match).
    """

    enabled: bool = False
    n_frames: int = 3
    height: int = 32
    width: int = 64


@dataclass(frozen=True)
class BehaviorSpec:
    """One behavior variable.

    Attributes:
        name: the session's behavior name ("speed", "phi", "theta", ...).
        role: "target" (decoded from the pooled window state) or "input" (tokens the model cross-attends to).
        kind: "regression" (MSE on the z-scored value), "classification" (CE over `bins`) or "circular" (an
            angle in radians, e.g. head direction, eye angle, grating orientation; targets only). A circular
            target is never z-scored: its normalisation is stored as (0, 1), because shifting and scaling an
            angle breaks its 2 pi period (a mean and std of angles mean nothing across the wrap). Its head
            predicts a vector (cos, sin), trained with 1 - cos(angle error), and decodes to atan2(sin, cos) in
            (-pi, pi]; per window the target is the circular mean of the samples. An angle as a model input:
            give its cos and sin as two regression inputs.
        bins: for classification, increasing bin edges in the variable's units (values outside fall in the
            first/last bin).
        input_window: for inputs, seconds of samples before the window end used as tokens.
        weight: loss weight of this target.
    """

    name: str
    role: str = "target"
    kind: str = "regression"
    bins: tuple[float, ...] = ()
    input_window: float = 0.25
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.role not in ("target", "input"):
            raise ValueError(f"behavior '{self.name}': role must be 'target' or 'input'; got {self.role!r}")
        if self.kind not in ("regression", "classification", "circular"):
            raise ValueError(
                f"behavior '{self.name}': kind must be 'regression', 'classification' or 'circular'; got {self.kind!r}"
            )
        if self.kind == "circular" and self.role != "target":
            raise ValueError(
                f"behavior '{self.name}': kind 'circular' is for targets only; give an angle input as two regression "
                "inputs, its cos and sin"
            )
        if self.kind == "circular" and self.bins:
            raise ValueError(f"behavior '{self.name}': a circular target takes no bins; got {self.bins}")
        if self.kind == "classification" and (
            len(self.bins) < 1 or any(b <= a for a, b in zip(self.bins, self.bins[1:]))
        ):
            raise ValueError(
                f"behavior '{self.name}': classification needs strictly increasing bin edges; got {self.bins}"
            )

    @property
    def n_classes(self) -> int:
        """Classes of a classification target: one per interval between edges, plus the two open ends."""
        return len(self.bins) + 1

    @property
    def n_outputs(self) -> int:
        """Values the target's head predicts: 1 (regression), n_classes logits, or (cos, sin) for circular."""
        return {"regression": 1, "circular": 2}.get(self.kind, self.n_classes)


@dataclass(frozen=True)
class ContrastiveConfig:
    """CLIP-style symmetric InfoNCE between pooled features of two modalities.

    Attributes:
        enabled: add the contrastive loss.
        pairs: modality pairs to align, from "spikes", "frames" and behavior target names.
        temperature: softmax temperature (release: 0.5).
        dim: projection size of each modality's feature before the dot product.
        weight: loss weight.
    """

    enabled: bool = False
    pairs: tuple[tuple[str, str], ...] = (("spikes", "frames"),)
    temperature: float = 0.5
    dim: int = 64
    weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (release settings by default: AdamW, betas (0.9, 0.95), decay on Linear weights only).

    Attributes:
        lr: peak learning rate.
        betas: AdamW betas.
        weight_decay: applied to Linear/Conv weights only (not biases, norms, embeddings).
        batch_size: windows per optimiser step (per process under DDP).
        max_steps: optimiser steps.
        max_minutes: stop after this much wall-clock training (0 = no limit); the schedule still follows max_steps.
        warmup_steps: linear warm-up, then cosine decay to min_lr_ratio x lr.
        min_lr_ratio: final learning rate as a fraction of lr.
        grad_clip: global gradient-norm clip (0 = off).
        id_weight, dt_weight: weights of the next neuron-ID and next time-offset cross-entropies.
        count_weight: weight of the window spike-count loss (`model.count_head`; Poisson NLL over the batch's
            mean count, so it is O(1) whatever the rate).
        eval_every: steps between validation evaluations (and checkpoints).
        eval_windows: validation windows per evaluation (0 = all).
        seed: seeds torch, numpy and the split.
        n_blocks: contiguous time blocks the session is cut into for the train/val/test split.
        split: fractions (train, val, test).
        num_threads: torch CPU threads (0 = torch's default).
        amp: mixed precision on GPU: "bf16", "fp16" or "off" (CPU always trains in fp32).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    batch_size: int = 32
    max_steps: int = 3000
    max_minutes: float = 0.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    id_weight: float = 1.0
    dt_weight: float = 1.0
    count_weight: float = 1.0
    eval_every: int = 500
    eval_windows: int = 0
    seed: int = 0
    n_blocks: int = 10
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    num_threads: int = 0
    amp: str = "bf16"


# a run config's token budgets, unless it sets them: derived from the training data (rtdecode.data.budget)
DERIVED_BUDGETS: dict[str, int] = {"block_size": 0, "prev_block_size": 0}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a model and how it is trained."""

    window: WindowConfig = field(default_factory=lambda: WindowConfig(block_size=0, prev_block_size=0))
    model: ModelConfig = field(default_factory=ModelConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    behavior: tuple[BehaviorSpec, ...] = ()
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        names = [b.name for b in self.behavior]
        if len(set(names)) != len(names):
            raise ValueError(f"behavior names must be unique; got {names}")
        if self.contrastive.enabled:
            known = {"spikes", *(b.name for b in self.targets)} | ({"frames"} if self.frames.enabled else set())
            for pair in self.contrastive.pairs:
                for m in pair:
                    if m not in known:
                        raise ValueError(
                            f"contrastive pair {pair}: '{m}' is not an enabled modality; choose from {sorted(known)}"
                        )

    @property
    def targets(self) -> tuple[BehaviorSpec, ...]:
        return tuple(b for b in self.behavior if b.role == "target")

    @property
    def inputs(self) -> tuple[BehaviorSpec, ...]:
        return tuple(b for b in self.behavior if b.role == "input")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from a TOML-shaped dict. Token budgets left out of [window] are derived from the training data."""
        if isinstance(d.get("window", {}), dict):
            d = {**d, "window": {**DERIVED_BUDGETS, **d.get("window", {})}}
        return _build(cls, d, "")

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> RunConfig:
        """Build the config a run or bundle recorded. Options added since fill in as the run was made: a model
        saved before `model.count_head` existed has no count head (nor `history_count_token`)."""
        model = d.get("model", {})
        if isinstance(model, dict):
            added_since = {"count_head": False, "history_count_token": False}
            d = {**d, "model": {**added_since, **model}}
        return cls.from_dict(d)


def _build(cls: Any, data: Any, where: str) -> Any:
    """Recursively turn dicts into (frozen) dataclasses, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ValueError(f"[{where or 'config'}] must be a table; got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in [{where or 'config'}]; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"[{where or 'config'}]: {e}") from e


def _coerce(typ: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        return _build(typ, value, where)
    if origin is tuple:
        args = typing.get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list; got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where} must have {len(args)} elements; got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number; got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer; got {value!r}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false; got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string; got {value!r}")
        return value
    return value


def builtin_configs() -> list[str]:
    """Names of the configs shipped with rtdecode (configs/*.toml)."""
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files("rtdecode.configs").iterdir() if p.name.endswith(".toml"))


def load_config(path: str | Path) -> RunConfig:
    """Read a run config from a TOML file, or a built-in one by name ("small", "rig", "release", "spikes_only", "spikes_frames").

    Raises ValueError naming any unknown key or mistyped value.
    """
    if not Path(path).exists() and str(path) in builtin_configs():
        from importlib.resources import files

        data = tomllib.loads(files("rtdecode.configs").joinpath(f"{path}.toml").read_text())
        return RunConfig.from_dict(data)
    if not Path(path).exists():
        raise FileNotFoundError(f"no config file {path}; built-in configs: {', '.join(builtin_configs())}")
    with open(path, "rb") as f:
        data = tomllib.load(f)
    try:
        return RunConfig.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
