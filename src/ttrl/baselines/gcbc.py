"""Goal-conditioned behaviour cloning: BC's policy given the goal beside the observation.

The policy maps ``(observation, goal)`` to an action: a :class:`~ttrl.baselines.BCPolicy` over the
concatenation ``[observation, goal]`` (its normaliser, its tanh to the action bounds, its MSE),
so it is BC with the goal as ``G`` more inputs. It trains on hindsight goals, chosen with the
transformer's relabelling (``data.goal``: future, final or desired, :mod:`ttrl.data.goals`), and at
evaluation it is given the env's current ``desired_goal`` (:mod:`ttrl.baselines.evaluate`).

The goal inputs are normalised with the statistics of the achieved and desired goals of the
training rows together (as :func:`~ttrl.data.goals.fit_goal_discretizer` fits the transformer's
goal bins on both), so the desired goals of evaluation fall in the range trained on.

Layout as :mod:`~ttrl.baselines.bc`: :class:`GCBCConfig`, the :class:`GCBCPolicy` module and
:func:`fitted_gcbc_policy`; ``scripts/train_baseline.py algo=gcbc`` trains it with the runner,
whose minibatches carry the goals (:func:`~ttrl.baselines.data.with_hindsight_goals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ttrl.baselines.bc import BCConfig, BCPolicy, fitted_bc_policy
from ttrl.baselines.data import GoalTransitionBatch, TransitionBatch
from ttrl.baselines.mlp import ArrayLike, BaselineModule, as_matrix, as_tensor
from ttrl.errors import TtrlError


@dataclass
class GCBCConfig(BCConfig):
    """Size and training settings of a :class:`GCBCPolicy`: BC's, with BC's defaults."""


class GCBCPolicy(BaselineModule):
    """A deterministic policy ``(observation, goal) -> action`` within stored action bounds.

    Attributes:
        goal_dim: ``G``, the size of a goal.
        policy: the :class:`~ttrl.baselines.BCPolicy` over ``[observation, goal]`` (``S + G``
            inputs) that does the work.
    """

    config_class = GCBCConfig

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        goal_dim: int,
        config: GCBCConfig | None = None,
    ) -> None:
        config = config if config is not None else GCBCConfig()
        super().__init__(observation_dim, action_dim, config)
        if isinstance(goal_dim, bool) or not isinstance(goal_dim, int) or goal_dim < 1:
            raise TtrlError(f"goal_dim={goal_dim!r} must be a positive integer")
        self.goal_dim = goal_dim
        self.policy = BCPolicy(self.observation_dim + goal_dim, self.action_dim, config)

    def build_args(self) -> dict[str, Any]:
        return {**super().build_args(), "goal_dim": self.goal_dim}

    def forward(self, observations: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        """Raw ``[B, S]`` observations and ``[B, G]`` goals -> ``[B, A]`` actions in the bounds."""
        return self.policy(torch.cat([observations, goals], dim=-1))

    def loss(
        self, observations: torch.Tensor, goals: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error to the dataset's actions, each row conditioned on its goal."""
        return self.policy.loss(torch.cat([observations, goals], dim=-1), actions)

    @torch.no_grad()
    def act(self, observations: ArrayLike, goals: ArrayLike) -> np.ndarray:
        """Actions for ``[B, S]`` observations and ``[B, G]`` goals (or one ``[S]`` and ``[G]``),
        numpy or torch, as a float32 numpy ``[B, A]`` (or ``[A]``) array, ready for ``env.step``."""
        obs, goal = as_tensor(observations, self.device), as_tensor(goals, self.device)
        if obs.dim() not in (1, 2) or obs.shape[-1] != self.observation_dim:
            raise TtrlError(
                f"observations must be [B, {self.observation_dim}], got {tuple(obs.shape)}"
            )
        if goal.shape[:-1] != obs.shape[:-1] or goal.shape[-1] != self.goal_dim:
            raise TtrlError(
                f"goals must be [B, {self.goal_dim}] beside observations {tuple(obs.shape)}, "
                f"got {tuple(goal.shape)}"
            )
        return self.policy.act(torch.cat([obs, goal], dim=-1))


def fitted_gcbc_policy(train: TransitionBatch, config: GCBCConfig | None = None) -> GCBCPolicy:
    """A fresh :class:`GCBCPolicy` (CPU) fitted on ``train``'s rows: the observation normaliser on
    the observations, the goal normaliser on the achieved and desired goals together, the action
    bounds the actions' per-dimension min/max (as BC's).

    Raises:
        TtrlError: ``train`` has no goal fields (it was loaded without ``data.goal``).
    """
    config = config if config is not None else GCBCConfig()
    config.validate()
    if not isinstance(train, GoalTransitionBatch):
        raise TtrlError(
            "goal-conditioned BC needs transitions with goal fields: load them with data.goal set "
            "(future, final or desired) from a dataset with goals, e.g. pointmaze-umaze"
        )
    obs = as_matrix("observations", train.observations)
    actions = as_matrix("actions", train.actions, len(obs))
    achieved = as_matrix("achieved goals", train.achieved_goals, len(obs))
    desired = as_matrix("desired goals", train.desired_goals, len(obs), achieved.shape[1])
    # every observation beside both of its goals: the per-dimension statistics and bounds of the
    # observations and actions stay theirs, those of the goals are over both fields
    inputs = np.concatenate([np.concatenate([obs, obs]), np.concatenate([achieved, desired])], 1)
    fitted = fitted_bc_policy(inputs, np.concatenate([actions, actions]), config)
    model = GCBCPolicy(obs.shape[1], actions.shape[1], achieved.shape[1], config)
    model.policy.load_state_dict(fitted.state_dict())
    return model
