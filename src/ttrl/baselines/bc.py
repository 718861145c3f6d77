"""Behaviour cloning as in CORL's ``any_percent_bc``: an MLP regresses the dataset's actions.

The policy sees normalised observations and ends in a tanh scaled to per-dimension action bounds
(the training actions' min/max unless given, e.g. the env's action space), trained with MSE.

Layout, which further offline baselines (IQL, goal-conditioned BC) follow: a config dataclass,
a :class:`~ttrl.baselines.mlp.BaselineModule` with ``forward``/``loss``/``act``, and a
``train_*`` function that fits normalisers, builds the ``loss_fn`` over sample indices and calls
:func:`~ttrl.baselines.mlp.fit_minibatches`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ttrl.baselines.mlp import (
    ArrayLike,
    BaselineModule,
    Normalizer,
    as_matrix,
    as_tensor,
    check_config,
    fit_minibatches,
    mlp,
    seeded,
)
from ttrl.errors import TtrlError


@dataclass
class BCConfig:
    """Size and training settings of a :class:`BCPolicy`; defaults are CORL's BC."""

    hidden: int = 256  # width of each hidden layer
    n_layers: int = 2  # hidden layers
    activation: str = "relu"
    lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 256
    steps: int = 100_000  # CORL runs 1_000_000
    seed: int = 0  # initial weights and minibatch order

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TtrlError` naming the first bad field."""
        check_config(self, ("hidden", "n_layers", "batch_size", "steps"))


class BCPolicy(BaselineModule):
    """A deterministic policy ``obs -> action`` whose outputs stay inside stored action bounds."""

    config_class = BCConfig
    action_low: torch.Tensor
    action_high: torch.Tensor

    def __init__(
        self, observation_dim: int, action_dim: int, config: BCConfig | None = None
    ) -> None:
        config = config if config is not None else BCConfig()
        super().__init__(observation_dim, action_dim, config)
        self.obs_norm = Normalizer(self.observation_dim)
        self.register_buffer("action_low", -torch.ones(self.action_dim))
        self.register_buffer("action_high", torch.ones(self.action_dim))
        with seeded(config.seed):
            self.net = mlp(
                self.observation_dim,
                self.action_dim,
                config.hidden,
                config.n_layers,
                config.activation,
            )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Raw ``[B, S]`` observations -> ``[B, A]`` actions within ``[action_low, action_high]``."""
        half_range = (self.action_high - self.action_low) / 2
        middle = (self.action_high + self.action_low) / 2
        return middle + half_range * torch.tanh(self.net(self.obs_norm.normalize(observations)))

    def loss(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Mean squared error to the dataset's actions."""
        return F.mse_loss(self(observations), actions)

    @torch.no_grad()
    def act(self, observations: ArrayLike) -> np.ndarray:
        """Actions for ``[B, S]`` (or one ``[S]``) observations, numpy or torch, as a float32
        numpy ``[B, A]`` (or ``[A]``) array, ready for ``env.step``."""
        obs = as_tensor(observations, self.device)
        if obs.dim() not in (1, 2) or obs.shape[-1] != self.observation_dim:
            raise TtrlError(
                f"observations must be [B, {self.observation_dim}], got {tuple(obs.shape)}"
            )
        return self(obs).cpu().numpy().astype(np.float32, copy=False)


def fitted_bc_policy(
    observations: ArrayLike,
    actions: ArrayLike,
    config: BCConfig | None = None,
    action_bounds: tuple[ArrayLike, ArrayLike] | None = None,
) -> BCPolicy:
    """A fresh :class:`BCPolicy` (CPU) whose normaliser and action bounds are fitted on the data.

    ``action_bounds`` = ``(low, high)`` (each ``[A]``) overrides the per-dimension min/max of
    ``actions``, e.g. with the env's action space (actions outside it cannot be matched).
    """
    config = config if config is not None else BCConfig()
    config.validate()
    obs = as_matrix("observations", observations)
    act = as_matrix("actions", actions, len(obs))
    if action_bounds is None:
        low, high = act.min(axis=0), act.max(axis=0)
    else:
        low, high = as_matrix("action bounds", np.stack(action_bounds), 2, act.shape[1])
    if (low > high).any():
        raise TtrlError(f"action bounds low={low} exceed high={high}; pass (low, high)")
    policy = BCPolicy(obs.shape[1], act.shape[1], config)
    policy.obs_norm.fit(obs)
    policy.action_low.copy_(torch.from_numpy(low))
    policy.action_high.copy_(torch.from_numpy(high))
    return policy


def train_bc(
    observations: np.ndarray,
    actions: np.ndarray,
    config: BCConfig | None = None,
    progress: bool = True,
    action_bounds: tuple[ArrayLike, ArrayLike] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[BCPolicy, list[float]]:
    """Fit a :class:`BCPolicy` on ``[N, S]`` observations and ``[N, A]`` actions.

    ``action_bounds``: see :func:`fitted_bc_policy`. Returns the policy (on ``device``) and its
    MSE history, one mean per 100 steps.
    """
    config = config if config is not None else BCConfig()
    policy = fitted_bc_policy(observations, actions, config, action_bounds).to(device)
    obs_t = as_tensor(as_matrix("observations", observations), device)
    act_t = as_tensor(as_matrix("actions", actions), device)
    history = fit_minibatches(
        lambda indices: policy.loss(obs_t[indices], act_t[indices]),
        policy.parameters(),
        n_samples=len(obs_t),
        batch_size=config.batch_size,
        steps=config.steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=config.seed,
        progress=progress,
        desc="bc",
    )
    return policy, history
