"""AntMaze: names, the local structural test dataset, the re-cut on loading, and training on it.

The dataset made here is random actions with the structure of Minari's D4RL/antmaze datasets: these
tests check structure (names, episodes, flags, value targets, dims, scripts), never scores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest

import ttrl.baselines.runner  # noqa: F401  (registers train_baseline_schema for compose_config)
from test_data_collect import run_script as run_make_dataset
from ttrl.baselines.data import load_baseline_data
from ttrl.baselines.iql import IQLModel
from ttrl.checkpoint import load_bundle
from ttrl.config import compose_config, validate_train_config
from ttrl.data import load_preprocessed, load_transitions, resolve_dataset
from ttrl.data.registry import (
    ANTMAZES,
    antmaze_dataset_names,
    is_antmaze_name,
    official_minari_id,
    ttrl_minari_id,
)
from ttrl.errors import TtrlError
from ttrl.making import write_minari_dataset
from ttrl.making.antmaze import PURPOSE, UMAZE_DATA_MAP, make_antmaze_dataset
from ttrl.making.maze import SUCCESS_DISTANCE, register_maze_envs

REPO = Path(__file__).resolve().parents[1]
GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
# the test dataset: two stored 1000-step episodes, longer than umaze's 700-step time limit
N_STEPS, STORED_LENGTH, TIME_LIMIT = 2000, 1000, 700
RECUT_ENDS = [699, 999, 1699, 1999]  # the stored ends (999, 1999) and every 700th step within
# steps of the "official" copy flagged as terminal with reward 1, as D4RL flags the goal: the ant
# is not reset there, so they must end no episode and take no penalty
GOAL_STEPS = np.r_[300:310, 1650:1660]
DISCOUNT = 0.99


@pytest.fixture(scope="module")
def made_root(tmp_path_factory):
    """A Minari root holding ttrl/antmaze/umaze-v0, made once for this module (2000 random steps)."""
    root = tmp_path_factory.mktemp("antmaze")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        make_antmaze_dataset(
            "antmaze-umaze",
            n_steps=N_STEPS,
            seed=0,
            progress=False,
            max_episode_steps=STORED_LENGTH,
        )
    return root


@pytest.fixture
def antmaze_umaze(minari_root, made_root):
    """This test's Minari root with a copy of the made dataset; returns its name."""
    shutil.copytree(made_root / "ttrl", minari_root / "ttrl")
    return "antmaze-umaze"


def stored_episodes(minari_id: str = "ttrl/antmaze/umaze-v0") -> list:
    return list(minari.load_dataset(minari_id).iterate_episodes())


def write_official_copy(minari_root: Path) -> dict[str, np.ndarray]:
    """D4RL/antmaze/umaze-v1: the made episodes with the goal steps flagged terminal, reward 1.

    Returns the flat rewards and terminals it holds.
    """
    episodes = stored_episodes()
    rewards = np.concatenate([e.rewards for e in episodes])
    terminals = np.zeros(N_STEPS, dtype=bool)
    rewards[GOAL_STEPS], terminals[GOAL_STEPS] = 1.0, True
    offsets = np.cumsum([0] + [len(e.rewards) for e in episodes])
    copies = [
        {
            "observations": e.observations,
            "actions": e.actions,
            "rewards": rewards[begin:end],
            "terminations": terminals[begin:end],
            "truncations": e.truncations,
        }
        for e, begin, end in zip(episodes, offsets[:-1], offsets[1:], strict=True)
    ]
    env_spec = minari.load_dataset("ttrl/antmaze/umaze-v0").env_spec
    write_minari_dataset(
        "D4RL/antmaze/umaze-v1", copies, "AntMaze_UMaze-v5", 0.0, 1.0, env_spec=env_spec
    )
    return {"rewards": rewards, "terminals": terminals}


