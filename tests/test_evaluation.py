"""Evaluation: normalised scores, mean ± standard error, rollouts planned in one batch with drop-out."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ttrl.checkpoint import save_bundle
from ttrl.data import load_transitions, resolve_dataset
from ttrl.data.preprocess import preprocess
from ttrl.discretization import Discretizer
from ttrl.evaluation import (
    EpisodeResult,
    aggregate,
    evaluate,
    evaluation_spec,
    make_env,
    mean_and_standard_error,
    realised_values,
)
from ttrl.evaluation.video import VideoRecorder
from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig
from ttrl.planning import ControllerConfig, PlannerConfig
from ttrl.training.state import checkpoint_path

N_BINS = 20


def tiny_model(observation_dim: int = 17, action_dim: int = 6) -> TrajectoryTransformer:
    """A randomly initialised one-layer model whose block holds five transitions.

    Its heads are made confident and the stop token's logit is pinned at 0, far below the largest
    logit, so like a trained model it (practically) never plans the stop token as an action.
    """
    torch.manual_seed(0)
    transition_dim = observation_dim + action_dim + 2
    config = TrajectoryTransformerConfig(
        vocab_size=N_BINS,
        observation_dim=observation_dim,
        action_dim=action_dim,
        transition_dim=transition_dim,
        block_size=5 * transition_dim - 1,
        n_layer=1,
        n_head=2,
        n_embd=16,
    )
    model = TrajectoryTransformer(config).eval()
    with torch.no_grad():
        model.head.weight.mul_(50.0)
        model.head.weight[:, N_BINS, :] = 0.0
    return model


def fit_discretizer(dataset: str) -> Discretizer:
    """The quantile discretiser of a dataset, fit on its preprocessed rows as training does."""
    return Discretizer.fit(preprocess(load_transitions(resolve_dataset(dataset))).joined, N_BINS)


def save_tiny_run(
    run_dir: Path,
    dataset: str,
    model: TrajectoryTransformer,
    discretizer: Discretizer,
    planner: dict | None = None,
    step: int = 0,
) -> Path:
    """A training run dir as scripts/train.py leaves it: its last checkpoint, with config and trainer."""
    config = {
        "env": {"name": dataset},
        "planner": {**PlannerConfig().__dict__, **(planner or {})},
        "data": {"source": "auto", "discount": 0.99, "termination_penalty": -100.0},
        "logger": {"mode": "disabled", "project": "ttrl", "entity": None, "group": "tiny"},
        "seed": 0,
    }
    return save_bundle(
        checkpoint_path(run_dir, "last"),  # where training writes it, whatever the format
        model_config=model.config.to_dict(),
        model=model.state_dict(),
        discretizer=discretizer.state_dict(),
        config=config,
        trainer={"step": step, "wandb_run_id": None},
    )


# ----------------------------------------------------------------------------- scores by hand


def test_normalized_score_uses_d4rl_references():
    spec = evaluation_spec("halfcheetah-medium")  # no data needed for the references
    assert (spec.env_id, spec.ref_source) == ("HalfCheetah-v5", "D4RL")
    # 100 * (R - (-280.178953)) / (12135.0 - (-280.178953)), worked out by hand:
    # R = 4000: 100 * 4280.178953 / 12415.178953 = 34.47537...
    assert spec.normalized_score(4000.0) == pytest.approx(34.47537, abs=1e-4)
    assert spec.normalized_score(-280.178953) == pytest.approx(0.0)
    assert spec.normalized_score(12135.0) == pytest.approx(100.0)
    hopper = evaluation_spec("hopper-medium-replay")
    # (1617.01 + 20.272305) / (3234.3 + 20.272305) = 1637.282305 / 3254.572305 = 0.5030714...
    assert hopper.normalized_score(1617.01) == pytest.approx(50.30714, abs=1e-4)


def test_mean_and_standard_error_by_hand():
    mean, se = mean_and_standard_error([1.0, 2.0, 3.0, 4.0])
    # sample variance = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; se = sqrt(5/3) / 2
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)
    mean, se = mean_and_standard_error([7.0])
    assert mean == 7.0 and math.isnan(se)


def test_aggregate_reports_standard_error_not_std():
    episodes = [
        EpisodeResult(i, i, ret, 10, False, True, score)
        for i, (ret, score) in enumerate([(10.0, 1.0), (20.0, 2.0), (60.0, 6.0)])
    ]
    agg = aggregate(episodes)
    # returns 10, 20, 60: mean 30, sample std sqrt(((-20)^2 + (-10)^2 + 30^2) / 2) = sqrt(700)
    assert agg["return_mean"] == pytest.approx(30.0)
    assert agg["return_se"] == pytest.approx(math.sqrt(700) / math.sqrt(3))
    assert agg["normalized_score_se"] == pytest.approx(math.sqrt(7) / math.sqrt(3))
    assert agg["n_episodes"] == 3


def test_realised_values_follow_the_training_targets():
    rewards = [1.0, 2.0, 3.0, 4.0]
    gamma = 0.5
    # V_t = sum_{k>=1} gamma^(k-1) r_{t+k}, the last reward replaced by -100 on termination
    expected = [2 + 0.5 * 3 + 0.25 * -100, 3 + 0.5 * -100, -100, 0]
    np.testing.assert_allclose(realised_values(rewards, True, gamma, -100.0), expected)
    np.testing.assert_allclose(realised_values(rewards, False, gamma)[:2], [2 + 1.5 + 1, 3 + 2])


# ----------------------------------------------------------------------------- rollouts


class EndsEarly(gym.Wrapper):
    """Terminates the episode reset with ``seed`` after ``steps`` steps; records executed actions."""

    def __init__(self, env: gym.Env, early_seed: int, steps: int) -> None:
        super().__init__(env)
        self.early_seed, self.steps = early_seed, steps
        self.actions: list[np.ndarray] = []
        self.done = False

    def reset(self, *, seed=None, options=None):
        self.seed_used, self.actions, self.done = seed, [], False
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        assert not self.done, "an episode that ended was stepped again"
        self.actions.append(np.array(action, copy=True))
        observation, reward, terminated, truncated, info = self.env.step(action)
        if self.seed_used == self.early_seed and len(self.actions) == self.steps:
            terminated = True
        self.done = terminated or truncated
        return observation, reward, terminated, truncated, info


@pytest.fixture
def early_envs():
    made: list[EndsEarly] = []

    def factory(env_id, max_episode_steps, render):
        made.append(EndsEarly(make_env(env_id, max_episode_steps, render), early_seed=11, steps=4))
        return made[-1]

    return factory, made


def test_episodes_that_end_early_drop_out_and_the_rest_go_on(tiny_dataset, early_envs):
    factory, envs = early_envs
    discretizer = fit_discretizer(tiny_dataset)
    config = PlannerConfig(horizon=2, beam_width=4)
    results = evaluate(
        tiny_model(),
        discretizer,
        config,
        evaluation_spec(tiny_dataset),
        n_episodes=3,
        seed=10,
        max_episode_steps=9,
        env_factory=factory,
        progress=False,
    )
    by_seed = {e.seed: e for e in results.episodes}
    assert [e.seed for e in results.episodes] == [10, 11, 12]
    assert by_seed[11].length == 4 and by_seed[11].terminated and not by_seed[11].truncated
    assert by_seed[10].length == 9 and by_seed[10].truncated and not by_seed[10].terminated
    assert by_seed[12].length == 9
    midpoints = discretizer.midpoints(slice(17, 23))
    for env, episode in zip(envs, results.episodes, strict=True):
        assert len(env.actions) == episode.length
        assert len(episode.predicted_rewards) == len(episode.predicted_values) == episode.length
        assert episode.total_return == pytest.approx(sum(episode.rewards))
        # every executed action is a planned one: a bin midpoint of each action dimension
        for action in env.actions:
            assert np.isclose(action[None, :], midpoints, atol=1e-5).any(axis=0).all()
    # one planner call per step while any episode runs; the batch shrinks after step 4
    assert results.timing["planner_calls"] == 9
    assert results.timing["decisions"] == 3 * 4 + 2 * 5
    expected = [
        100 * (r - -280.178953) / (12135.0 + 280.178953)
        for r in (e.total_return for e in results.episodes)
    ]
    np.testing.assert_allclose([e.normalized_score for e in results.episodes], expected)


def test_episodes_planned_apart_equal_the_same_episodes_in_the_full_batch(tiny_dataset):
    # What a resumed evaluation relies on: episode i depends on its index only, not its batch.
    discretizer = fit_discretizer(tiny_dataset)
    model = tiny_model()
    with torch.no_grad():  # less confident heads: the planner's random draws change its plans
        model.head.weight.mul_(0.1)
    config = PlannerConfig(horizon=2, beam_width=4, n_expand=3, cdf_act=None)

    def run(**kwargs):
        return evaluate(
            model,
            discretizer,
            config,
            evaluation_spec(tiny_dataset),
            n_episodes=4,
            seed=5,
            max_episode_steps=12,
            progress=False,
            **kwargs,
        )

    full = {e.episode: e for e in run().episodes}
    saved: list[EpisodeResult] = []
    rest = run(episodes=[3, 1], on_episode_end=saved.append)
    alone = run(episodes=[2])
    assert [e.episode for e in rest.episodes] == [1, 3] and rest.complete
    for episode in [*rest.episodes, *alone.episodes]:
        assert episode == full[episode.episode]  # every reward and prediction, bit for bit
    assert sorted(e.episode for e in saved) == [1, 3]
    assert full[0].rewards != full[1].rewards  # the episodes do differ


def test_a_stopped_rollout_returns_its_finished_episodes_only(tiny_dataset, early_envs):
    factory, _ = early_envs  # the episode reset with seed 11 ends after 4 steps
    steps = []

    def stop_after_six_steps() -> bool:
        steps.append(1)
        return len(steps) > 6

    results = evaluate(
        tiny_model(),
        fit_discretizer(tiny_dataset),
        PlannerConfig(horizon=2, beam_width=2),
        evaluation_spec(tiny_dataset),
        n_episodes=3,
        seed=10,
        max_episode_steps=9,
        env_factory=factory,
        progress=False,
        should_stop=stop_after_six_steps,
    )
    assert [e.seed for e in results.episodes] == [11] and not results.complete
    assert results.n_episodes == 3 and "1 of 3 episodes" in results.summary()


def test_between_replans_the_plan_is_followed(tiny_dataset, early_envs):
    factory, _ = early_envs
    config = PlannerConfig(horizon=3, beam_width=4)
    results = evaluate(
        tiny_model(),
        fit_discretizer(tiny_dataset),
        config,
        evaluation_spec(tiny_dataset),
        n_episodes=2,
        seed=0,
        max_episode_steps=7,
        env_factory=factory,
        progress=False,
        controller_config=ControllerConfig(plan_freq=2),
    )
    assert [e.length for e in results.episodes] == [7, 7]
    assert results.timing["planner_calls"] == 4  # steps 0, 2, 4, 6


# ----------------------------------------------------------------------------- video


class FakeRenderEnv:
    """Renders a solid frame whose colour is the number of frames so far (or fails to render)."""

    def __init__(self, broken: bool = False) -> None:
        self.metadata = {"render_fps": 10}
        self.broken, self.n = broken, 0

    def render(self):
        if self.broken:
            raise RuntimeError("no OpenGL context")
        self.n += 1
        return np.full((32, 48, 3), 20 * self.n, dtype=np.uint8)


def test_video_recorder_writes_every_frame(tmp_path):
    import imageio

    recorder = VideoRecorder(FakeRenderEnv(), tmp_path / "episode0.mp4")
    for _ in range(5):
        recorder.capture()
    path = recorder.close()
    assert path == tmp_path / "episode0.mp4"
    frames = imageio.mimread(path)
    assert len(frames) == 5 and frames[0].shape == (32, 48, 3)
    assert [f.mean() for f in frames] == pytest.approx([20, 40, 60, 80, 100], abs=3)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_video_recorder_warns_once_and_goes_on_without_gl(tmp_path):
    recorder = VideoRecorder(FakeRenderEnv(broken=True), tmp_path / "episode0.mp4")
    with pytest.warns(RuntimeWarning, match="video disabled") as caught:
        for _ in range(3):
            recorder.capture()
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert recorder.close() is None
    assert list(tmp_path.iterdir()) == []


def test_planned_stop_tokens_are_counted(tiny_dataset, early_envs):
    factory, envs = early_envs
    model = tiny_model()
    S, A = 17, 6
    with torch.no_grad():  # every position sees the same features; action heads pick the stop token
        model.ln_f.weight.zero_()
        model.ln_f.bias.zero_()
        model.ln_f.bias[0] = 1.0
        # the head at position p predicts token p + 1: heads S-1 .. S+A-2 give the action tokens
        model.head.weight[S - 1 : S + A - 1] = 0.0
        model.head.weight[S - 1 : S + A - 1, N_BINS, 0] = 50.0
    config = PlannerConfig(horizon=2, beam_width=2)
    discretizer = fit_discretizer(tiny_dataset)
    with pytest.warns(RuntimeWarning, match="stop token"):
        results = evaluate(
            model,
            discretizer,
            config,
            evaluation_spec(tiny_dataset),
            n_episodes=1,
            max_episode_steps=3,
            env_factory=factory,
            progress=False,
        )
    assert results.episodes[0].stop_actions == 3
    last_bin = discretizer.midpoints(slice(S, S + A))[-1]  # what the planner executes instead
    np.testing.assert_allclose(np.stack(envs[0].actions), np.tile(last_bin, (3, 1)), rtol=1e-6)
    assert np.isfinite(results.episodes[0].total_return)


def test_wandb_settings_follow_the_training_run():
    from ttrl.evaluation.wandb_logging import wandb_settings
    from ttrl.training.logger import config_group

    train_config = {
        "env": {"name": "hopper-medium"},
        "seed": 1,
        "logger": {"mode": "offline", "project": "tt", "entity": None, "group": None},
    }
    trainer = {"wandb_run_id": "abc123"}
    unset = {"mode": None, "project": None, "entity": None, "group": None}
    settings = wandb_settings(unset, train_config, trainer)
    assert settings["project"] == "tt" and settings["mode"] == "offline"
    assert settings["group"] == config_group(train_config)  # the group training derived
    assert settings["train_run_id"] == "abc123"
    chosen = wandb_settings({**unset, "mode": "disabled", "group": "g"}, train_config, trainer)
    assert (chosen["mode"], chosen["group"], chosen["project"]) == ("disabled", "g", "tt")
