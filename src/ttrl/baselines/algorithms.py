"""The baselines ``scripts/train_baseline.py`` can train (``algo=<name>``), behind one small Protocol.

An algorithm is a class with a ``name`` (its ``algo=`` value), a ``config_class`` (its settings
dataclass, e.g. :class:`~ttrl.baselines.BCConfig`: defaults, ``validate()``, and the fields
``lr``, ``weight_decay``, ``batch_size``, ``steps`` and ``seed`` the runner reads), and:

- ``build(observation_dim, action_dim, config, train)``: a fresh instance whose ``model`` (a
  :class:`~ttrl.baselines.BaselineModule`: everything trained and checkpointed) has its
  normalisers fitted on the training transitions;
- ``loss(batch)``: the scalar training loss of a :class:`~ttrl.baselines.data.TransitionBatch`;
- ``act(observations)``: ``[B, S]`` observations -> float32 ``[B, A]`` actions for ``env.step``;
- optionally ``after_step()``: called after every optimiser step (IQL's target-network update);
  whatever it changes must live in ``model``'s state dict, so that a resumed run stays exact.

The runner owns everything else (optimiser, checkpoints, resume, logging, evaluation), so a new
baseline is one class here plus its entry in :data:`ALGORITHMS`. The optimiser steps the model's
parameters that require gradients (IQL's target critics do not).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch

from ttrl.baselines.bc import BCConfig, BCPolicy, fitted_bc_policy
from ttrl.baselines.data import TransitionBatch
from ttrl.baselines.iql import IQLConfig, IQLModel, fitted_iql
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
        return cls(checked_dims(policy, observation_dim, action_dim))

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        return self.model.loss(batch.observations, batch.actions)

    def act(self, observations: ArrayLike) -> np.ndarray:
        return self.model.act(observations)


class ImplicitQLearning:
    """``algo=iql``: an :class:`~ttrl.baselines.iql.IQLModel` (twin Q, V, Gaussian actor), its
    target critics Polyak-averaged after every step.

    Its action bounds are the training actions' per-dimension min/max, as BC's.
    """

    name: ClassVar[str] = "iql"
    config_class: ClassVar[type] = IQLConfig

    def __init__(self, model: IQLModel) -> None:
        self.model = model

    @classmethod
    def build(
        cls, observation_dim: int, action_dim: int, config: IQLConfig, train: TransitionBatch
    ) -> ImplicitQLearning:
        return cls(checked_dims(fitted_iql(train, config), observation_dim, action_dim))

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        return self.model.loss(batch)

    def after_step(self) -> None:
        """The target critics' Polyak step."""
        self.model.update_targets()

    def act(self, observations: ArrayLike) -> np.ndarray:
        return self.model.act(observations)


M = TypeVar("M", bound=BaselineModule)


def checked_dims(model: M, observation_dim: int, action_dim: int) -> M:
    """``model``, once its dims (fitted on the training transitions) are the dataset's."""
    if (model.observation_dim, model.action_dim) != (observation_dim, action_dim):
        raise TtrlError(
            f"training transitions have dims ({model.observation_dim}, {model.action_dim}), "
            f"expected ({observation_dim}, {action_dim})"
        )
    return model


ALGORITHMS: dict[str, type[BaselineAlgorithm]] = {
    algorithm.name: algorithm for algorithm in (BehaviorCloning, ImplicitQLearning)
}


def get_algorithm(name: str) -> type[BaselineAlgorithm]:
    """The algorithm registered as ``name``; a one-line error listing the known ones otherwise."""
    if name not in ALGORITHMS:
        raise TtrlError(f"unknown algo {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
