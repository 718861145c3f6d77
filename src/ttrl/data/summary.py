"""A dataset's own score: the returns of its whole episodes, normalised like an agent's.

"Whole" episodes ended in a termination or at the env's time limit; the last episode of a dataset
made with a step budget is usually cut short by it and is left out, as an agent's episode would not
be. Reports put this average beside the agents trained on the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttrl.data.loading import Transitions, load_transitions
from ttrl.data.preprocess import MAX_PATH_LENGTH
from ttrl.data.registry import resolve_dataset


@dataclass(frozen=True)
class DatasetScore:
    """Mean and standard error of the normalised return over a dataset's whole episodes."""

    dataset: str
    n_episodes: int
    return_mean: float
    normalized_mean: float | None  # None without reference returns
    normalized_se: float | None


def episode_returns(
    transitions: Transitions, time_limit: int = MAX_PATH_LENGTH
) -> tuple[np.ndarray, np.ndarray]:
    """Every episode's return (float64 ``[E]``) and whether it is whole (bool ``[E]``)."""
    ends = np.flatnonzero(transitions.terminals | transitions.timeouts)
    if len(ends) == 0 or ends[-1] != len(transitions) - 1:
        ends = np.append(ends, len(transitions) - 1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    returns = np.add.reduceat(transitions.rewards.astype(np.float64), starts)
    whole = transitions.terminals[ends] | (ends - starts + 1 >= time_limit)
    return returns, whole


def dataset_score(
    name: str, source: str = "auto", time_limit: int = MAX_PATH_LENGTH
) -> DatasetScore:
    """The dataset ``name``'s average normalised score over its whole episodes.

    Raises:
        TtrlError: the dataset cannot be found (the message names the command that makes it).
    """
    spec = resolve_dataset(name, source)
    returns, whole = episode_returns(load_transitions(spec), time_limit)
    kept = returns[whole] if whole.any() else returns  # no whole episode: all of them, said by n
    normalised = None
    se = None
    if spec.ref_min_score is not None and spec.ref_max_score is not None:
        scores = np.array([spec.normalized_score(r) for r in kept])
        normalised = float(scores.mean())
        se = float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else None
    return DatasetScore(
        dataset=name,
        n_episodes=len(kept),
        return_mean=float(kept.mean()),
        normalized_mean=normalised,
        normalized_se=se,
    )
