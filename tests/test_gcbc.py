"""Goal-conditioned baselines on tiny PointMaze datasets: hindsight goals against a brute-force loop,
algo=gcbc training and its exact resume, goal-aware policy rollouts (success from the env's info),
algo=waypoint through the runner, and the one-line refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

from ttrl.baselines.data import load_baseline_data, with_hindsight_goals
from ttrl.baselines.evaluate import EpisodePolicies, evaluate_policy
from ttrl.baselines.gcbc import GCBCPolicy
from ttrl.baselines.runner import train_baseline
from ttrl.baselines.waypoint import WaypointModel
from ttrl.checkpoint import load_bundle
from ttrl.config import compose_config
from ttrl.data import load_transitions
from ttrl.data.goals import RELABELLINGS, VALIDATION_GOAL_SEED
from ttrl.data.preprocess import episode_bounds
from ttrl.errors import TtrlError
from ttrl.evaluation.loading import evaluation_spec
from ttrl.evaluation.rollout import make_goal_env
from ttrl.making.maze import WaypointController, make_maze_dataset
from ttrl.training.logger import read_metrics

torch.set_num_threads(1)  # the test machine's cores are shared with training jobs

REPO = Path(__file__).resolve().parents[1]
MAZE = "pointmaze-umaze"
UMAZE_ENV = "PointMaze_UMaze-v3"
# a tiny budget: a second or two of training on one CPU core
TINY = [
    "logger=disabled",
    "device=cpu",
    "progress=false",
    "num_threads=1",
    "gcbc.hidden=32",
    "gcbc.batch_size=64",
    "log_interval=50",
    "eval_interval=100",
    "data.val_fraction=0.2",
]


@pytest.fixture
def tiny_maze(minari_root) -> str:
    """``pointmaze-umaze`` made locally: 20 episodes of 100 steps of the noisy controller."""
    make_maze_dataset(MAZE, n_steps=2000, seed=0, progress=False, max_episode_steps=100)
    return MAZE


def tiny_cfg(*overrides: str):
    return compose_config("train_baseline", [*TINY, f"env={MAZE}", *overrides])


def logged(run_dir: Path) -> list[tuple[int, str, float]]:
    """Every logged loss and evaluation number (not the timing, which differs between runs)."""
    return [
        (r["step"], key, value)
        for r in read_metrics(run_dir / "metrics.jsonl")
        for key, value in r.items()
        if key.startswith(("train/loss", "val/", "eval/"))
    ]


# ------------------------------------------------------------------------------ hindsight goals
def split_rows(dataset: str, val_episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dataset rows of the training and of the validation split, from the raw episodes."""
    _, lengths = episode_bounds(load_transitions(dataset))
    episode = np.repeat(np.arange(len(lengths)), lengths)
    held_out = np.isin(episode, val_episodes)
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def brute_force_goals(dataset: str, rows: np.ndarray, relabel: str, uniforms) -> np.ndarray:
    """The goal of each dataset row in ``rows``, one row at a time from the raw episodes."""
    transitions = load_transitions(dataset)
    starts, lengths = episode_bounds(transitions)
    goals = []
    for k, row in enumerate(rows):
        episode = int(np.searchsorted(starts, row, side="right")) - 1
        last = starts[episode] + lengths[episode] - 1
        if relabel == "desired":
            goals.append(transitions.goal("desired_goal")[row])
            continue
        if relabel == "final":
            step = last
        else:  # uniform over the later steps; the last step has none and keeps its own
            later = [t for t in range(row + 1, last + 1)] or [row]
            step = later[int(np.floor(float(uniforms[k]) * len(later)))]
        goals.append(transitions.goal("achieved_goal")[step])
    return np.stack(goals)


