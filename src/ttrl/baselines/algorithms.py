"""The baselines ``scripts/train_baseline.py`` can train (``algo=<name>``), behind one small Protocol.

An algorithm is a class with a ``name`` (its ``algo=`` value), a ``config_class`` (its settings
dataclass, e.g. :class:`~ttrl.baselines.BCConfig`: defaults, ``validate()``, and the fields
``lr``, ``weight_decay``, ``batch_size``, ``steps`` and ``seed`` the runner reads), and:

- ``build(observation_dim, action_dim, config, train)``: a fresh instance whose ``model`` (a
  :class:`~ttrl.baselines.BaselineModule`: everything trained and checkpointed) has its
  normalisers fitted on the training transitions;
- ``loss(batch)``: the scalar training loss of a :class:`~ttrl.baselines.data.TransitionBatch`;
- ``act(observations)``: ``[B, S]`` observations -> float32 ``[B, A]`` actions for ``env.step``.

The runner owns everything else (optimiser, checkpoints, resume, logging, evaluation), so a new
baseline is one class here plus its entry in :data:`ALGORITHMS`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ttrl.baselines.bc import BCConfig, BCPolicy, fitted_bc_policy
from ttrl.baselines.data import TransitionBatch
from ttrl.baselines.mlp import ArrayLike, BaselineModule
from ttrl.errors import TtrlError


class BaselineAlgorithm(Protocol):
    """What the runner needs of a baseline (see the module docstring)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    model: BaselineModule

    @classmethod
    def build(
        cls, observation_dim: int, action_dim: int, config: Any, train: TransitionBatch
    ) -> BaselineAlgorithm:
        """A fresh, untrained instance (CPU), its normalisers fitted on ``train``."""
        ...

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        """The training loss of ``batch``, a scalar with gradients."""
        ...

    def act(self, observations: ArrayLike) -> np.ndarray:
        """Actions for ``[B, S]`` observations, float32 ``[B, A]``."""
        ...


class BehaviorCloning:
    """``algo=bc``: a :class:`~ttrl.baselines.BCPolicy` regressing the dataset's actions (MSE).

    Its action bounds are the training actions' per-dimension min/max (the policy's default).
    """

    name: ClassVar[str] = "bc"
    config_class: ClassVar[type] = BCConfig

    def __init__(self, model: BCPolicy) -> None:
        self.model = model

    @classmethod
    def build(
        cls, observation_dim: int, action_dim: int, config: BCConfig, train: TransitionBatch
    ) -> BehaviorCloning:
        policy = fitted_bc_policy(train.observations, train.actions, config)
        if (policy.observation_dim, policy.action_dim) != (observation_dim, action_dim):
            raise TtrlError(
                f"training transitions have dims ({policy.observation_dim}, {policy.action_dim}), "
                f"expected ({observation_dim}, {action_dim})"
            )
        return cls(policy)

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        return self.model.loss(batch.observations, batch.actions)

    def act(self, observations: ArrayLike) -> np.ndarray:
        return self.model.act(observations)


ALGORITHMS: dict[str, type[BaselineAlgorithm]] = {
    algorithm.name: algorithm for algorithm in (BehaviorCloning,)
}


def get_algorithm(name: str) -> type[BaselineAlgorithm]:
    """The algorithm registered as ``name``; a one-line error listing the known ones otherwise."""
    if name not in ALGORITHMS:
        raise TtrlError(f"unknown algo {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
