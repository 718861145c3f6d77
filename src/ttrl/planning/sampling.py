"""Drawing one token per row from the model's next-token logits, with the paper's filters."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# What filtered-out logits are set to by the tail (cdf) filter; the top-k filter uses -inf.
CDF_FILTERED_LOGIT = -1000.0
# dtypes whose values numpy sorts as torch does (bfloat16 has no numpy dtype)
NUMPY_SORTED = (torch.float16, torch.float32, torch.float64)


def filter_cdf(logits: Tensor, probs: Tensor, cdf: float) -> Tensor:
    """Drop the least likely tokens whose probabilities add up to less than ``cdf``.

    ``probs`` must be ``softmax(logits)``. The threshold is the largest sorted probability whose
    running sum is still below ``cdf`` (the smallest one if none is); every token at or below it gets
    logit -1000, so the most likely token always survives.
    """
    sorted_probs = sorted_values(probs)
    below = sorted_probs.cumsum(dim=-1) < cdf
    # Running sums only grow, so `below` is a run of Trues at the front: its last index is count - 1.
    last_below = (below.sum(dim=-1, keepdim=True) - 1).clamp(min=0)
    threshold = sorted_probs.gather(-1, last_below)
    return logits.masked_fill(probs <= threshold, CDF_FILTERED_LOGIT)


def sorted_values(x: Tensor) -> Tensor:
    """``x.sort(dim=-1).values``; on the CPU through numpy, whose sort of a beam's rows is about
    15x faster than torch's at one thread (the values are the same)."""
    if x.device.type != "cpu" or x.requires_grad or x.dtype not in NUMPY_SORTED:
        return x.sort(dim=-1).values
    return torch.from_numpy(np.sort(x.numpy(), axis=-1))


def keep_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits per row (ties with the k-th all stay); the rest become -inf."""
    if k == 1:
        kth_largest = logits.amax(dim=-1, keepdim=True)
    else:
        kth_largest = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def sample_tokens(
    logits: Tensor,
    top_k: int | None,
    cdf: float | None,
    uniforms: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample one token per row of ``logits [B, V]`` (temperature 1) after the optional filters.

    Row ``b`` takes the token where ``uniforms[b]`` (in [0, 1)) falls in the cumulative filtered
    distribution (inverse-CDF sampling), so each row's draw is its own number and callers decide
    which random stream every row reads. Without ``uniforms`` they are drawn from ``generator``
    (default: torch's global one). Returns ``(tokens [B], probs [B, V])``, ``probs`` being the
    unfiltered distribution (what the planner's expected rewards and likelihoods use). The tail
    filter runs before top-k.
    """
    probs = logits.softmax(dim=-1)
    filtered = logits
    if cdf is not None:
        filtered = filter_cdf(filtered, probs, cdf)
    if top_k is not None:
        filtered = keep_top_k(filtered, top_k)
    if uniforms is None:
        uniforms = torch.rand(
            logits.shape[0], generator=generator, dtype=logits.dtype, device=logits.device
        )
    return inverse_cdf(filtered.softmax(dim=-1), uniforms), probs


def inverse_cdf(weights: Tensor, uniforms: Tensor) -> Tensor:
    """Per row of ``weights [B, V]`` (not necessarily normalised), the token ``uniforms [B]`` picks.

    Token ``i`` is picked when ``u * total`` lies in ``[cdf[i-1], cdf[i])``, so a token of weight 0
    never is; the target is kept below the total, which rounding could otherwise reach.
    """
    cumulative = weights.cumsum(dim=-1)
    total = cumulative[:, -1:]
    target = uniforms.to(weights.dtype)[:, None] * total
    target = torch.minimum(target, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1)
