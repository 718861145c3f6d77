"""A small AntMaze dataset made locally, with the structure of Minari's ``D4RL/antmaze/*``: test data only.

Minari's AntMaze datasets were collected by a goal-reaching SAC ant (trained for about 30M steps)
following Q-iteration waypoints, with action noise 0.2. That policy is not published and training
it is far beyond a CPU machine, so ttrl makes no real AntMaze data. What it makes here is a dataset
with the same *structure*, to test the path that real ones take (loading by name, the re-cut of
episodes, training the transformer and IQL) without downloading anything:

- the env the official data was collected in, as gymnasium-robotics' ``AntMaze_*-v5``
  (:data:`ttrl.data.registry.ANTMAZES`) in the continuing task with a fixed goal
  (``continuing_task=True, reset_target=False``, as Minari's generation script makes it), umaze with
  its fixed goal and reset cells (goal top left, reset bottom left), and the datasets' 27-dim
  observation (:data:`~ttrl.data.registry.ANTMAZE_ENV_KWARGS`: no contact forces);
- dict observations ``observation`` (27), ``achieved_goal`` and ``desired_goal`` (x, y), the env's
  sparse reward (1 within 0.45 of the goal), no terminations, truncations at the time limit;
- the env spec it was made with, so ``dataset.recover_environment()`` rebuilds the env;
- uniform random actions (seeded): the ant stumbles near its start and almost never reaches a goal.

Its Minari metadata says what it is (``ttrl.purpose``): scores of anything trained on it mean
nothing; they need the real datasets (``minari download D4RL/antmaze/umaze-v1``). Minari's also hold
``infos`` (success, qpos, qvel, goal) and an evaluation env spec with fixed start and goal cells;
these do not.

Datasets are ``ttrl/antmaze/<dataset>-v0`` for the names ``antmaze-<dataset>``
(``python scripts/make_dataset.py env=antmaze-umaze n_steps=5000``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ttrl.data.registry import (
    ANTMAZE_ENV_KWARGS,
    ANTMAZE_REF_MAX_SCORE,
    ANTMAZE_REF_MIN_SCORE,
    ANTMAZES,
    minari_datasets_root,
    split_antmaze_name,
    ttrl_minari_id,
)
from ttrl.making.collect import (
    check_free_space,
    check_make_options,
    collect_episodes,
    dataset_writer,
    estimate_dataset_bytes,
    rollout_bytes,
    write_minari_dataset,
)
from ttrl.making.maze import MazeMap, register_maze_envs

# Minari's generation script collects umaze (not umaze-diverse) with the goal fixed in the top-left
# cell and the ant reset in the bottom-left one; the other datasets use their env's own map.
UMAZE_DATA_MAP: MazeMap = [
    [1, 1, 1, 1, 1],
    [1, "g", 0, 0, 1],
    [1, 1, 1, 0, 1],
    [1, "r", 0, 0, 1],
    [1, 1, 1, 1, 1],
]
CONTINUING_TASK = {"continuing_task": True, "reset_target": False}  # as Minari's script
POLICY = "random"
PURPOSE = (
    "structural test dataset: uniform random actions, not Minari's goal-reaching ant; it has the "
    "structure of Minari's D4RL/antmaze datasets so that their loading and training path can be "
    "tested, and scores on it mean nothing (they need the real datasets)"
)
# the values stored per step: the 27-dim observation and its two 2-dim goals; the ant's 8 actions
ANTMAZE_OBSERVATION_DIM = 27 + 2 + 2
ANTMAZE_ACTION_DIM = 8


def antmaze_env_args(dataset: str) -> tuple[str, dict[str, Any]]:
    """The gymnasium id and ``gym.make`` kwargs of the env an AntMaze dataset was collected in."""
    kwargs: dict[str, Any] = {**CONTINUING_TASK, **ANTMAZE_ENV_KWARGS}
    if dataset == "umaze":
        kwargs["maze_map"] = [list(row) for row in UMAZE_DATA_MAP]
    return ANTMAZES[dataset].env_id, kwargs


def antmaze_env_spec(dataset: str, max_episode_steps: int | None = None) -> Any:
    """The ``EnvSpec`` an AntMaze dataset records (the collection env, with its kwargs)."""
    import gymnasium as gym

    env_id, kwargs = antmaze_env_args(dataset)
    register_maze_envs()  # gymnasium-robotics' ids
    env = gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    try:
        return env.spec
    finally:
        env.close()


def make_antmaze_dataset(
    name: str,
    n_steps: int = 5000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    max_episode_steps: int | None = None,
) -> Path:
    """Make the structural test dataset ``ttrl/antmaze/<dataset>-v0`` for ``antmaze-<dataset>``.

    Args:
        name: ``antmaze-<dataset>``, dataset one of :data:`ttrl.data.registry.ANTMAZES`.
        n_steps: env steps of random actions (about 1.5k steps/s on one core).
        seed: seeds the env (starts, goals) and the actions.
        overwrite: replace an existing dataset.
        progress: show a tqdm bar.
        max_episode_steps: override the env's time limit (700 for umaze, 1000 otherwise), e.g.
            longer episodes, which loading then re-cuts at the time limit.

    Returns:
        The dataset's folder.

    Raises:
        TtrlError: unknown name or options out of range, the dataset exists and not ``overwrite``,
            another process is making it (naming it), or too little free disk space.
    """
    dataset = split_antmaze_name(name)
    check_make_options(n_steps, seed, max_episode_steps)
    dataset_id = ttrl_minari_id(name)
    with dataset_writer(dataset_id, overwrite):  # from before collecting to the end of writing
        time_limit = max_episode_steps or ANTMAZES[dataset].time_limit
        n_episodes = math.ceil(n_steps / time_limit)
        need = rollout_bytes(n_steps, n_episodes, ANTMAZE_OBSERVATION_DIM, ANTMAZE_ACTION_DIM)
        check_free_space(
            minari_datasets_root(), estimate_dataset_bytes(need, n_episodes), dataset_id
        )
        env_id, env_kwargs = antmaze_env_args(dataset)
        register_maze_envs()
        episodes = collect_episodes(
            env_id, POLICY, n_steps, seed, progress, max_episode_steps, env_kwargs=env_kwargs
        )
        spec = antmaze_env_spec(dataset, max_episode_steps)
        metadata = {
            "name": name,
            "purpose": PURPOSE,
            "policy": POLICY,
            "dataset": dataset,
            "env_kwargs": env_kwargs,
            "seed": seed,
            "max_episode_steps": time_limit,
            "ref_source": "D4RL",
        }
        return write_minari_dataset(
            dataset_id,
            episodes,
            spec.id,
            ANTMAZE_REF_MIN_SCORE,
            ANTMAZE_REF_MAX_SCORE,
            metadata=metadata,
            overwrite=overwrite,
            description=f"{name}: {PURPOSE}",
            env_spec=spec,
        )
