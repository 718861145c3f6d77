"""Hidden observation dims: the partially observed ablation of long-horizon prediction.

A model trained with ``data.hidden_observation_fraction > 0`` never sees some observation dims:
their tokens are one fixed token in every window, as context and as targets, so the model can only
infer them from the history. The dims are chosen by a fixed rule from the fraction alone, so runs
with different seeds hide the same dims and can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ttrl.errors import TtrlError

HIDDEN_TOKEN = 0  # the token every hidden dim holds
HIDDEN_DIMS_SEED = 0  # the dims depend on the fraction only, never on the run's seed


def hidden_observation_dims(observation_dim: int, fraction: float) -> tuple[int, ...]:
    """The ``round(fraction * S)`` observation dims hidden at ``fraction``, sorted."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TtrlError(f"data.hidden_observation_fraction={fraction!r} must be a number in [0, 1)")
    if not 0.0 <= fraction < 1.0:
        raise TtrlError(
            f"data.hidden_observation_fraction={fraction} must be in [0, 1): some dims must stay "
            f"observed"
        )
    count = round(fraction * observation_dim)
    if count == 0:
        return ()
    rng = np.random.default_rng(HIDDEN_DIMS_SEED)
    return tuple(sorted(int(d) for d in rng.choice(observation_dim, size=count, replace=False)))


def mask_hidden_observations(
    tokens: torch.Tensor | np.ndarray, dims: Sequence[int]
) -> torch.Tensor | np.ndarray:
    """A copy of ``tokens [..., T]`` (transitions) or ``[..., S]`` (observations) with the hidden
    observation ``dims`` set to :data:`HIDDEN_TOKEN` (observation dims come first in both)."""
    if len(dims) == 0:
        return tokens
    masked = tokens.clone() if isinstance(tokens, torch.Tensor) else np.array(tokens, copy=True)
    masked[..., list(dims)] = HIDDEN_TOKEN
    return masked