def write_d4rl_file(path: Path, rewards: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """A D4RL-style AntMaze HDF5 file of the made data: flat 29-dim observations (x, y first),
    ``infos/goal``, terminals where the goal steps are; returns its observations."""
    episodes = stored_episodes()
    obs = {k: np.concatenate([e.observations[k][:-1] for e in episodes]) for k in GOAL_KEYS}
    flat = np.concatenate([obs["achieved_goal"], obs["observation"]], axis=1)
    terminals = np.zeros(N_STEPS, dtype=bool)
    terminals[GOAL_STEPS] = True
    with h5py.File(path, "w") as file:
        file["observations"] = flat.astype(np.float32)
        file["actions"] = np.concatenate([e.actions for e in episodes])
        file["rewards"] = rewards.astype(np.float32)
        file["terminals"] = terminals
        file["timeouts"] = timeouts
        file["infos/goal"] = obs["desired_goal"]
    return flat


def brute_force_values(rewards: np.ndarray, ends: list[int], discount: float) -> np.ndarray:
    """``V_t = sum_{k>=1} discount^(k-1) r_{t+k}`` within each episode ending at ``ends``, by loops."""
    values, start = np.zeros(len(rewards)), 0
    for end in ends:
        for t in range(start, end + 1):
            values[t] = sum(discount ** (k - t - 1) * rewards[k] for k in range(t + 1, end + 1))
        start = end + 1
    return values


# ------------------------------------------------------------------------------ names and envs
def test_names_ids_and_time_limits_match_gymnasium_robotics():
    register_maze_envs()
    assert antmaze_dataset_names() == [
        "antmaze-umaze",
        "antmaze-umaze-diverse",
        "antmaze-medium-play",
        "antmaze-medium-diverse",
        "antmaze-large-play",
        "antmaze-large-diverse",
    ]
    for name in antmaze_dataset_names():
        dataset = name.removeprefix("antmaze-")
        info = ANTMAZES[dataset]
        assert is_antmaze_name(name)
        assert official_minari_id(name) == f"D4RL/antmaze/{dataset}-v1"
        assert ttrl_minari_id(name) == f"ttrl/antmaze/{dataset}-v0"
        assert info.env_id.startswith("AntMaze_") and info.env_id.endswith("-v5")
        assert info.time_limit == (700 if dataset.startswith("umaze") else 1000)
        assert gym.spec(info.env_id).max_episode_steps == info.time_limit
        assert info.recut.time_limit == info.time_limit and info.recut.zero_terminals


def test_unknown_antmaze_names_are_one_line(minari_root, tmp_path):
    (tmp_path / "antmaze-spiral-v2.hdf5").write_bytes(b"")
    for fail, named in [
        (lambda: resolve_dataset("antmaze-spiral"), "unknown AntMaze dataset 'antmaze-spiral'"),
        (lambda: resolve_dataset("antmaze-umaze-play"), "'antmaze-umaze-play'"),
        (lambda: resolve_dataset("D4RL/antmaze/spiral-v1"), "'D4RL/antmaze/spiral-v1'"),
        (lambda: resolve_dataset(tmp_path / "antmaze-spiral-v2.hdf5"), "'antmaze-spiral-v2.hdf5'"),
        (lambda: make_antmaze_dataset("antmaze-spiral", 10), "'antmaze-spiral'"),
    ]:
        with pytest.raises(TtrlError) as err:
            fail()
        message = str(err.value)
        assert "\n" not in message and named in message, message
        assert "unknown AntMaze dataset" in message and "antmaze-large-diverse" in message
    # a known name that is not on disk names both ways to get it, the real one first
    with pytest.raises(TtrlError) as err:
        resolve_dataset("antmaze-large-play")
    message = str(err.value)
    assert "\n" not in message
    assert message.index("minari download D4RL/antmaze/large-play-v1") < message.index(
        "make_dataset.py env=antmaze-large-play` (a structural test dataset only)"
    )


# ------------------------------------------------------------------------------ the made dataset
def test_the_made_dataset_has_the_structure_of_minaris_antmaze_datasets(antmaze_umaze):
    dataset = minari.load_dataset("ttrl/antmaze/umaze-v0")
    space = dataset.observation_space
    assert isinstance(space, gym.spaces.Dict) and set(space.spaces) == set(GOAL_KEYS)
    assert {k: space[k].shape for k in GOAL_KEYS} == {
        "observation": (27,),
        "achieved_goal": (2,),
        "desired_goal": (2,),
    }
    assert dataset.action_space.shape == (8,) and dataset.total_steps == N_STEPS
    episodes = stored_episodes()
    assert [len(e.rewards) for e in episodes] == [STORED_LENGTH] * 2
    for episode in episodes:
        obs = episode.observations
        assert not episode.terminations.any() and episode.truncations[-1]
        assert not episode.truncations[:-1].any()
        assert np.abs(episode.actions).max() <= 1.0
        # the sparse reward of each step is the env's, for the observation it led to
        distance = np.linalg.norm(obs["achieved_goal"][1:] - obs["desired_goal"][1:], axis=1)
        np.testing.assert_array_equal(episode.rewards, (distance <= SUCCESS_DISTANCE) * 1.0)
        # reset_target=False: one goal per episode, in the top-left cell; the ant starts bottom left
        assert (obs["desired_goal"] == obs["desired_goal"][0]).all()
        np.testing.assert_allclose(obs["desired_goal"][0], [-4.0, 4.0], atol=1.0)
        np.testing.assert_allclose(obs["achieved_goal"][0], [-4.0, -4.0], atol=1.0)
    starts = [e.observations["achieved_goal"][0] for e in episodes]
    assert not np.array_equal(*starts)  # each reset draws its start (and goal) with noise
    metadata = dataset.storage.metadata
    assert metadata["ttrl"]["purpose"] == PURPOSE and metadata["ttrl"]["policy"] == "random"
    assert "structural test dataset" in PURPOSE and "scores on it mean nothing" in PURPOSE
    assert "structural test dataset" in metadata["description"]
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (0.0, 1.0)
    env = dataset.recover_environment()
    assert env.spec.id == "AntMaze_UMaze-v5" and env.spec.max_episode_steps == STORED_LENGTH
    kwargs = env.spec.kwargs
    assert kwargs["continuing_task"] is True and kwargs["reset_target"] is False
    assert kwargs["reward_type"] == "sparse" and kwargs["maze_map"] == UMAZE_DATA_MAP
    assert env.observation_space["observation"].shape == (27,)
    env.close()


def test_make_dataset_script_makes_an_antmaze_dataset(minari_root, tmp_path):
    done = run_make_dataset(
        minari_root, tmp_path, "env=antmaze-umaze", "n_steps=800", "progress=false"
    )
    assert done.returncode == 0, done.stderr
    assert str(minari_root / "ttrl/antmaze/umaze-v0") in done.stdout
    assert [len(e.rewards) for e in stored_episodes()] == [700, 100]  # the env's own time limit
    bad = run_make_dataset(minari_root, tmp_path, "env=antmaze-spiral", "n_steps=10")
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and last.startswith(
        "error: unknown AntMaze dataset 'antmaze-spiral'"
    )


# ------------------------------------------------------------------------------ loading
def test_loading_by_name_recuts_episodes_at_the_time_limit(antmaze_umaze):
    spec = resolve_dataset("antmaze-umaze")  # auto: only ttrl's test data is there
    assert spec.minari_id == "ttrl/antmaze/umaze-v0" and spec.name == "antmaze-umaze"
    assert spec.env_id == "AntMaze_UMaze-v5" and spec.recut.time_limit == TIME_LIMIT
    assert (spec.ref_min_score, spec.ref_max_score, spec.ref_source) == (0.0, 1.0, "D4RL")
    assert spec.normalized_score(1.0) == 100.0  # 100 x success
    data = load_transitions("antmaze-umaze")
    episodes = stored_episodes()
    raw = {k: np.concatenate([e.observations[k][:-1] for e in episodes]) for k in GOAL_KEYS}
    np.testing.assert_array_equal(data.observations, raw["observation"].astype(np.float32))
    np.testing.assert_array_equal(
        data.goal("achieved_goal"), raw["achieved_goal"].astype(np.float32)
    )
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), RECUT_ENDS)
    assert not data.terminals.any() and data.n_episodes == 4
    # the Minari id names the same AntMaze data, with the same re-cut
    by_id = load_transitions("ttrl/antmaze/umaze-v0")
    np.testing.assert_array_equal(by_id.timeouts, data.timeouts)
    # the env the spec names, made as the spec says, has the dataset's observation size
    register_maze_envs()
    env = gym.make(spec.env_id, **spec.env_kwargs)
    assert env.observation_space["observation"].shape == (data.observation_dim,) == (27,)
    assert env.action_space.shape == (data.action_dim,) == (8,)
    assert env.spec.max_episode_steps == TIME_LIMIT
    env.close()


