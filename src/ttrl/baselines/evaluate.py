"""Rollouts of a baseline's policy (``observations [, goals] -> actions``), N episodes stepped together.

The counterpart of :func:`ttrl.evaluation.evaluate` (the beam planner's rollouts) with the same
conventions, so a baseline's score and the transformer's compare like for like: episode ``i``
resets its env with ``seed + i``, the env comes from :func:`~ttrl.evaluation.make_env` with the
same step limit, and the results are :class:`~ttrl.evaluation.EpisodeResults` normalised with the
dataset's reference returns. Every running episode's observation goes through the policy in one
batch per step; episodes that end drop out and the rest go on.

**Goal reaching**, as the transformer's rollout does it (:mod:`ttrl.evaluation.rollout`): a
goal-conditioned policy (``goal_dim > 0``) is evaluated in the episodic env of
:func:`~ttrl.evaluation.rollout.make_goal_env` (a maze episode ends at its first success), the
env's dict observations are split into the observation and the ``desired_goal``
(:func:`~ttrl.evaluation.rollout.split_observation`), read again after every step (the env may move
the goal), and the policy is called with both. In every env with goals (a plain policy's too),
each episode records ``success`` (the env's ``info["success"]`` after some step) and
``steps_to_goal`` (the first such step), and the aggregates their rate ± standard error.

A policy with state through an episode (the waypoint controller's path) comes as
:class:`EpisodePolicies`: one policy per episode, made with the episode's env seed and called with
that env's raw observation, one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ttrl.data import DatasetSpec
from ttrl.errors import TtrlError
from ttrl.evaluation.rollout import (
    EnvFactory,
    EpisodeResults,
    check_spaces,
    env_factory_for,
    split_observation,
)
from ttrl.evaluation.scores import EpisodeResult
from ttrl.evaluation.video import VideoRecorder

# float32 [B, S] observations (and [B, G] goals for a goal-conditioned one) -> [B, A] actions
Policy = Callable[..., np.ndarray]


@dataclass(frozen=True)
class EpisodePolicies:
    """A policy with state through an episode: ``make(seed)`` is a fresh one for the episode whose
    env resets with ``seed``; it maps that env's raw observation (a dict for PointMaze) to a float32
    ``[A]`` action, one step at a time."""

    make: Callable[[int], Callable[[Any], np.ndarray]]


def evaluate_policy(
    policy: Policy | EpisodePolicies,
    spec: DatasetSpec,
    observation_dim: int,
    action_dim: int,
    n_episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
    video_path: str | Path | None = None,
    env_factory: EnvFactory | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    goal_dim: int = 0,
    observe_goal: bool = False,
) -> EpisodeResults:
    """Roll ``policy`` out for ``n_episodes`` episodes in ``spec``'s environment.

    Args:
        policy: maps float32 ``[B, S]`` observations of the running episodes (and their ``[B, G]``
            goals, when ``goal_dim > 0``) to ``[B, A]`` actions; or :class:`EpisodePolicies`.
        spec: the dataset the policy was trained on: its ``env_id`` and reference scores.
        observation_dim, action_dim: the policy's sizes, checked against the env's.
        n_episodes, seed: episode ``i`` resets its env with ``seed + i``.
        max_episode_steps: step limit per episode; None keeps the env's (1000 for MuJoCo).
        video_path: if set, episode 0 is rendered offscreen into this MP4.
        env_factory: ``(env_id, max_episode_steps, render) -> env``; tests pass their own. None:
            :func:`~ttrl.evaluation.rollout.env_factory_for` the dataset (episodic mazes, the
            dataset's env settings), as for the transformer.
        progress: a tqdm bar over steps.
        should_stop: checked before every step; when it returns True the rollout stops and the
            unfinished episodes are dropped (the result then holds fewer than asked for).
        goal_dim: ``G`` of a goal-conditioned policy (0: plain); the env must give
            ``desired_goal`` s of that size.
        observe_goal: the policy was trained with ``data.observe_goal``: its observations are
            the env's ``observation`` followed by its ``desired_goal``.

    Raises:
        TtrlError: no episodes, a dataset without an env, or env spaces (or goals) that do not fit
            the policy's.
    """
    if n_episodes < 1:
        raise TtrlError(f"n_episodes must be at least 1, got {n_episodes}")
    if spec.env_id is None:
        raise TtrlError(
            f"dataset {spec.name!r} names no environment to evaluate in; use a D4RL-style name "
            f"or a Minari dataset whose metadata has an env_spec"
        )
    if env_factory is None:
        env_factory = env_factory_for(spec)
    envs = []
    try:
        for i in range(n_episodes):
            envs.append(
                env_factory(spec.env_id, max_episode_steps, video_path is not None and i == 0)
            )
            check_spaces(envs[-1], spec.env_id, observation_dim, action_dim, goal_dim, observe_goal)
        return _run(
            policy, spec, envs, seed, video_path, progress, should_stop, goal_dim, observe_goal
        )
    finally:
        for env in envs:
            env.close()


@dataclass
class _Running:
    """One episode's state: the env's latest raw observation, its split, and what happened."""

    raw: Any
    observation: np.ndarray
    goal: np.ndarray | None
    success: bool | None  # None in envs without goals
    steps_to_goal: int | None = None
    observe_goal: bool = False  # the observation holds the goal too (data.observe_goal)

    @classmethod
    def start(cls, raw: Any, observe_goal: bool = False) -> _Running:
        observation, goal = split_observation(raw, observe_goal)
        # an env with goals scores success (False until reached); locomotion keeps None
        success = None if goal is None else False
        return cls(raw, observation, goal, success, observe_goal=observe_goal)

    def observe(self, raw: Any, info: Mapping[str, Any], step: int) -> None:
        """The observation (and goal, which the env may have moved) after ``step`` (1-based), and
        the first step at which ``info["success"]`` held (the transformer's rollout's rule)."""
        self.raw = raw
        self.observation, self.goal = split_observation(raw, self.observe_goal)
        if self.success is False and info.get("success"):
            self.success, self.steps_to_goal = True, step


def _run(
    policy: Policy | EpisodePolicies,
    spec: DatasetSpec,
    envs: list[Any],
    seed: int,
    video_path: str | Path | None,
    progress: bool,
    should_stop: Callable[[], bool] | None,
    goal_dim: int,
    observe_goal: bool = False,
) -> EpisodeResults:
    episodes = [
        _Running.start(env.reset(seed=seed + i)[0], observe_goal) for i, env in enumerate(envs)
    ]
    per_episode = (
        [policy.make(seed + i) for i in range(len(envs))]
        if isinstance(policy, EpisodePolicies)
        else None
    )
    renders = video_path is not None and getattr(envs[0], "render_mode", None) == "rgb_array"
    recorder = VideoRecorder(envs[0], video_path) if renders else None
    if recorder is not None:
        recorder.capture()
    rewards: list[list[float]] = [[] for _ in envs]
    ended: dict[int, EpisodeResult] = {}
    video: Path | None = None
    policy_seconds, decisions = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(desc="episode steps", unit="step", disable=not progress, leave=False)
    try:
        while running := [i for i in range(len(envs)) if i not in ended]:
            if should_stop is not None and should_stop():
                break
            tic = time.perf_counter()
            if per_episode is not None:
                actions = np.stack([per_episode[i](episodes[i].raw) for i in running])
            else:
                inputs = [np.stack([episodes[i].observation for i in running])]
                if goal_dim:
                    inputs.append(np.stack([episodes[i].goal for i in running]))
                actions = np.asarray(policy(*inputs))
            policy_seconds += time.perf_counter() - tic
            decisions += len(running)
            for i, action in zip(running, actions, strict=True):
                observation, reward, terminated, truncated, info = envs[i].step(action)
                rewards[i].append(float(reward))
                episodes[i].observe(observation, info, len(rewards[i]))
                if recorder is not None and i == 0:
                    recorder.capture()
                if terminated or truncated:
                    ended[i] = _result(
                        i,
                        seed + i,
                        rewards[i],
                        bool(terminated),
                        bool(truncated),
                        spec,
                        episodes[i],
                    )
                    if recorder is not None and i == 0:
                        video = recorder.close()
            bar.update(1)
            bar.set_postfix(running=len(running))
    finally:  # also on Ctrl-C: no half-written video
        bar.close()
        if recorder is not None:
            recorder.discard()
    wall = time.perf_counter() - start
    env_steps = sum(len(r) for r in rewards)
    return EpisodeResults(
        episodes=[ended[i] for i in sorted(ended)],
        env_id=str(spec.env_id),
        dataset=spec.name,
        reference={"min": spec.ref_min_score, "max": spec.ref_max_score, "source": spec.ref_source},
        timing={
            "wall_seconds": wall,
            "policy_seconds": policy_seconds,
            "decisions": decisions,  # one per running episode per step, as for the planner
            "decisions_per_second": decisions / policy_seconds if policy_seconds > 0 else 0.0,
            "env_steps": env_steps,
            "env_steps_per_second": env_steps / wall if wall > 0 else 0.0,
        },
        video_path=video,
        n_episodes=len(envs),
    )


def _result(
    index: int,
    seed: int,
    rewards: list[float],
    terminated: bool,
    truncated: bool,
    spec: DatasetSpec,
    episode: _Running,
) -> EpisodeResult:
    total = float(np.sum(rewards))
    has_refs = spec.ref_min_score is not None and spec.ref_max_score is not None
    return EpisodeResult(
        episode=index,
        seed=seed,
        total_return=total,
        length=len(rewards),
        terminated=terminated,
        truncated=truncated,
        normalized_score=float(spec.normalized_score(total)) if has_refs else None,
        rewards=list(rewards),
        success=episode.success,
        steps_to_goal=episode.steps_to_goal,
    )
