"""Per-step scores of open-loop predictions against the true states, for TT and the Gaussian baseline.

Every score is per start point and per horizon step (``[starts, H]``), over the scored observation
dims, so both models are compared on the same footing:

- **log-likelihood of the true next state**, summed over dims. Each dim's predictive distribution is
  the mixture of the samples' (TT) or particles' (ensemble) distributions for that dim at that step:
  a Monte-Carlo estimate of the model's marginal for the dim. TT's distribution over bins becomes a
  density that is uniform within each bin: ``log p(bin) - log(bin width)``. The ensemble's is a
  mixture of Gaussians.
- **discrete oracle**: the log-likelihood a perfect prediction reaches under the bins,
  ``-sum log(bin width)`` (probability 1 on the true bin). No discretised model can score above it.
- for the ensemble also the **moment-matched** log-likelihood: one Gaussian per dim with the
  particles' mean and variance. With few particles of small variance the mixture is spiky, and a
  true state between particles scores far lower than under the smooth estimate.
- **RMSE of the predicted mean state**: the root of the mean over dims of the squared error of the
  mean over samples of each sample's expected state.

True values outside the discretiser's fitted range are counted in the edge bin, as encoding does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# A bin narrower than this fraction of its dimension's range counts as this wide: repeated values
# in the data give zero-width bins, whose density would be infinite.
MIN_BIN_WIDTH_FRACTION = 1e-6


def bin_widths(thresholds: np.ndarray) -> np.ndarray:
    """Width of every bin of every dim, ``[n_edges - 1, D]``, floored (see MIN_BIN_WIDTH_FRACTION)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    widths = np.diff(thresholds, axis=0)
    span = thresholds[-1] - thresholds[0]
    floor = np.where(span > 0, span * MIN_BIN_WIDTH_FRACTION, 1e-12)
    return np.maximum(widths, floor)


def true_bin_log_widths(thresholds: np.ndarray, tokens: Tensor) -> Tensor:
    """``log(width)`` of the bins ``tokens [..., D]`` fall in (``thresholds [n_edges, D]``)."""
    log_widths = torch.as_tensor(np.log(bin_widths(thresholds)), dtype=torch.float64)
    columns = torch.arange(tokens.shape[-1]).expand_as(tokens)
    return log_widths.to(tokens.device)[tokens.clamp(max=log_widths.shape[0] - 1), columns]


def discrete_log_likelihood(log_probs: Tensor, true_tokens: Tensor, log_widths: Tensor) -> Tensor:
    """Log-likelihood of the true states under the samples' mixture, summed over dims.

    Args:
        log_probs: ``[starts, samples, H, D, N + 1]`` the log-probabilities of the model's
            distribution of every scored dim at every step, as each sample saw it.
        true_tokens: ``[starts, H, D]`` the bins of the true next states.
        log_widths: ``[starts, H, D]`` the log-widths of those bins.

    Returns:
        ``[starts, H]`` float64.
    """
    index = true_tokens[:, None, :, :, None].expand(-1, log_probs.shape[1], -1, -1, 1)
    log_true = log_probs.gather(-1, index).squeeze(-1).double()
    mixture = torch.logsumexp(log_true, dim=1) - math.log(log_probs.shape[1])  # over samples
    return (mixture - log_widths).sum(dim=-1)


def oracle_log_likelihood(log_widths: Tensor) -> Tensor:
    """``[starts, H]``: the log-likelihood of probability 1 on every true bin (the discrete bound)."""
    return -log_widths.sum(dim=-1)


def gaussian_mixture_log_likelihood(mean: Tensor, std: Tensor, truth: Tensor) -> Tensor:
    """Log-likelihood of ``truth [starts, H, D]`` under the particles' Gaussians, summed over dims.

    ``mean``/``std`` are ``[starts, particles, H, D]``; each dim's density is the equal-weight
    mixture over particles of ``N(mean, std^2)``. Returns ``[starts, H]`` float64.
    """
    mean, std, truth = mean.double(), std.double(), truth.double()[:, None]
    log_density = (
        -0.5 * ((truth - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
    )  # [starts, particles, H, D]
    mixture = torch.logsumexp(log_density, dim=1) - math.log(mean.shape[1])
    return mixture.sum(dim=-1)


def moment_matched_log_likelihood(mean: Tensor, std: Tensor, truth: Tensor) -> Tensor:
    """Like :func:`gaussian_mixture_log_likelihood`, under one Gaussian per dim with the
    particles' mixture's mean and variance (a smoother estimate from few particles)."""
    mean, std = mean.double(), std.double()
    centre = mean.mean(dim=1)
    variance = (std.pow(2) + mean.pow(2)).mean(dim=1) - centre.pow(2)
    return gaussian_mixture_log_likelihood(
        centre[:, None], variance.clamp_min(1e-30).sqrt()[:, None], truth
    )


def mean_state_rmse(predicted: Tensor, truth: Tensor) -> Tensor:
    """``[starts, H]``: RMSE over dims of ``predicted [starts, samples, H, D]`` averaged over samples."""
    error = predicted.double().mean(dim=1) - truth.double()
    return error.pow(2).mean(dim=-1).sqrt()


def mean_and_standard_error(values: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean over start points and its standard error, per step: two ``[H]`` arrays.

    Non-finite values (a sample that stopped, a density of 0) are left out of their step; a step
    with fewer than two finite values has a standard error of NaN.
    """
    values = np.asarray(values.detach().cpu().double() if isinstance(values, Tensor) else values)
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    filled = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / counts
        squares = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
        se = np.sqrt(squares / (counts - 1)) / np.sqrt(counts)
    return mean, np.where(counts >= 2, se, np.nan)