def test_terminals_are_zeroed_and_value_targets_have_no_termination_penalty(
    antmaze_umaze, minari_root
):
    official = write_official_copy(minari_root)
    spec = resolve_dataset("antmaze-umaze")  # auto: the real dataset wins over ttrl's test data
    assert spec.minari_id == "D4RL/antmaze/umaze-v1" and spec.env_id == "AntMaze_UMaze-v5"
    assert resolve_dataset("antmaze-umaze", source="ttrl").minari_id == "ttrl/antmaze/umaze-v0"
    data = load_transitions(spec)
    assert not data.terminals.any()  # stored: 20 terminal steps
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), RECUT_ENDS)  # none ends there
    rows = load_preprocessed("antmaze-umaze", termination_penalty=-100.0, discount=DISCOUNT)
    assert rows.termination_penalty is None and not rows.terminated.any()
    np.testing.assert_array_equal(rows.episode_lengths, [700, 300, 700, 300])
    reward, value = rows.joined[:, -2], rows.joined[:, -1]
    np.testing.assert_array_equal(reward, official["rewards"])  # no -100, and no IQL shift
    expected = brute_force_values(official["rewards"], RECUT_ENDS, DISCOUNT)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    # IQL reads the same episodes: terminals cleared, the re-cut's ends, rewards as stored
    iql = load_baseline_data("antmaze-umaze", val_fraction=0.0)
    assert not iql.train.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(iql.train.episode_ends.numpy()), RECUT_ENDS)
    np.testing.assert_array_equal(iql.train.rewards.numpy(), official["rewards"])


