"""AdamW with the paper's weight-decay groups, and its warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def decay_parameter_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """Split parameter names into (decayed, not decayed) as in the released code.

    Decayed: the weights of ``nn.Linear`` layers and the per-dimension head weight (``head.weight``).
    Not decayed: biases, LayerNorm, the token embedding and the position embedding.
    """
    decayed = {
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    }
    decayed.add("head.weight")
    names = [name for name, _ in model.named_parameters()]
    return [n for n in names if n in decayed], [n for n in names if n not in decayed]


def build_optimizer(
    model: nn.Module,
    learning_rate: float,
    betas: tuple[float, float],
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW with weight decay on Linear/head weights only; ``fused`` on CUDA."""
    params = dict(model.named_parameters())
    decayed, plain = decay_parameter_names(model)
    groups = [
        {"params": [params[n] for n in decayed], "weight_decay": weight_decay},
        {"params": [params[n] for n in plain], "weight_decay": 0.0},
    ]
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), **extra)


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup to 1, then cosine from 1 to ``floor`` ending at step ``decay_steps``.

    Unlike the released code, progress is clamped at 1, so after ``decay_steps`` the multiplier stays
    at ``floor`` instead of climbing back up along the cosine. ``enabled=False`` keeps it at 1.
    """

    warmup_steps: int
    decay_steps: int
    floor: float = 0.1
    enabled: bool = True

    def __call__(self, step: int) -> float:
        """LR multiplier for optimiser step ``step`` (0-based).

        Like the released code, the multiplier counts the current batch: step ``k`` is at progress
        ``k + 1`` batches, so the first update uses ``1 / warmup_steps`` of the LR.
        """
        if not self.enabled:
            return 1.0
        batches = step + 1
        if batches < self.warmup_steps:
            return batches / self.warmup_steps
        span = max(1, self.decay_steps - self.warmup_steps)
        progress = min(
            1.0, (batches - self.warmup_steps) / span
        )  # clamped: the LR never rises again
        return max(self.floor, 0.5 * (1.0 + math.cos(math.pi * progress)))


def schedule_from_epochs(
    steps_per_epoch: float,
    warmup_epochs: float,
    decay_epochs: float,
    floor: float,
    enabled: bool = True,
) -> LRSchedule:
    """The released code's schedule in steps: warmup over ``warmup_epochs`` epochs of tokens,
    cosine until ``decay_epochs`` epochs (both counted from the start)."""
    warmup = max(1, round(warmup_epochs * steps_per_epoch))
    decay = max(warmup + 1, round(decay_epochs * steps_per_epoch))
    return LRSchedule(warmup_steps=warmup, decay_steps=decay, floor=floor, enabled=enabled)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: LRSchedule
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying ``schedule`` (step it once after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
