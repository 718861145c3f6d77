"""The baselines ``scripts/train_baseline.py`` can train (``algo=<name>``), behind one small Protocol.

An algorithm is a class with a ``name`` (its ``algo=`` value), a ``config_class`` (its settings
dataclass, e.g. :class:`~ttrl.baselines.BCConfig`: defaults, ``validate()``, and the fields
``lr``, ``weight_decay``, ``batch_size``, ``steps`` and ``seed`` the runner reads; one that trains
nothing needs only ``steps`` and ``seed``), two flags, and:

- ``goal_conditioned``: whether it acts toward a goal (the env's ``desired_goal``); the plain ones
  refuse ``data.goal``, and those that train need it (their minibatches carry hindsight goals,
  :func:`~ttrl.baselines.data.with_hindsight_goals`);
- ``trains``: False for a baseline with nothing to train (the waypoint controller): its budget is
  ``steps=0``, and the runner takes no step, computes no validation loss and only evaluates;
- ``build(data, config)``: a fresh instance for the :class:`~ttrl.baselines.data.BaselineData`
  ``data``, whose ``model`` (a :class:`~ttrl.baselines.BaselineModule`: everything trained and
  checkpointed; a goal-conditioned one has ``goal_dim``) has its normalisers fitted on the
  training transitions ``data.train``;
- ``loss(batch)`` (if it trains): the scalar training loss of a
  :class:`~ttrl.baselines.data.TransitionBatch` (for a goal-conditioned one a
  :class:`~ttrl.baselines.data.GoalTransitionBatch` with its hindsight ``goals``);
- ``act(observations)``: ``[B, S]`` observations -> float32 ``[B, A]`` actions for ``env.step``;
  a goal-conditioned algorithm's is ``act(observations, goals)``, with ``[B, G]`` goals;
- or instead of ``act``, ``episode_policy(seed)``: for a policy with state through an episode (the
  waypoint controller's path), the policy of the episode whose env resets with ``seed``, which
  takes that env's raw observations one at a time (:class:`~ttrl.baselines.evaluate.EpisodePolicies`);
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
from ttrl.baselines.data import BaselineData, TransitionBatch
from ttrl.baselines.gcbc import GCBCConfig, GCBCPolicy, fitted_gcbc_policy
from ttrl.baselines.iql import IQLConfig, IQLModel, fitted_iql
from ttrl.baselines.mlp import ArrayLike, BaselineModule
from ttrl.baselines.waypoint import WaypointConfig, WaypointModel
from ttrl.errors import TtrlError
from ttrl.making.maze import WaypointController


class BaselineAlgorithm(Protocol):
    """What the runner needs of a baseline (see the module docstring)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    goal_conditioned: ClassVar[bool]
    trains: ClassVar[bool]
    model: BaselineModule

    @classmethod
    def build(cls, data: BaselineData, config: Any) -> BaselineAlgorithm:
        """A fresh, untrained instance (CPU), its normalisers fitted on ``data.train``."""
        ...

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        """The training loss of ``batch``, a scalar with gradients."""
        ...

    def act(self, observations: ArrayLike, *goals: ArrayLike) -> np.ndarray:
        """Actions for ``[B, S]`` observations (and ``[B, G]`` goals), float32 ``[B, A]``."""
        ...


class BehaviorCloning:
    """``algo=bc``: a :class:`~ttrl.baselines.BCPolicy` regressing the dataset's actions (MSE).

    Its action bounds are the training actions' per-dimension min/max (the policy's default).
    """

    name: ClassVar[str] = "bc"
    config_class: ClassVar[type] = BCConfig
    goal_conditioned: ClassVar[bool] = False
    trains: ClassVar[bool] = True

    def __init__(self, model: BCPolicy) -> None:
        self.model = model

    @classmethod
    def build(cls, data: BaselineData, config: BCConfig) -> BehaviorCloning:
        policy = fitted_bc_policy(data.train.observations, data.train.actions, config)
        return cls(checked_dims(policy, data))

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
    goal_conditioned: ClassVar[bool] = False
    trains: ClassVar[bool] = True

    def __init__(self, model: IQLModel) -> None:
        self.model = model

    @classmethod
    def build(cls, data: BaselineData, config: IQLConfig) -> ImplicitQLearning:
        return cls(checked_dims(fitted_iql(data.train, config), data))

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        return self.model.loss(batch)

    def after_step(self) -> None:
        """The target critics' Polyak step."""
        self.model.update_targets()

    def act(self, observations: ArrayLike) -> np.ndarray:
        return self.model.act(observations)


class GoalConditionedBC:
    """``algo=gcbc``: a :class:`~ttrl.baselines.gcbc.GCBCPolicy` regressing the dataset's actions
    given each row's hindsight goal (``data.goal``: future, final or desired), MSE.

    Its action bounds are the training actions' per-dimension min/max, as BC's.
    """

    name: ClassVar[str] = "gcbc"
    config_class: ClassVar[type] = GCBCConfig
    goal_conditioned: ClassVar[bool] = True
    trains: ClassVar[bool] = True

    def __init__(self, model: GCBCPolicy) -> None:
        self.model = model

    @classmethod
    def build(cls, data: BaselineData, config: GCBCConfig) -> GoalConditionedBC:
        return cls(checked_dims(fitted_gcbc_policy(data.train, config), data))

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        goals = getattr(batch, "goals", None)  # a GoalTransitionBatch's, once relabelled
        if goals is None:
            raise TtrlError("gcbc trains on rows with hindsight goals; load them with data.goal")
        return self.model.loss(batch.observations, goals, batch.actions)

    def act(self, observations: ArrayLike, goals: ArrayLike) -> np.ndarray:
        return self.model.act(observations, goals)


class Waypoint:
    """``algo=waypoint``: the PointMaze datasets' own waypoint controller, noiseless unless
    ``waypoint.noise`` says otherwise (:mod:`~ttrl.baselines.waypoint`). It trains nothing
    (``steps=0``) and knows the maze's map: the ceiling of goal reaching on the dataset."""

    name: ClassVar[str] = "waypoint"
    config_class: ClassVar[type] = WaypointConfig
    goal_conditioned: ClassVar[bool] = True
    trains: ClassVar[bool] = False

    def __init__(self, model: WaypointModel) -> None:
        self.model = model

    @classmethod
    def build(cls, data: BaselineData, config: WaypointConfig) -> Waypoint:
        model = WaypointModel.for_dataset(
            data.dataset, data.env_id, data.observation_dim, data.action_dim, config
        )
        return cls(model)

    def episode_policy(self, seed: int) -> WaypointController:
        """The controller of the episode whose env resets with ``seed`` (seeded with it)."""
        return self.model.controller(seed)


M = TypeVar("M", bound=BaselineModule)


def checked_dims(model: M, data: BaselineData) -> M:
    """``model``, once its dims (fitted on the training transitions) are the dataset's."""
    if (model.observation_dim, model.action_dim) != (data.observation_dim, data.action_dim):
        raise TtrlError(
            f"training transitions have dims ({model.observation_dim}, {model.action_dim}), "
            f"expected ({data.observation_dim}, {data.action_dim})"
        )
    return model


ALGORITHMS: dict[str, type[BaselineAlgorithm]] = {
    algorithm.name: algorithm
    for algorithm in (BehaviorCloning, ImplicitQLearning, GoalConditionedBC, Waypoint)
}


def get_algorithm(name: str) -> type[BaselineAlgorithm]:
    """The algorithm registered as ``name``; a one-line error listing the known ones otherwise."""
    if name not in ALGORITHMS:
        raise TtrlError(f"unknown algo {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