def test_a_d4rl_hdf5_file_with_flat_observations_loads_by_path_with_the_same_recut(
    antmaze_umaze, tmp_path
):
    rewards = np.zeros(N_STEPS, dtype=np.float32)
    rewards[GOAL_STEPS] = 1.0
    stored_ends = np.zeros(N_STEPS, dtype=bool)
    stored_ends[[STORED_LENGTH - 1, N_STEPS - 1]] = True
    path = tmp_path / "antmaze-umaze-v2.hdf5"
    flat = write_d4rl_file(path, rewards, stored_ends)
    spec = resolve_dataset(path)
    assert spec.hdf5_path == path and spec.env_id == "AntMaze_UMaze-v5"
    assert spec.recut.time_limit == TIME_LIMIT and spec.normalized_score(0.5) == 50.0
    data = load_transitions(path)
    assert data.observations.shape == (N_STEPS, 29)
    np.testing.assert_array_equal(data.observations, flat.astype(np.float32))
    assert not data.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), RECUT_ENDS)
    rows = load_preprocessed(path, discount=DISCOUNT)
    assert rows.termination_penalty is None
    np.testing.assert_allclose(
        rows.joined[:, -1], brute_force_values(rewards, RECUT_ENDS, DISCOUNT), rtol=1e-5, atol=1e-6
    )
    # the env's observation is the file's without x, y, which are its achieved_goal
    register_maze_envs()
    env = gym.make(spec.env_id, **spec.env_kwargs)
    sizes = {k: env.observation_space[k].shape[0] for k in ("achieved_goal", "observation")}
    assert sizes["achieved_goal"] + sizes["observation"] == data.observation_dim == 29
    env.close()
    # D4RL's one long run without timeouts (and another spelling of the name) is cut by the limit
    long_run = tmp_path / "antmaze_umaze.hdf5"
    write_d4rl_file(long_run, rewards, np.zeros(N_STEPS, dtype=bool))
    np.testing.assert_array_equal(
        np.flatnonzero(load_transitions(long_run).timeouts), [699, 1399, 1999]
    )


