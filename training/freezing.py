"""Which parameters a run trains: all of them, or, when it starts from a pretrained run, the parts named here.

Few-shot fine-tuning (`rtdecode finetune`) trains the top of the model; adapting to a new recording day
(`rtdecode adapt`) trains the unit tables, the only parameters that belong to one day's sorted units.
"""

from __future__ import annotations

from torch import nn

__all__ = ["FREEZE", "freeze_except"]

# freeze mode -> the parameter-name prefixes that keep training (None: everything trains)
FREEZE: dict[str, tuple[str, ...] | None] = {
    "none": None,
    "top": ("fused.", "ln_f.", "behavior_heads.", "count_head."),
    "backbone": ("behavior_heads.",),
    "units": ("id_emb.", "id_head."),
    "units+top": ("id_emb.", "id_head.", "fused.", "ln_f.", "behavior_heads.", "count_head."),
}


def freeze_except(model: nn.Module, freeze: str) -> None:
    """Stop the gradients of every parameter outside the mode's prefixes (FREEZE)."""
    trainable = FREEZE[freeze]
    if trainable is None:
        return
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trainable))
