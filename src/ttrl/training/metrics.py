"""Held-out loss and next-token accuracy, split by the type of the predicted token."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ttrl.layout import KIND_NAMES, VALUE, TransitionLayout

TOKEN_TYPES = KIND_NAMES[: VALUE + 1]  # observation, action, reward, value


def target_token_types(length: int, observation_dim: int, action_dim: int) -> Tensor:
    """Type index (into :data:`TOKEN_TYPES`) of the target at each of ``length`` positions.

    Targets are the inputs shifted by one, so the target at position ``p`` is the token at ``p + 1``.
    """
    return TransitionLayout(observation_dim, action_dim).kinds(torch.arange(length) + 1)


def goal_kwargs(rest: Sequence[Tensor]) -> dict[str, Tensor]:
    """``{"goals": goals}`` from the rest of a goal batch ``(x, y, mask, goals)``, {} for a batch
    ``(x, y, mask)``: a run without goals calls the model exactly as before."""
    return {"goals": rest[0]} if rest else {}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, ...]],
    observation_dim: int,
    action_dim: int,
    autocast: AbstractContextManager | None = None,
) -> dict[str, float]:
    """``val/loss`` (the training objective) and per-type ``val/<type>_loss`` / ``_accuracy``.

    ``batches`` are ``(x, y, mask)`` or, for a goal-conditioned model, ``(x, y, mask, goals)``.
    The per-type numbers are unweighted cross-entropy and argmax accuracy over the positions the loss
    mask keeps (trajectory tokens only: the model predicts no goal tokens). The model is put in eval
    mode (no dropout) and back in its previous mode after.
    """
    was_training = model.training
    model.eval()
    n_types = len(TOKEN_TYPES)
    loss_sum, n_batches = 0.0, 0
    ce_sum = torch.zeros(n_types, dtype=torch.float64)
    correct = torch.zeros(n_types, dtype=torch.float64)
    count = torch.zeros(n_types, dtype=torch.float64)
    types: Tensor | None = None
    try:
        for x, y, mask, *goals in batches:
            with autocast or nullcontext():
                out = model(x, targets=y, attention_mask=mask, **goal_kwargs(goals))
            if types is None:
                types = target_token_types(y.shape[1], observation_dim, action_dim).to(y.device)
            logits = out.logits.float()
            ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            hit = (logits.argmax(-1) == y).float()
            one_hot = F.one_hot(types, n_types).float()  # [L, types]
            weights = mask.reshape(y.shape).float()
            ce_sum += torch.einsum("bl,bl,lk->k", ce, weights, one_hot).double().cpu()
            correct += torch.einsum("bl,bl,lk->k", hit, weights, one_hot).double().cpu()
            count += torch.einsum("bl,lk->k", weights, one_hot).double().cpu()
            loss_sum += float(out.loss)
            n_batches += 1
    finally:
        model.train(was_training)
    if n_batches == 0:
        return {}
    metrics = {"val/loss": loss_sum / n_batches}
    for k, name in enumerate(TOKEN_TYPES):
        if count[k] > 0:
            metrics[f"val/{name}_loss"] = float(ce_sum[k] / count[k])
            metrics[f"val/{name}_accuracy"] = float(correct[k] / count[k])
    return metrics
