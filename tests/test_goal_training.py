"""Goal-conditioned runs end to end on a tiny PointMaze dataset: training with hindsight goals, the
goal discretiser in the bundle, bit-exact resume, planning toward the env's goal with success
counted from the env's info, the maze config files, and one-line errors for goals that cannot be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import ttrl.training.pipeline as training_pipeline
from ttrl.checkpoint import load_bundle
from ttrl.config import compose_config, validate_train_config
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.evaluation import (
    evaluate,
    evaluate_training_run,
    evaluation_spec,
    load_run,
    run_planning,
)
from ttrl.evaluation.rollout import check_spaces, make_goal_env
from ttrl.evaluation.scores import EpisodeResult, aggregate
from ttrl.making.maze import make_maze_dataset
from ttrl.planning import BeamPlanner, PlannerConfig
from ttrl.training import train
from ttrl.training.logger import read_metrics
from ttrl.training.pipeline import build_model_config

REPO = Path(__file__).resolve().parents[1]
MAZE = "pointmaze-umaze"
# A tiny model on 4-transition windows (so the planner's 4-transition window fits), seconds on a CPU.
TINY = [
    f"env={MAZE}",
    "model=tiny",
    "logger=disabled",
    "device=cpu",
    "trainer.batch_size=8",
    "trainer.log_interval=2",
    "trainer.eval_interval=4",
    "trainer.val_batches=2",
    "trainer.progress=false",
    "data.val_fraction=0.25",
    "data.sequence_length=4",
    "planner.window_transitions=4",
    "controller.context_transitions=2",
]
# A short, cheap search for the planning tests.
SMALL_PLANNER = {"beam_width": 2, "horizon": 2}
G = 2  # PointMaze goals are (x, y)

pytestmark = pytest.mark.filterwarnings("ignore:quantile discretizer:UserWarning")


def goal_cfg(*overrides: str):
    return compose_config(overrides=[*TINY, *overrides])


def make_tiny_maze() -> None:
    """600 steps of the noisy waypoint controller: 6 episodes of 100 steps."""
    make_maze_dataset(MAZE, n_steps=600, seed=0, progress=False, max_episode_steps=100)


@pytest.fixture(scope="module")
def maze_root(tmp_path_factory):
    """A Minari root holding the tiny maze dataset, set as MINARI_DATASETS_PATH for the module."""
    root = tmp_path_factory.mktemp("goal") / "minari"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        make_tiny_maze()
        yield root


@pytest.fixture(scope="module")
def goal_run(maze_root, tmp_path_factory):
    """A goal-conditioned run (data.goal=future) of 6 steps on the tiny maze."""
    run_dir = tmp_path_factory.mktemp("goal_run") / "run"
    metrics = train(goal_cfg("trainer.max_steps=6"), run_dir)
    assert metrics["step"] == 6 and np.isfinite(metrics["val/loss"])
    return run_dir


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# --- training ---------------------------------------------------------------------------------


def test_a_goal_run_trains_and_its_bundle_holds_the_goal_discretizer(goal_run):
    for which in ("last", "best"):
        bundle = load_bundle(goal_run, which=which)
        assert bundle["config"]["data"]["goal"] == "future"
        # G goal tokens in front of 4 transitions of S + A + 2 = 8 tokens, minus the last token
        assert bundle["model_config"]["goal_dim"] == G
        assert bundle["model_config"]["block_size"] == G + 4 * 8 - 1
        goal_discretizer = Discretizer.from_state_dict(bundle["goal_discretizer"])
        assert goal_discretizer.transition_dim == G and goal_discretizer.n_bins == 100
    inputs = load_run(goal_run)
    assert inputs.model.config.goal_dim == G and inputs.dataset == MAZE
    saved = load_bundle(goal_run)["goal_discretizer"]
    for key, value in inputs.goal_discretizer.state_dict().items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(saved[key]))
    records = read_metrics(goal_run / "metrics.jsonl")
    assert [r["step"] for r in records if "val/loss" in r] == [4, 6]


def test_a_run_without_goals_on_maze_data_has_no_goal_parts(maze_root, tmp_path):
    train(goal_cfg("data.goal=null", "trainer.max_steps=2"), tmp_path)
    bundle = load_bundle(tmp_path)
    assert "goal_discretizer" not in bundle and "goal_dim" not in bundle["model_config"]
    inputs = load_run(tmp_path)
    assert inputs.goal_discretizer is None and inputs.model.config.goal_dim == 0
    # a plain model plans in the maze from the observation field; success is still counted
    results = evaluate(
        inputs.model,
        inputs.discretizer,
        PlannerConfig(**{**bundle["config"]["planner"], **SMALL_PLANNER}),
        evaluation_spec(MAZE),
        n_episodes=1,
        max_episode_steps=3,
        progress=False,
    )
    assert results.episodes[0].length == 3 and results.episodes[0].success is not None


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_bundle(run_dir)["model"]


def logged(run_dir: Path) -> list[tuple[int, str, float]]:
    return [
        (r["step"], key, value)
        for r in read_metrics(run_dir / "metrics.jsonl")
        for key, value in r.items()
        if key.startswith(("train/loss", "val/"))
    ]


def test_an_interrupted_goal_run_resumes_bit_exactly(maze_root, tmp_path, monkeypatch):
    cfg = goal_cfg("trainer.max_steps=8", "trainer.save_interval=1000")
    whole = train(cfg, tmp_path / "whole")

    def sigterm_at_step_3(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train(cfg, tmp_path / "split", on_step=sigterm_at_step_3)
    assert first["signal"] == signal.SIGTERM and first["step"] == 3

    def refit(*args, **kwargs):
        raise AssertionError("a resumed run rebuilds its saved goal discretiser")

    monkeypatch.setattr(training_pipeline, "fit_goal_discretizer", refit)
    second = train(cfg, tmp_path / "split")
    assert second["step"] == 8 and second["signal"] is None
    # the same weights, losses and goal bins as the run that was never stopped
    expected, resumed = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert expected.keys() == resumed.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, msg=key)
    assert logged(tmp_path / "split") == logged(tmp_path / "whole")
    assert second["val/loss"] == whole["val/loss"]
    goals = [load_bundle(tmp_path / run)["goal_discretizer"] for run in ("whole", "split")]
    np.testing.assert_array_equal(goals[0]["thresholds"], goals[1]["thresholds"])
    # the goal relabelling gives the weights their meaning: it cannot change on resume
    with pytest.raises(TtrlError, match=r"cannot resume .*data.goal 'future' -> 'final'") as info:
        train(goal_cfg("trainer.max_steps=9", "data.goal=final"), tmp_path / "split")
    one_line(info)


# --- planning ---------------------------------------------------------------------------------


def plan_config(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(
        "plan",
        overrides=[
            f"run_dir={run_dir}",
            "n_episodes=2",
            "max_episode_steps=10",
            "progress=false",
            "device=cpu",
            "name=goal",
            *overrides,
        ],
    )
    return OmegaConf.to_container(cfg, resolve=True)


def test_run_planning_plans_a_goal_run_end_to_end(goal_run):
    out_dir = goal_run / "plan" / "goal"
    planner = {**SMALL_PLANNER, "objective": "likelihood"}
    results = run_planning(plan_config(goal_run), out_dir, planner_overrides=planner)
    assert len(results.episodes) == 2
    for episode in results.episodes:  # an episode ends at its first success or at the limit
        assert episode.length == (episode.steps_to_goal if episode.success else 10)
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["config"]["planner"]["objective"] == "likelihood"
    for row, episode in zip(saved["episodes"], results.episodes, strict=True):
        assert row["success"] == episode.success and isinstance(row["success"], bool)
        assert row["steps_to_goal"] == episode.steps_to_goal
        # the episodic task ends at success (continuing_task=False), else at the time limit
        assert row["terminated"] == row["success"] and row["truncated"] != row["success"]
    aggregates = saved["aggregates"]
    assert aggregates["success_rate"] == np.mean([e.success for e in results.episodes])
    assert "success_rate_se" in aggregates and aggregates["normalized_score_mean"] is None
    assert "success" in results.summary()
    # the finished episodes are read back from disk with their success
    again = run_planning(plan_config(goal_run), out_dir, planner_overrides=planner)
    assert [e.success for e in again.episodes] == [e.success for e in results.episodes]


def test_goal_episodes_keep_their_paths_and_the_maze_picture_is_drawn(goal_run):
    out_dir = goal_run / "plan" / "paths"
    overrides = {
        "planner": {**SMALL_PLANNER, "objective": "likelihood"},
        "controller": {"plan_freq": 2},
    }
    results = run_planning(plan_config(goal_run, "name=paths"), out_dir, overrides=overrides)
    inputs = load_run(goal_run)
    for episode in results.episodes:
        observations = np.asarray(episode.observations)
        assert observations.shape == (episode.length + 1, 4)  # the reset one, then one per step
        env = make_goal_env(evaluation_spec(MAZE).env_id)
        first = env.reset(seed=episode.seed)[0]
        env.close()
        np.testing.assert_allclose(observations[0], first["observation"], atol=1e-4)
        np.testing.assert_allclose(episode.goal, first["desired_goal"], atol=1e-4)
        assert episode.plan_steps == list(range(0, episode.length, 2))  # a plan every 2 steps
        for step, planned in zip(episode.plan_steps, episode.planned_observations, strict=True):
            planned = np.asarray(planned)
            assert planned.shape == (SMALL_PLANNER["horizon"], 4)
            # a plan starts from the observation it was made from, as its tokens hold it (the
            # recorded path is rounded to 1e-4, so that observation's bin is one of two at an edge)
            token = inputs.discretizer.encode(planned[0], slice(0, 4))
            low, high = (
                inputs.discretizer.encode(observations[step] + d, slice(0, 4))
                for d in (-1e-4, 1e-4)
            )
            assert ((low <= token) & (token <= high)).all()
    picture = out_dir / "paths.png"
    assert picture.is_file() and picture.stat().st_size > 5_000
    (out_dir / "paths.png").unlink()
    from ttrl.evaluation.paths import main as draw_paths

    draw_paths([str(out_dir), "--episodes", "1"])  # drawn again from the episode files
    assert picture.is_file()


def test_a_goal_run_plans_after_training_as_its_evaluate_section_says(goal_run):
    config = load_bundle(goal_run)["config"]
    config["evaluate"].update(n_episodes=1, max_episode_steps=3, name="after")
    config["planner"].update(SMALL_PLANNER)
    results = evaluate_training_run(config, goal_run, step=6)
    assert results is not None and results.episodes[0].success is not None
    saved = json.loads((goal_run / "plan" / "after" / "results.json").read_text())
    assert "success_rate" in saved["aggregates"]


def test_maze_envs_need_no_data_on_disk_to_plan_in(minari_root):
    spec = evaluation_spec("pointmaze-medium-dense")
    assert spec.env_id == "PointMaze_MediumDense-v3" and spec.minari_id is None
    assert (spec.ref_min_score, spec.ref_max_score) == (None, None)


class ScriptedGoal(gym.Wrapper):
    """A real episodic PointMaze whose goal is scripted: at the ball's start (reached at the first
    step), or far away and moved after ``move_after`` steps, as the continuing task moves it. It
    records the desired goal it shows after the reset and after every step."""

    def __init__(self, env: gym.Env, at_start: bool, move_after: int | None = None) -> None:
        super().__init__(env)
        self.at_start, self.move_after = at_start, move_after
        self.shown: list[np.ndarray] = []

    def reset(self, **kwargs):
        options = None if self.at_start else {"reset_cell": (1, 1), "goal_cell": (3, 1)}
        obs, info = self.env.reset(seed=kwargs.get("seed"), options=options)
        if self.at_start:
            self.env.unwrapped.goal = obs["achieved_goal"].copy()
            obs = {**obs, "desired_goal": obs["achieved_goal"].copy()}
        self.steps, self.shown = 0, [obs["desired_goal"].copy()]
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == self.move_after:
            maze = self.env.unwrapped.maze
            self.env.unwrapped.goal = maze.cell_rowcol_to_xy(np.array([1, 3])).astype(float)
            obs = {**obs, "desired_goal": self.env.unwrapped.goal.copy()}
        self.shown.append(obs["desired_goal"].copy())
        return obs, reward, terminated, truncated, info


def test_success_is_the_envs_and_the_goal_is_read_again_every_step(goal_run, monkeypatch):
    inputs = load_run(goal_run)
    envs: list[ScriptedGoal] = []

    def factory(env_id: str, max_episode_steps: int | None, render: bool) -> gym.Env:
        first = not envs
        envs.append(ScriptedGoal(make_goal_env(env_id, max_episode_steps), first, move_after=2))
        return envs[-1]

    seen: list[torch.Tensor] = []
    plan = BeamPlanner.plan

    def spy(self, prefix, *args, goals=None, **kwargs):
        seen.append(goals.clone())
        return plan(self, prefix, *args, goals=goals, **kwargs)

    monkeypatch.setattr(BeamPlanner, "plan", spy)
    config = PlannerConfig(**{**load_bundle(goal_run)["config"]["planner"], **SMALL_PLANNER})
    results = evaluate(
        inputs.model,
        inputs.discretizer,
        config,
        evaluation_spec(MAZE),
        n_episodes=2,
        max_episode_steps=4,
        env_factory=factory,
        progress=False,
        goal_discretizer=inputs.goal_discretizer,
    )
    reached, missed = results.episodes
    assert (reached.success, reached.steps_to_goal, reached.length) == (True, 1, 1)
    assert reached.terminated and reached.total_return == 1.0
    assert (missed.success, missed.steps_to_goal, missed.length) == (False, None, 4)
    assert missed.truncated and not missed.terminated
    aggregates = results.aggregates
    assert (aggregates["success_rate"], aggregates["success_rate_se"]) == (0.5, 0.5)
    assert aggregates["n_success"] == 1 and aggregates["steps_to_goal_mean"] == 1.0
    # every plan went toward the goal the env showed last, encoded with the run's goal bins
    encode = inputs.goal_discretizer.encode
    assert torch.equal(seen[0], torch.as_tensor(encode(np.stack([e.shown[0] for e in envs]))))
    toward = torch.stack([goals[-1] for goals in seen])  # the second episode's row
    assert torch.equal(toward, torch.as_tensor(encode(np.stack(envs[1].shown[:4]))))
    assert not torch.equal(toward[1], toward[2])  # the goal moved after step 2: so did the plan's


def test_locomotion_results_have_no_success_fields():
    episode = EpisodeResult(0, 0, 1.0, 3, False, True, 10.0)
    assert "success" not in episode.row() and "steps_to_goal" not in episode.row()
    assert episode.observations == [] and episode.planned_observations == []
    assert not any(key.startswith(("success", "steps_to")) for key in aggregate([episode]))


def test_plan_script_plans_a_goal_run(goal_run, maze_root):
    done = subprocess.run(
        [
            sys.executable,
            "scripts/plan.py",
            f"run_dir={goal_run}",
            "n_episodes=2",
            "max_episode_steps=50",
            "planner.objective=likelihood",
            "planner.beam_width=2",
            "planner.horizon=2",
            "progress=false",
            "device=cpu",
            "name=script",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MINARI_DATASETS_PATH": str(maze_root), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{MAZE} (PointMaze_UMaze-v3): 2 episodes, success" in done.stdout
    saved = json.loads((goal_run / "plan" / "script" / "results.json").read_text())
    assert len(saved["episodes"]) == 2 and "success_rate" in saved["aggregates"]
    assert all(0 < row["length"] <= 50 for row in saved["episodes"])


# --- bad input --------------------------------------------------------------------------------


def test_goals_on_a_dataset_without_goal_fields_are_one_line(tiny_dataset, tmp_path):
    cfg = goal_cfg(f"env.name={tiny_dataset}", "trainer.max_steps=1")
    with pytest.raises(TtrlError) as info:
        train(cfg, tmp_path)
    message = one_line(info)
    assert message.startswith("data.goal=future trains a goal-conditioned model, but ")
    assert "no 'achieved_goal' field" in message and "data.goal=null" in message
    with pytest.raises(TtrlError, match=r"data.goal='nearest' is not one of null, future"):
        validate_train_config(goal_cfg("data.goal=nearest"))


def test_a_goal_run_planned_without_goals_is_one_line(goal_run):
    with pytest.raises(TtrlError) as info:  # HalfCheetah's flat observations hold no goal
        run_planning(
            plan_config(goal_run, "env=halfcheetah-medium", "name=nogoal"),
            goal_run / "plan" / "nogoal",
            planner_overrides=SMALL_PLANNER,
        )
    message = one_line(info)
    assert "goal-conditioned (2 goal tokens) but environment HalfCheetah-v5 gives no" in message
    # weights alone (checkpoint=) lack the goal discretiser: the run dir is needed
    with pytest.raises(TtrlError, match=r"goal-conditioned model .* run_dir=<its training run>"):
        run_planning(
            plan_config(goal_run, "run_dir=null", f"checkpoint={goal_run}", f"env={MAZE}"),
            goal_run / "plan" / "weights",
        )
    inputs = load_run(goal_run)
    with pytest.raises(TtrlError, match="pass goal_discretizer=") as info:
        evaluate(
            inputs.model,
            inputs.discretizer,
            PlannerConfig(**SMALL_PLANNER, window_transitions=4),
            evaluation_spec(MAZE),
            n_episodes=1,
            progress=False,
        )
    one_line(info)


# --- config files -----------------------------------------------------------------------------


@pytest.mark.parametrize("maze", ["umaze", "medium", "large", "fourrooms"])
def test_maze_env_files_train_goal_conditioned_and_plan_by_likelihood(maze):
    cfg = compose_config(overrides=[f"env=pointmaze-{maze}"])
    validate_train_config(cfg)
    assert cfg.env.name == f"pointmaze-{maze}" and cfg.data.goal == "future"
    planner = PlannerConfig(**OmegaConf.to_container(cfg.planner))
    assert planner.objective == "likelihood"
    model = build_model_config(cfg.model, 4, 2, 100, cfg.data.sequence_length, goal_dim=G)
    planner.check_fits_model(model.block_size, model.layout)


def test_the_cpu_goal_experiment_composes_and_its_planner_fits_its_model():
    cfg = compose_config(overrides=["experiment=cpu/pointmaze-umaze", "run_dir=unused"])
    validate_train_config(cfg)
    assert (cfg.env.name, cfg.data.goal, cfg.planner.objective) == (MAZE, "future", "likelihood")
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.data.sequence_length) == (2, 64, 4)
    assert cfg.evaluate.n_episodes == 5 and "cpu" in cfg.logger.tags
    planner = PlannerConfig(**OmegaConf.to_container(cfg.planner))
    model = build_model_config(cfg.model, 4, 2, 100, cfg.data.sequence_length, goal_dim=G)
    planner.check_fits_model(model.block_size, model.layout)
    assert planner.window_transitions == 4


# --- the goal in the observation (data.observe_goal) -------------------------------------------


def brute_force_observed_goals(transitions, radius=0.45):
    """observe_desired_goal written out step by step: the goal pursued at each step (one step late
    after a success, gymnasium-robotics' order), and the steps that reached it."""
    from ttrl.data.preprocess import episode_bounds

    achieved, desired = transitions.goal("achieved_goal"), transitions.goal("desired_goal")
    pursued, reached = desired.copy(), np.zeros(len(desired), dtype=bool)
    for start, length in zip(*episode_bounds(transitions), strict=True):
        for t in range(start, start + length - 1):
            just_reached = t > start and np.linalg.norm(achieved[t] - desired[t - 1]) <= radius
            if just_reached and (desired[t + 1] != desired[t]).any():
                pursued[t] = desired[t + 1]
        for t in range(start, start + length - 1):
            reached[t] = np.linalg.norm(achieved[t + 1] - pursued[t]) <= radius
    return pursued, reached


def test_observed_goals_and_reached_terminals_match_a_brute_force_loop(maze_root):
    from ttrl.data import load_transitions, resolve_dataset
    from ttrl.data.goals import observe_desired_goal

    transitions = load_transitions(resolve_dataset(MAZE))
    observed = observe_desired_goal(transitions)
    pursued, reached = brute_force_observed_goals(transitions)
    assert reached.sum() >= 2  # the tiny dataset reaches some goals
    np.testing.assert_array_equal(observed.observations[:, :4], transitions.observations)
    np.testing.assert_array_equal(observed.observations[:, 4:], pursued)
    np.testing.assert_array_equal(observed.terminals, transitions.terminals | reached)
    np.testing.assert_array_equal(observed.rewards[reached], 1.0)  # sparse: a success pays 1
    assert not (observed.terminals & observed.timeouts).any()


def test_a_run_that_observes_its_goal_plans_by_return_in_the_goal_env(maze_root, tmp_path):
    run_dir = tmp_path / "observe"
    train(goal_cfg("trainer.max_steps=4", "data.goal=null", "data.observe_goal=true"), run_dir)
    bundle = load_bundle(run_dir)
    assert (
        bundle["model_config"]["observation_dim"] == 4 + G
        and bundle["model_config"].get("goal_dim", 0) == 0
    )
    planner = {**SMALL_PLANNER, "objective": "return"}
    results = run_planning(
        plan_config(run_dir), run_dir / "plan" / "goal", planner_overrides=planner
    )
    for episode in results.episodes:
        assert episode.success is not None
        observations = np.asarray(episode.observations)
        assert observations.shape[1] == 4 + G  # the env's observation, then its goal
        np.testing.assert_allclose(
            observations[:, 4:], episode.goal * np.ones((len(observations), 1)), atol=1e-4
        )
    # without the goal field in the env there is nothing to append: one line
    with pytest.raises(TtrlError) as info:
        env = gym.make("Hopper-v5")
        try:
            check_spaces(env, "Hopper-v5", 11, 3, observe_goal=True)
        finally:
            env.close()
    assert "data.observe_goal" in one_line(info)


def test_tt_guided_by_an_iql_run_of_the_same_observed_goal_data_plans_in_the_maze(
    maze_root, tmp_path
):
    import ttrl.baselines.runner  # noqa: F401  (registers train_baseline_schema)
    from ttrl.baselines.runner import train_baseline

    tt_run = tmp_path / "tt"
    train(goal_cfg("trainer.max_steps=4", "data.goal=null", "data.observe_goal=true"), tt_run)
    q_run = tmp_path / "iql"
    iql_overrides = [
        f"env={MAZE}",
        "algo=iql",
        "iql=pointmaze",
        "data.goal=null",
        "data.observe_goal=true",
        "steps=20",
        "iql.hidden=16",
        "iql.batch_size=32",
        "logger=disabled",
        "device=cpu",
        "progress=false",
        "evaluate.n_episodes=2",
        "evaluate.max_episode_steps=5",
    ]
    metrics = train_baseline(compose_config("train_baseline", iql_overrides), q_run)
    iql_results = metrics["results"]
    assert all(e.success is not None and e.length <= 5 for e in iql_results.episodes)
    assert load_bundle(q_run)["config"]["iql"]["reward_shift"] == 0.0
    planner = {**SMALL_PLANNER, "objective": "q", "q_run": str(q_run)}
    results = run_planning(plan_config(tt_run, "name=q"), tt_run / "plan" / "q", planner)
    assert all(e.success is not None for e in results.episodes)
    saved = json.loads((tt_run / "plan" / "q" / "results.json").read_text())
    assert saved["config"]["planner"]["q_run"] == str(q_run)
    # a Q run that does not observe the goal does not fit the transformer's observations
    plain_q = tmp_path / "plain"
    train_baseline(
        compose_config(
            "train_baseline",
            [o for o in iql_overrides if "observe_goal" not in o],
        ),
        plain_q,
    )
    with pytest.raises(TtrlError) as info:
        run_planning(
            plan_config(tt_run, "name=plain"),
            tt_run / "plan" / "plain",
            {**planner, "q_run": str(plain_q)},
        )
    assert "observations of 4" in one_line(info)
