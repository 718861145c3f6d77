"""Rollouts of a plain policy (``observations -> actions``), N episodes stepped together.

The counterpart of :func:`ttrl.evaluation.evaluate` (the beam planner's rollouts) with the same
conventions, so a baseline's score and the transformer's compare like for like: episode ``i``
resets its env with ``seed + i``, the env comes from :func:`~ttrl.evaluation.make_env` with the
same step limit, and the results are :class:`~ttrl.evaluation.EpisodeResults` normalised with the
dataset's reference returns. Every running episode's observation goes through the policy in one
batch per step; episodes that end drop out and the rest go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ttrl.data import DatasetSpec
from ttrl.errors import TtrlError
from ttrl.evaluation.rollout import EnvFactory, EpisodeResults, check_spaces, make_env
from ttrl.evaluation.scores import EpisodeResult
from ttrl.evaluation.video import VideoRecorder

Policy = Callable[[np.ndarray], np.ndarray]  # float32 [B, S] observations -> [B, A] actions


def evaluate_policy(
    policy: Policy,
    spec: DatasetSpec,
    observation_dim: int,
    action_dim: int,
    n_episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
    video_path: str | Path | None = None,
    env_factory: EnvFactory = make_env,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> EpisodeResults:
    """Roll ``policy`` out for ``n_episodes`` episodes in ``spec``'s environment.

    Args:
        policy: maps float32 ``[B, S]`` observations of the running episodes to ``[B, A]`` actions.
        spec: the dataset the policy was trained on: its ``env_id`` and reference scores.
        observation_dim, action_dim: the policy's sizes, checked against the env's.
        n_episodes, seed: episode ``i`` resets its env with ``seed + i``.
        max_episode_steps: step limit per episode; None keeps the env's (1000 for MuJoCo).
        video_path: if set, episode 0 is rendered offscreen into this MP4.
        env_factory: ``(env_id, max_episode_steps, render) -> env``; tests pass their own.
        progress: a tqdm bar over steps.
        should_stop: checked before every step; when it returns True the rollout stops and the
            unfinished episodes are dropped (the result then holds fewer than asked for).
    """
    if n_episodes < 1:
        raise TtrlError(f"n_episodes must be at least 1, got {n_episodes}")
    if spec.env_id is None:
        raise TtrlError(
            f"dataset {spec.name!r} names no environment to evaluate in; use a D4RL-style name "
            f"or a Minari dataset whose metadata has an env_spec"
        )
    envs = []
    try:
        for i in range(n_episodes):
            envs.append(
                env_factory(spec.env_id, max_episode_steps, video_path is not None and i == 0)
            )
            check_spaces(envs[-1], spec.env_id, observation_dim, action_dim)
        return _run(policy, spec, envs, seed, video_path, progress, should_stop)
    finally:
        for env in envs:
            env.close()


def _run(
    policy: Policy,
    spec: DatasetSpec,
    envs: list[Any],
    seed: int,
    video_path: str | Path | None,
    progress: bool,
    should_stop: Callable[[], bool] | None,
) -> EpisodeResults:
    observations = [
        np.asarray(env.reset(seed=seed + i)[0], dtype=np.float32) for i, env in enumerate(envs)
    ]
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
            actions = np.asarray(policy(np.stack([observations[i] for i in running])))
            policy_seconds += time.perf_counter() - tic
            decisions += len(running)
            for i, action in zip(running, actions, strict=True):
                observation, reward, terminated, truncated, _ = envs[i].step(action)
                observations[i] = np.asarray(observation, dtype=np.float32)
                rewards[i].append(float(reward))
                if recorder is not None and i == 0:
                    recorder.capture()
                if terminated or truncated:
                    ended[i] = _result(
                        i, seed + i, rewards[i], bool(terminated), bool(truncated), spec
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
    )