@pytest.mark.parametrize("relabel", RELABELLINGS)
def test_hindsight_goals_match_a_brute_force_loop(tiny_maze, relabel):
    data = load_baseline_data(tiny_maze, val_fraction=0.2, seed=1, goal=relabel)
    train_rows, val_rows = split_rows(tiny_maze, data.val_episodes)
    assert data.goal == relabel and data.goal_dim == 2 and data.env_id == UMAZE_ENV
    assert len(data.val_episodes) == 4 and len(data.val) == 400  # whole 100-step episodes
    transitions = load_transitions(tiny_maze)
    np.testing.assert_array_equal(
        data.train.achieved_goals.numpy(), transitions.goal("achieved_goal")[train_rows]
    )
    # a minibatch of training rows (repeats, any order), relabelled from the whole split
    generator = torch.Generator().manual_seed(5)
    indices = torch.randint(len(data.train), (300,), generator=torch.Generator().manual_seed(2))
    batch = with_hindsight_goals(data.train.take(indices), data.train, relabel, generator)
    uniforms = torch.rand(300, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = brute_force_goals(tiny_maze, train_rows[indices.numpy()], relabel, uniforms)
    np.testing.assert_array_equal(batch.goals.numpy(), expected)
    np.testing.assert_array_equal(batch.observations.numpy(), data.train.observations[indices])
    # validation: fixed goals, from VALIDATION_GOAL_SEED, the same on every load
    uniforms = torch.rand(
        len(val_rows),
        generator=torch.Generator().manual_seed(VALIDATION_GOAL_SEED),
        dtype=torch.float64,
    )
    expected = brute_force_goals(tiny_maze, val_rows, relabel, uniforms)
    np.testing.assert_array_equal(data.val.goals.numpy(), expected)
    again = load_baseline_data(tiny_maze, val_fraction=0.2, seed=1, goal=relabel)
    assert torch.equal(again.val.goals, data.val.goals)
    for chunk, start in zip(data.val.chunks(64), range(0, 400, 64), strict=True):
        assert torch.equal(chunk.goals, data.val.goals[start : start + 64])
    assert data.train.goals is None  # training rows get theirs per minibatch


def test_future_goals_are_redrawn_later_steps_of_the_episode(tiny_maze):
    data = load_baseline_data(tiny_maze, val_fraction=0.2, goal="future")
    train = data.train
    generator = torch.Generator().manual_seed(0)
    row = torch.tensor([10])  # step 10 of the first training episode (100 steps)
    assert train.episode_last[10].item() == 99
    drawn = torch.cat(
        [
            with_hindsight_goals(train.take(row), train, "future", generator).goals
            for _ in range(400)
        ]
    )
    # every draw is a later achieved goal of the same episode, and they differ from draw to draw
    later = train.achieved_goals[11:100]
    matches = (drawn[:, None, :] == later[None]).all(-1)
    assert matches.any(1).all()
    assert len(torch.unique(matches.float().argmax(1))) > 60  # most of the 89 later steps
    last_row = torch.tensor([99])  # no later step: its own achieved goal
    goal = with_hindsight_goals(train.take(last_row), train, "future", generator).goals
    assert torch.equal(goal[0], train.achieved_goals[99])
    with pytest.raises(TtrlError, match="hold no goal fields"):
        plain = load_baseline_data(tiny_maze, val_fraction=0.2)
        with_hindsight_goals(plain.train.take(row), plain.train, "future", generator)


# ------------------------------------------------------------------------------------- training
def test_gcbc_trains_its_loss_falls_and_it_uses_the_goal(tiny_maze, tmp_path):
    metrics = train_baseline(tiny_cfg("algo=gcbc", "steps=300", "gcbc.lr=1e-3"), tmp_path)
    assert metrics["step"] == 300 and metrics["results"] is None
    records = read_metrics(tmp_path / "metrics.jsonl")
    train_loss = [r["train/loss"] for r in records if "train/loss" in r]
    val_loss = [r["val/loss"] for r in records if "val/loss" in r]
    assert len(train_loss) == 6 and train_loss[-1] < 0.8 * train_loss[0]
    assert len(val_loss) == 3 and val_loss[-1] < val_loss[0]
    # the checkpoint is a GCBCPolicy bundle; with the validation rows' goals shuffled it does worse
    policy = GCBCPolicy.load(tmp_path / "checkpoints" / "last.safetensors")
    assert policy.goal_dim == 2 and policy.config.hidden == 32
    assert load_bundle(tmp_path)["baseline"] == "GCBCPolicy"
    val = load_baseline_data(tiny_maze, val_fraction=0.2, goal="future").val
    shuffled = val.goals[torch.randperm(len(val), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        own = policy.loss(val.observations, val.goals, val.actions).item()
        other = policy.loss(val.observations, shuffled, val.actions).item()
    assert own == pytest.approx(metrics["val/loss"], rel=1e-5)
    assert other > own + 0.005
    actions = policy.act(val.observations[:5].numpy(), val.goals[:5].numpy())
    assert actions.shape == (5, 2) and actions.dtype == np.float32
    assert policy.act(val.observations[0], val.goals[0]).shape == (2,)
    with pytest.raises(TtrlError, match=r"goals must be \[B, 2\]"):
        policy.act(val.observations[:5], val.goals[:4])


def test_interrupted_and_resumed_gcbc_equals_an_uninterrupted_run(tiny_maze, tmp_path):
    cfg = tiny_cfg("algo=gcbc", "steps=16", "log_interval=3", "eval_interval=5")
    whole = train_baseline(cfg, tmp_path / "whole")
    assert whole["step"] == 16 and whole["signal"] is None

    def sigterm_at_step_7(step: int) -> None:
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_baseline(cfg, tmp_path / "split", on_step=sigterm_at_step_7)
    assert first["signal"] == signal.SIGTERM and first["step"] == 7
    second = train_baseline(cfg, tmp_path / "split")
    assert second["step"] == 16 and second["val/loss"] == whole["val/loss"]
    assert logged(tmp_path / "split") == logged(tmp_path / "whole")
    expected, resumed = load_bundle(tmp_path / "whole"), load_bundle(tmp_path / "split")
    for key, value in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    # the goals matter to the end weights: another relabelling trains other weights
    final = train_baseline(tiny_cfg("algo=gcbc", "steps=16", "data.goal=final"), tmp_path / "f")
    assert final["val/loss"] != whole["val/loss"]
    weights = load_bundle(tmp_path / "f")["model"]["policy.net.0.weight"]
    assert not torch.equal(weights, expected["model"]["policy.net.0.weight"])


# ----------------------------------------------------------------------------------- evaluation
class GoalScript(gymnasium.Wrapper):
    """Reports ``info["success"]`` at step 3 only (never terminating) and moves the desired goal
    by +1 in x at every step, so a test sees where success and goals come from."""

    def reset(self, **kwargs):
        self.steps = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        observation, reward, _, truncated, info = self.env.step(action)
        self.steps += 1
        self.env.unwrapped.goal = self.env.unwrapped.goal + np.array([1.0, 0.0])
        observation = dict(observation, desired_goal=self.env.unwrapped.goal.copy())
        return observation, reward, False, truncated, {**info, "success": self.steps == 3}


def test_goal_policies_see_the_current_goal_and_success_comes_from_the_envs_info(tiny_maze):
    spec = evaluation_spec(tiny_maze)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def still(observations, goals):  # a goal policy that stands still and records what it sees
        seen.append((observations.copy(), goals.copy()))
        return np.zeros((len(observations), 2), dtype=np.float32)

    def factory(env_id, max_episode_steps, render):
        return GoalScript(make_goal_env(env_id, max_episode_steps))

    results = evaluate_policy(
        still,
        spec,
        4,
        2,
        n_episodes=2,
        seed=4,
        max_episode_steps=6,
        env_factory=factory,
        progress=False,
        goal_dim=2,
    )
    assert [(e.seed, e.length, e.success, e.steps_to_goal) for e in results.episodes] == [
        (4, 6, True, 3),
        (5, 6, True, 3),
    ]
    assert len(seen) == 6 and seen[0][0].shape == (2, 4) and seen[0][1].shape == (2, 2)
    env = make_goal_env(UMAZE_ENV)  # episode 0's own reset: its observation and goal
    observation, _ = env.reset(seed=4)
    env.close()
    np.testing.assert_array_equal(seen[0][0][0], observation["observation"].astype(np.float32))
    for step, (_, goals) in enumerate(seen):  # re-read every step: moved by +1 each time
        np.testing.assert_allclose(goals[0], observation["desired_goal"] + [step, 0], rtol=1e-6)
    aggregates = results.aggregates
    assert aggregates["success_rate"] == 1.0 and aggregates["steps_to_goal_mean"] == 3.0
    # a plain policy in the same env gets the observation field and is scored by success too
    plain = evaluate_policy(
        lambda obs: np.zeros((len(obs), obs.shape[1] - 2), np.float32),  # [B, 4] in, [B, 2] out
        spec,
        4,
        2,
        n_episodes=1,
        max_episode_steps=4,
        env_factory=factory,
        progress=False,
    )
    assert plain.episodes[0].success is True and plain.episodes[0].length == 4


def test_waypoint_reaches_most_umaze_goals_through_the_runner(tiny_maze, tmp_path):
    cfg = tiny_cfg("algo=waypoint", "evaluate.n_episodes=10", "evaluate.max_episode_steps=100")
    metrics = train_baseline(cfg, tmp_path)
    assert metrics["step"] == 0 and "val/loss" not in metrics
    results = metrics["results"]
    assert results.complete and [e.seed for e in results.episodes] == list(range(10))
    written = json.loads((tmp_path / "plan" / "final" / "results.json").read_text())
    assert written["agent"] == "waypoint" and written["dataset"] == MAZE
    aggregates = written["aggregates"]
    assert aggregates["success_rate"] >= 0.7 and "success_rate_se" in aggregates
    assert aggregates["n_terminated"] == aggregates["n_success"]  # episodic: the goal ends it
    assert written["config"]["evaluation"]["algo_config"] == {"noise": 0.0, "steps": 0, "seed": 0}
    # the same episodes by hand: the env's own success after each step, one controller each
    for episode in written["episodes"]:
        env = make_goal_env(UMAZE_ENV, 100)
        observation, _ = env.reset(seed=episode["seed"])
        controller = WaypointController("umaze", seed=episode["seed"])
        reached = None
        for step in range(1, 101):
            observation, _, terminated, truncated, info = env.step(controller.act(observation))
            if info["success"] and reached is None:
                reached = step
            if terminated or truncated:
                break
        env.close()
        assert (episode["success"], episode["steps_to_goal"]) == (reached is not None, reached)
        assert episode["length"] == step
    model = WaypointModel.load(tmp_path / "checkpoints" / "last.safetensors")
    assert model.maze == "umaze" and not list(model.parameters())
    # started again: nothing to train, nothing evaluated twice
    assert train_baseline(cfg, tmp_path)["results"] is None
    # with the datasets' own action noise the same episodes go otherwise
    noisy = train_baseline(
        tiny_cfg(
            "algo=waypoint",
            "waypoint.noise=0.5",
            "evaluate.n_episodes=10",
            "evaluate.max_episode_steps=100",
        ),
        tmp_path / "noisy",
    )
    lengths = [e.length for e in results.episodes]
    assert [e.length for e in noisy["results"].episodes] != lengths


def test_episode_policies_are_made_per_episode_with_its_seed(tiny_maze):
    made = []

    def make(seed):
        made.append(seed)
        controller = WaypointController("umaze", seed=seed)
        return controller.act

    results = evaluate_policy(
        EpisodePolicies(make),
        evaluation_spec(tiny_maze),
        4,
        2,
        n_episodes=3,
        seed=7,
        max_episode_steps=20,
        progress=False,
        goal_dim=2,
    )
    assert made == [7, 8, 9] and [e.seed for e in results.episodes] == [7, 8, 9]


# --------------------------------------------------------------------------------- bad inputs
def one_line(call) -> str:
    with pytest.raises(TtrlError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_bad_goal_settings_are_one_line(tiny_maze, tiny_hopper, tmp_path):
    run = tmp_path / "run"
    hopper = [f"env.name={tiny_hopper}"]
    cases = [
        (["algo=gcbc", "data.goal=null"], "algo=gcbc trains on hindsight goals: set data.goal"),
        (["algo=gcbc", "data.goal=sideways"], "data.goal='sideways' is not one of future"),
        (["algo=bc"], "bc is not goal-conditioned: use algo=gcbc or data.goal=null"),
        (["algo=iql"], "iql is not goal-conditioned: use algo=gcbc or data.goal=null"),
        (["algo=gcbc", *hopper, "data.goal=future"], "has no 'achieved_goal' field"),
        (["algo=waypoint", *hopper, "data.goal=null"], "algo=waypoint is the PointMaze"),
        (["algo=waypoint", "steps=5"], "steps=5: waypoint trains nothing"),
        (["algo=gcbc", "steps=0"], "steps=0 must be > 0"),
    ]
    for overrides, expected in cases:
        message = one_line(lambda overrides=overrides: train_baseline(tiny_cfg(*overrides), run))
        assert expected in message, (overrides, message)
    assert "hopper-random" in one_line(
        lambda: train_baseline(tiny_cfg("algo=waypoint", *hopper, "data.goal=null"), run)
    )
    assert not (run / "checkpoints").exists()
    # a goal policy in an env without goals
    goal_policy = lambda obs, goals: np.zeros((len(obs), 3), np.float32)  # noqa: E731
    spec = evaluation_spec(tiny_hopper)
    message = one_line(
        lambda: evaluate_policy(goal_policy, spec, 11, 3, n_episodes=1, goal_dim=2, progress=False)
    )
    assert "gives no goal" in message and "Hopper-v5" in message
    # plain bc on the maze, with data.goal=null, trains and evaluates by success
    plain = train_baseline(
        tiny_cfg(
            "algo=bc",
            "data.goal=null",
            "steps=5",
            "bc.hidden=8",
            "evaluate.n_episodes=2",
            "evaluate.max_episode_steps=5",
        ),
        tmp_path / "bc",
    )
    assert "success_rate" in plain["results"].aggregates


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/train_baseline.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_script_trains_gcbc_on_the_maze_env_file_and_refuses_bc_there(tiny_maze, tmp_path):
    run_dir = tmp_path / "gcbc"
    done = run_script(
        *TINY,
        "algo=gcbc",
        f"env={MAZE}",
        "steps=20",
        "evaluate.n_episodes=2",
        "evaluate.max_episode_steps=10",
        f"run_dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gcbc: pointmaze-umaze (PointMaze_UMaze-v3): 2 episodes, success" in done.stdout
    written = json.loads((run_dir / "plan" / "final" / "results.json").read_text())
    assert written["agent"] == "gcbc" and "success_rate" in written["aggregates"]
    assert (
        written["config"]["train_config"]["data"]["goal"] == "future"
    )  # from configs/env/pointmaze-umaze
    refused = run_script("logger=disabled", f"env={MAZE}", f"run_dir={tmp_path / 'bc'}")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
    assert lines[0] == "error: bc is not goal-conditioned: use algo=gcbc or data.goal=null"
