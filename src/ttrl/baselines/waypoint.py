"""The waypoint controller that made the PointMaze datasets, as a baseline that trains nothing.

:class:`~ttrl.making.maze.WaypointController` (Q-iteration waypoints over the maze's cells and a
PD controller) knows the maze map, which no learned baseline sees: run without its action noise
it is the ceiling of goal reaching on a maze dataset. ``scripts/train_baseline.py algo=waypoint``
evaluates it through the same runner as the learned baselines (run dir, ``results.json`` with
``"agent": "waypoint"``, the same ``evaluate.*`` episodes and seeds), with ``steps=0``.

:class:`WaypointModel` is a :class:`~ttrl.baselines.BaselineModule` without parameters whose bundle
holds the maze's name (its :meth:`~WaypointModel.build_args`), so ``WaypointModel.load`` rebuilds it
from the run's checkpoint like any baseline. The controller keeps state through an episode (the
waypoint it is heading for, and the seeded jitter of later waypoints), so the evaluation gives
each episode its own controller (:meth:`WaypointModel.controller`), seeded with the episode's env
seed: episode ``i`` of an evaluation depends on nothing but ``seed + i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ttrl.baselines.mlp import BaselineModule
from ttrl.data.registry import MAZES, REWARD_TYPES
from ttrl.errors import TtrlError
from ttrl.making.maze import ACTION_NOISE, WaypointController, maze_map

# the gymnasium id of every maze env (sparse and dense reward) -> its maze's name
MAZE_OF_ENV = {
    info.env_id_for(reward): maze for maze, info in MAZES.items() for reward in REWARD_TYPES
}
GOAL_DIM = 2  # PointMaze's goals are (x, y)


@dataclass
class WaypointConfig:
    """Settings of the waypoint baseline; it trains nothing, so ``steps`` stays 0."""

    noise: float = 0.0  # sd of its Gaussian action noise; the datasets' behaviour has ACTION_NOISE
    steps: int = 0  # nothing is trained
    seed: int = 0  # unused: each episode's controller is seeded with that episode's env seed

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TtrlError` naming the first bad field."""
        label = type(self).__name__
        number = isinstance(self.noise, (int, float)) and not isinstance(self.noise, bool)
        if not (number and 0 <= self.noise < math.inf):
            raise TtrlError(
                f"{label}.noise={self.noise!r} must be a number >= 0 (0: noiseless; "
                f"{ACTION_NOISE}: the datasets' behaviour policy)"
            )
        if self.steps != 0:
            raise TtrlError(f"{label}.steps={self.steps!r}: the waypoint controller trains nothing")


class WaypointModel(BaselineModule):
    """The waypoint controller of one maze: no parameters, the maze's name in its bundle."""

    config_class = WaypointConfig
    goal_dim = GOAL_DIM

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        maze: str,
        config: WaypointConfig | None = None,
    ) -> None:
        super().__init__(
            observation_dim, action_dim, config if config is not None else WaypointConfig()
        )
        maze_map(maze)  # one line for an unknown maze
        self.maze = maze

    @classmethod
    def for_dataset(
        cls,
        dataset: str,
        env_id: str | None,
        observation_dim: int,
        action_dim: int,
        config: WaypointConfig | None = None,
    ) -> WaypointModel:
        """The controller of the maze of ``dataset``, whose env is ``env_id``; one line if that is
        no PointMaze env."""
        if env_id not in MAZE_OF_ENV:
            raise TtrlError(
                f"algo=waypoint is the PointMaze datasets' own controller: it needs a PointMaze "
                f"dataset (e.g. env=pointmaze-umaze), not {dataset} ({env_id or 'no environment'})"
            )
        return cls(observation_dim, action_dim, MAZE_OF_ENV[env_id], config)

    def build_args(self) -> dict[str, Any]:
        return {**super().build_args(), "maze": self.maze}

    @property
    def device(self) -> torch.device:
        """Always the CPU: the controller is numpy."""
        return torch.device("cpu")

    def controller(self, seed: int) -> WaypointController:
        """A fresh controller for one episode, its noise and waypoint jitter seeded with ``seed``;
        its ``act`` takes the env's dict observation."""
        return WaypointController(self.maze, noise=self.config.noise, seed=seed)

    def extra_repr(self) -> str:
        return f"maze={self.maze!r}, noise={self.config.noise}"
