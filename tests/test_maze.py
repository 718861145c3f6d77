"""PointMaze: the waypoint controller, datasets made with Minari's recipe, and loading them with goals."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from test_data_collect import run_script
from ttrl.data import load_d4rl_hdf5, load_transitions, resolve_dataset, write_d4rl_hdf5
from ttrl.data.registry import (
    MAZES,
    is_maze_name,
    maze_dataset_names,
    official_minari_id,
    ttrl_minari_id,
)
from ttrl.errors import TtrlError
from ttrl.making import write_minari_dataset
from ttrl.making.maze import (
    FOURROOMS_MAP,
    SUCCESS_DISTANCE,
    MazeGrid,
    WaypointController,
    make_maze_dataset,
    make_maze_env,
    maze_map,
)

# a small custom maze: the only way from the top-left cell to the top-right one winds down and up
SMALL_MAP = [
    [1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 1, 0, 0, 1],
    [1, 0, 1, 1, 0, 1, 1],
    [1, 0, 0, 0, 0, 0, 1],
    [1, 1, 1, 1, 1, 1, 1],
]
GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


def run_to_goal(env: gym.Env, controller: WaypointController, seed: int, options=None) -> int:
    """Steps the noiseless controller takes to the goal (the episodic task ends there)."""
    obs, _ = env.reset(seed=seed, options=options)
    controller.reset()
    for step in range(1, env.spec.max_episode_steps + 1):
        obs, _, terminated, truncated, info = env.step(controller.act(obs))
        if terminated:
            assert info["success"]
            return step
        assert not truncated, f"seed {seed}: time limit reached before the goal"
    raise AssertionError("unreachable")


def test_the_controller_reaches_the_goal_in_umaze_from_several_starts():
    env = make_maze_env("umaze", continuing_task=False)
    controller = WaypointController(env.unwrapped.maze)
    steps = [run_to_goal(env, controller, seed) for seed in range(8)]
    assert max(steps) < env.spec.max_episode_steps == 300
    # from the end of one arm to the other's, around the bend: four cells
    far = run_to_goal(env, controller, 0, {"reset_cell": (1, 1), "goal_cell": (3, 1)})
    assert 30 < far < 300
    env.close()


def test_the_controller_reaches_the_goal_in_a_small_custom_maze():
    env = make_maze_env(SMALL_MAP, continuing_task=False)
    assert env.unwrapped.maze.maze_map == SMALL_MAP
    controller = WaypointController(SMALL_MAP)
    for seed in range(5):
        run_to_goal(env, controller, seed)
    run_to_goal(env, controller, 0, {"reset_cell": (1, 1), "goal_cell": (1, 5)})
    env.close()


def test_q_iteration_gives_shortest_paths():
    grid = MazeGrid(SMALL_MAP)
    path, cell = [], (1, 1)
    while cell != (1, 5):
        cell = grid.next_cell(cell, (1, 5))
        path.append(cell)
    assert path == [(2, 1), (3, 1), (3, 2), (3, 3), (3, 4), (2, 4), (1, 4), (1, 5)]
    # the cell centres and the env's own conversion agree
    env = make_maze_env(SMALL_MAP)
    maze = env.unwrapped.maze
    for cell in [(1, 1), (3, 4), (2, 4)]:
        np.testing.assert_allclose(grid.center(cell), maze.cell_rowcol_to_xy(np.array(cell)))
        assert grid.cell_of(grid.center(cell) + 0.3) == tuple(
            maze.cell_xy_to_rowcol(grid.center(cell) + 0.3)
        )
    env.close()


def test_the_controller_is_a_seeded_policy_whose_noise_is_clipped():
    env = make_maze_env("umaze")
    # the ball at rest next to its goal: the PD action is p * offset, small enough not to clip
    pos = MazeGrid.of("umaze").center((1, 1))
    obs = {"observation": np.r_[pos, 0.0, 0.0], "achieved_goal": pos, "desired_goal": pos + 0.02}
    np.testing.assert_allclose(WaypointController("umaze").act(obs), [0.2, 0.2], rtol=1e-6)
    noisy = [WaypointController("umaze", noise=0.5, seed=1).act(obs) for _ in range(2)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert not np.allclose(noisy[0], [0.2, 0.2])
    assert noisy[0].dtype == np.float32 and env.action_space.contains(noisy[0])
    big = WaypointController("umaze", noise=100.0, seed=0)
    assert all(np.abs(big.act(obs)).max() == 1.0 for _ in range(5))
    env.close()


def episode_lengths(dataset: minari.MinariDataset) -> list[int]:
    return [len(episode.rewards) for episode in dataset.iterate_episodes()]


def test_a_small_dataset_has_the_structure_of_minaris_pointmaze_datasets(minari_root):
    make_maze_dataset("pointmaze-umaze", n_steps=2000, seed=0, progress=False)
    dataset = minari.load_dataset("ttrl/pointmaze/umaze-v0")
    space = dataset.observation_space
    assert isinstance(space, gym.spaces.Dict) and set(space.spaces) == set(GOAL_KEYS)
    assert {k: space[k].shape for k in GOAL_KEYS} == {
        "observation": (4,),
        "achieved_goal": (2,),
        "desired_goal": (2,),
    }
    assert dataset.action_space.shape == (2,) and dataset.total_steps == 2000
    # a continuing task: cut only at the 300-step time limit (and the last one by the budget)
    assert episode_lengths(dataset) == [300] * 6 + [200]
    n_reached = 0
    for episode in dataset.iterate_episodes():
        obs, rewards = episode.observations, episode.rewards
        assert {k: obs[k].shape[1:] for k in GOAL_KEYS} == {
            "observation": (4,),
            "achieved_goal": (2,),
            "desired_goal": (2,),
        }
        np.testing.assert_array_equal(obs["achieved_goal"], obs["observation"][:, :2])
        assert not episode.terminations.any() and episode.truncations[-1]
        assert not episode.truncations[:-1].any()
        assert np.abs(episode.actions).max() <= 1.0
        # the reward of step t is the env's, for the observation it led to
        distance = np.linalg.norm(obs["achieved_goal"][1:] - obs["desired_goal"][1:], axis=1)
        np.testing.assert_array_equal(rewards, (distance <= SUCCESS_DISTANCE).astype(float))
        # the goal moves right after it is reached (the env shows the new one a step later)
        goal = obs["desired_goal"]
        moved = np.linalg.norm(np.diff(goal, axis=0), axis=1) > 0
        reached = np.flatnonzero(rewards == 1)
        np.testing.assert_array_equal(np.flatnonzero(moved), reached[reached + 2 < len(goal)] + 1)
        n_reached += len(reached)
    assert n_reached >= 10  # noisy, but the controller keeps reaching goals
    recipe = dataset.storage.metadata["ttrl"]
    assert recipe["action_noise"] == 0.5 and recipe["gains"] == {"p": 10.0, "d": -1.0}
    assert recipe["max_episode_steps"] == 300 and recipe["seed"] == 0
    env = dataset.recover_environment()
    assert env.spec.id == "PointMaze_UMaze-v3" and env.spec.max_episode_steps == 300
    assert env.spec.kwargs["continuing_task"] and env.spec.kwargs["reset_target"]
    assert env.unwrapped.maze.maze_map == maze_map("umaze")
    env.close()


def test_dense_fourrooms_rewards_and_its_env_recovered_without_ttrl(minari_root):
    make_maze_dataset(
        "pointmaze-fourrooms-dense", n_steps=500, seed=3, progress=False, max_episode_steps=200
    )
    dataset = minari.load_dataset("ttrl/pointmaze/fourrooms-dense-v0")
    assert episode_lengths(dataset) == [200, 200, 100]
    for episode in dataset.iterate_episodes():
        obs = episode.observations
        distance = np.linalg.norm(obs["achieved_goal"][1:] - obs["desired_goal"][1:], axis=1)
        np.testing.assert_allclose(episode.rewards, np.exp(-distance))
    # a fresh interpreter that never imports ttrl rebuilds the env from the dataset alone
    code = textwrap.dedent(
        """
        import minari
        env = minari.load_dataset("ttrl/pointmaze/fourrooms-dense-v0").recover_environment()
        obs, _ = env.reset(seed=0)
        print(env.spec.id, env.spec.max_episode_steps, env.unwrapped.reward_type,
              env.unwrapped.maze.maze_map == MAP, sorted(obs))
        """
    ).replace("MAP", repr(FOURROOMS_MAP))
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MINARI_DATASETS_PATH": str(minari_root), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == (
        "PointMaze_FourRoomsDense-v3 200 dense True ['achieved_goal', 'desired_goal', 'observation']"
    )


def test_loading_keeps_the_observation_and_the_goals(minari_root, tmp_path):
    make_maze_dataset("pointmaze-umaze", n_steps=700, seed=1, progress=False)
    spec = resolve_dataset("pointmaze-umaze")
    assert spec.minari_id == "ttrl/pointmaze/umaze-v0" and spec.env_id == "PointMaze_UMaze-v3"
    data = load_transitions("pointmaze-umaze", require_goals=True)
    episodes = list(minari.load_dataset("ttrl/pointmaze/umaze-v0").iterate_episodes())
    assert data.observations.shape == (700, 4) and data.observation_dim == 4
    assert data.action_dim == 2 and data.observations.dtype == np.float32
    for key in ("observation", "desired_goal", "achieved_goal"):
        raw = np.concatenate([e.observations[key][:-1] for e in episodes]).astype(np.float32)
        held = data.observations if key == "observation" else data.goal(key)
        np.testing.assert_array_equal(held, raw)
    assert data.goals["desired_goal"].shape == (700, 2)
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [299, 599, 699])
    assert not data.terminals.any()
    # a D4RL-format file keeps the goals too
    path = write_d4rl_hdf5(tmp_path / "umaze.hdf5", data)
    again = load_d4rl_hdf5(path)
    np.testing.assert_array_equal(again.goal("desired_goal"), data.goal("desired_goal"))
    with h5py.File(path) as file:
        assert sorted(file["goals"]) == ["achieved_goal", "desired_goal"]


def test_official_ids_are_used_when_present(minari_root):
    assert official_minari_id("pointmaze-umaze") == "D4RL/pointmaze/umaze-v2"
    assert official_minari_id("pointmaze-large-dense") == "D4RL/pointmaze/large-dense-v2"
    assert official_minari_id("pointmaze-fourrooms") is None
    assert ttrl_minari_id("pointmaze-medium-dense") == "ttrl/pointmaze/medium-dense-v0"
    assert ttrl_minari_id("hopper-medium") == "ttrl/hopper/medium-v0"  # locomotion as before
    assert official_minari_id("hopper-medium") == "mujoco/hopper/medium-v0"
    with pytest.raises(TtrlError, match="minari download D4RL/pointmaze/umaze-v2") as err:
        resolve_dataset("pointmaze-umaze", source="official")
    assert "\n" not in str(err.value) and "make_dataset.py env=pointmaze-umaze" in str(err.value)
    with pytest.raises(TtrlError, match="Minari publishes no 'pointmaze-fourrooms'"):
        resolve_dataset("pointmaze-fourrooms", source="official")
    make_maze_dataset("pointmaze-umaze", n_steps=300, seed=0, progress=False)
    episodes = list(minari.load_dataset("ttrl/pointmaze/umaze-v0").iterate_episodes())
    write_minari_dataset(
        "D4RL/pointmaze/umaze-v2",
        episodes,
        "PointMaze_UMaze-v3",
        0.0,
        100.0,
        env_spec=minari.load_dataset("ttrl/pointmaze/umaze-v0").env_spec,
    )
    official = resolve_dataset("pointmaze-umaze", source="official")
    assert official.minari_id == "D4RL/pointmaze/umaze-v2" and official.name == "pointmaze-umaze"
    assert (official.ref_min_score, official.ref_max_score) == (0.0, 100.0)
    assert resolve_dataset("pointmaze-umaze").minari_id == "ttrl/pointmaze/umaze-v0"  # auto: ours
    assert load_transitions(official).goal("desired_goal").shape == (300, 2)


def write_dict_dataset(dataset_id: str, fields: dict[str, int]) -> None:
    """A Minari dataset with dict observations of the given fields and sizes (no env)."""
    rng = np.random.default_rng(0)
    space = gym.spaces.Dict(
        {key: gym.spaces.Box(-np.inf, np.inf, (size,), np.float64) for key, size in fields.items()}
    )
    buffer = EpisodeBuffer(
        observations={key: rng.normal(size=(11, size)) for key, size in fields.items()},
        actions=rng.uniform(-1, 1, size=(10, 2)).astype(np.float32),
        rewards=np.zeros(10),
        terminations=np.zeros(10, bool),
        truncations=np.eye(10, dtype=bool)[-1],
    )
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    minari.create_dataset_from_buffers(
        dataset_id, [buffer], observation_space=space, action_space=action_space
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dict_observations_without_goal_fields_are_one_line_where_goals_are_needed(minari_root):
    write_dict_dataset("test/nogoal/data-v0", {"observation": 3, "extra": 1})
    data = load_transitions("test/nogoal/data-v0")
    assert data.observations.shape == (10, 3) and data.goals is None
    for fail in (
        lambda: data.goal("desired_goal"),
        lambda: load_transitions("test/nogoal/data-v0", require_goals=True),
    ):
        with pytest.raises(TtrlError) as err:
            fail()
        message = str(err.value)
        assert "\n" not in message and "test/nogoal/data-v0" in message
        assert "no 'desired_goal' field" in message and "pointmaze-umaze" in message
    write_dict_dataset("test/nogoal/half-v0", {"observation": 3, "desired_goal": 2})
    with pytest.raises(TtrlError, match=r"'achieved_goal'.*hold desired_goal"):
        load_transitions("test/nogoal/half-v0", require_goals=True)
    write_dict_dataset("test/nogoal/state-v0", {"state": 3})
    with pytest.raises(TtrlError, match=r"without a flat .observation. field \(it holds state\)"):
        load_transitions("test/nogoal/state-v0")


def test_locomotion_data_has_no_goals(minari_root, tiny_dataset):
    data = load_transitions(tiny_dataset)
    assert data.goals is None and data.observations.shape == (400, 17)
    with pytest.raises(TtrlError, match="it has no goal fields"):
        data.goal()


def test_unknown_maze_names_are_one_line():
    assert is_maze_name("pointmaze-umaze-dense") and not is_maze_name("pointmaze-spiral")
    assert set(maze_dataset_names()) == {
        f"pointmaze-{maze}{suffix}" for maze in MAZES for suffix in ("", "-dense")
    }
    for fail, named in [
        (
            lambda: make_maze_dataset("pointmaze-spiral", 10),
            "unknown maze dataset 'pointmaze-spiral'",
        ),
        (lambda: maze_map("spiral"), "unknown maze 'spiral'"),
        (lambda: WaypointController("spiral"), "unknown maze 'spiral'"),
        (lambda: make_maze_env("spiral"), "unknown maze 'spiral'"),
        (lambda: make_maze_env("umaze", reward_type="shaped"), "unknown reward type 'shaped'"),
        (lambda: resolve_dataset("pointmaze-spiral"), "unknown dataset 'pointmaze-spiral'"),
    ]:
        with pytest.raises(TtrlError) as err:
            fail()
        message = str(err.value)
        assert "\n" not in message and named in message, message
        assert "umaze" in message or "sparse" in message


def test_make_dataset_script_makes_a_maze_dataset(minari_root, tmp_path):
    done = run_script(
        minari_root, tmp_path, "env=pointmaze-medium", "n_steps=700", "seed=2", "progress=false"
    )
    assert done.returncode == 0, done.stderr
    assert str(minari_root / "ttrl/pointmaze/medium-v0") in done.stdout
    assert episode_lengths(minari.load_dataset("ttrl/pointmaze/medium-v0")) == [600, 100]
    again = run_script(minari_root, tmp_path, "env=pointmaze-medium", "n_steps=10")
    assert again.returncode == 2 and "already exists" in again.stderr.strip().splitlines()[-1]
    bad = run_script(minari_root, tmp_path, "env=pointmaze-spiral", "n_steps=10")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip().splitlines()[-1].startswith("error: unknown dataset 'pointmaze-spiral'")
    )
