"""Per-episode results and their aggregates: returns, normalised scores, mean ± standard error."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttrl.data.preprocess import DISCOUNT, TERMINATION_PENALTY, value_targets


@dataclass
class EpisodeResult:
    """One evaluation episode: its outcome and, per executed step, what the plan predicted.

    ``stop_actions`` counts steps whose executed action held the stop token (the model predicted
    the episode's end; the planner decodes it as the last bin). ``predicted_rewards[t]`` / ``predicted_values[t]`` are the planner's reward and value for the
    step it executed at ``t``; ``rewards[t]`` is what the environment paid and ``values[t]`` the
    realised discounted return from ``t + 1`` on (the model's value target, see
    :func:`realised_values`).

    Goal reaching (envs whose observations hold a ``desired_goal``, e.g. PointMaze): ``success``
    is whether the env's ``info["success"]`` was true after some step, ``steps_to_goal`` the first
    such step (1-based; None when never reached). Both are None for other envs (locomotion).
    Goal episodes also keep their paths, for the maze picture (:mod:`ttrl.evaluation.paths`):
    ``observations`` the executed observations (the reset one first, then one per step), ``goal``
    the desired goal at the start, and for every plan the step it was made at (``plan_steps``) and
    the observations it predicted (``planned_observations``, ``[H, S]`` each, its first row the
    observation it was made from). All are empty for other envs, so locomotion files stay small.
    """

    episode: int
    seed: int
    total_return: float
    length: int
    terminated: bool
    truncated: bool
    normalized_score: float | None
    stop_actions: int = 0
    rewards: list[float] = field(default_factory=list)
    predicted_rewards: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    predicted_values: list[float] = field(default_factory=list)
    success: bool | None = None
    steps_to_goal: int | None = None
    observations: list[list[float]] = field(default_factory=list)
    goal: list[float] = field(default_factory=list)
    plan_steps: list[int] = field(default_factory=list)
    planned_observations: list[list[list[float]]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The episode as one flat row (for results.csv, results.json and the W&B table); goal
        episodes add ``success`` and ``steps_to_goal``."""
        row = {
            "episode": self.episode,
            "seed": self.seed,
            "return": self.total_return,
            "length": self.length,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "normalized_score": self.normalized_score,
            "stop_actions": self.stop_actions,
        }
        if self.success is not None:
            row.update(success=self.success, steps_to_goal=self.steps_to_goal)
        return row


def mean_and_standard_error(values: Any) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std with ddof=1 over sqrt(n)).

    The standard error of a single value is undefined and returned as NaN.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan
    return mean, float(x.std(ddof=1) / math.sqrt(x.size))


def realised_values(
    rewards: Any,
    terminated: bool,
    discount: float = DISCOUNT,
    termination_penalty: float = TERMINATION_PENALTY,
) -> np.ndarray:
    """What the value token should have predicted at each step: ``sum_{k>=1} γ^(k-1) r_{t+k}``.

    Uses the training targets' conventions so the plot compares like with like: the value excludes
    the step's own reward, and a real termination's reward is replaced by the termination penalty.
    The sum stops at the end of the episode (a truncated episode has no bootstrap).
    """
    r = np.asarray(rewards, dtype=np.float64).copy()
    if terminated and r.size:
        r[-1] = termination_penalty
    return value_targets(r, np.zeros(1, dtype=np.int64), np.array([r.size]), discount)


def aggregate(episodes: list[EpisodeResult]) -> dict[str, Any]:
    """Mean ± standard error of return, normalised score and length over the episodes.

    Goal episodes (every ``success`` set) add ``success_rate`` ± ``success_rate_se`` (the
    standard error of the mean of the 0/1 outcomes), ``n_success`` and ``steps_to_goal_mean`` ±
    ``steps_to_goal_se`` over the successful episodes (None when none succeeded).
    """
    return_mean, return_se = mean_and_standard_error([e.total_return for e in episodes])
    length_mean, length_se = mean_and_standard_error([e.length for e in episodes])
    scores = [e.normalized_score for e in episodes]
    has_scores = bool(scores) and all(s is not None for s in scores)
    score_mean, score_se = mean_and_standard_error(scores) if has_scores else (None, None)
    aggregates = {
        "n_episodes": len(episodes),
        "return_mean": return_mean,
        "return_se": return_se,
        "normalized_score_mean": score_mean,
        "normalized_score_se": score_se,
        "length_mean": length_mean,
        "length_se": length_se,
        "n_terminated": sum(e.terminated for e in episodes),
    }
    if episodes and all(e.success is not None for e in episodes):
        rate, rate_se = mean_and_standard_error([float(bool(e.success)) for e in episodes])
        reached = [e.steps_to_goal for e in episodes if e.success]
        steps, steps_se = mean_and_standard_error(reached) if reached else (None, None)
        aggregates.update(
            success_rate=rate,
            success_rate_se=rate_se,
            n_success=len(reached),
            steps_to_goal_mean=steps,
            steps_to_goal_se=steps_se,
        )
    return aggregates