# ------------------------------------------------------------------------------ configs and scripts
@pytest.mark.parametrize("name", [f"antmaze-{dataset}" for dataset in ANTMAZES])
def test_env_files_name_the_dataset_and_plan_guided_by_q(name):
    cfg = compose_config(overrides=[f"env={name}"])
    validate_train_config(cfg)
    assert cfg.env.name == name and "iql" not in cfg
    assert cfg.planner.objective == "q" and cfg.planner.q_run is None
    q_cfg = compose_config("train_q", [f"env={name}", "iql=antmaze"])
    assert q_cfg.env.name == name and q_cfg.iql.reward_shift == -1.0
    assert compose_config("train_q", [f"env={name}"]).iql.reward_shift == 0.0  # only when asked


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"scripts/{script}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_train_script_end_to_end_on_the_made_dataset(antmaze_umaze, tmp_path):
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py",
        "model=tiny",
        "logger=disabled",
        "device=cpu",
        "trainer.batch_size=8",
        "trainer.log_interval=2",
        "trainer.eval_interval=4",
        "trainer.val_batches=2",
        "trainer.progress=false",
        "data.val_fraction=0.25",
        "trainer.max_steps=4",
        f"env={antmaze_umaze}",
        f"run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = load_bundle(run_dir)
    assert bundle["trainer"]["step"] == 4 and bundle["config"]["env"]["name"] == "antmaze-umaze"
    assert bundle["config"]["planner"]["objective"] == "q"
    model = bundle["model_config"]
    assert (model["observation_dim"], model["action_dim"]) == (27, 8)
    assert model["transition_dim"] == 27 + 8 + 2
    # it plans in AntMaze_UMaze-v5 made as the dataset says: 27-dim observations, episodic
    planned = run_script(
        "plan.py",
        f"run_dir={run_dir}",
        "planner.objective=return",
        "planner.horizon=2",
        "planner.beam_width=2",
        "planner.window_transitions=2",
        "controller.context_transitions=1",
        "n_episodes=1",
        "max_episode_steps=3",
        "progress=false",
        "device=cpu",
        "name=smoke",
    )
    assert planned.returncode == 0, planned.stderr[-2000:]
    results = json.loads((run_dir / "plan" / "smoke" / "results.json").read_text())
    (episode,) = results["episodes"]
    assert episode["length"] == 3 and episode["success"] is False
    assert results["env_id"] == "AntMaze_UMaze-v5"


def test_evaluation_makes_the_antmaze_env_episodic_with_the_datasets_observation(antmaze_umaze):
    from ttrl.evaluation import evaluation_spec
    from ttrl.evaluation.rollout import env_factory_for

    spec = evaluation_spec(antmaze_umaze)
    env = env_factory_for(spec)(spec.env_id, 5, False)
    try:
        assert env.observation_space["observation"].shape == (27,)
        assert env.unwrapped.continuing_task is False  # an episode ends at its goal
    finally:
        env.close()


def test_train_q_script_end_to_end_shifts_rewards(antmaze_umaze, tmp_path):
    run_dir = tmp_path / "q"
    result = run_script(
        "train_q.py",
        "logger=disabled",
        "device=cpu",
        "progress=false",
        "num_threads=1",
        "iql.hidden=16",
        "iql.batch_size=8",
        "data.val_fraction=0.25",
        "steps=4",
        f"env={antmaze_umaze}",
        "iql=antmaze",
        f"run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = load_bundle(run_dir)
    assert bundle["config"]["env"]["name"] == "antmaze-umaze" and bundle["trainer"]["step"] == 4
    assert bundle["config"]["iql"]["reward_shift"] == -1.0
    model = IQLModel.load(run_dir / "checkpoints" / "last.safetensors")
    assert model.config.reward_shift == -1.0
    assert model.q_value(np.zeros((2, 27)), np.zeros((2, 8))).shape == (2,)
