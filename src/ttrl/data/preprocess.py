"""From flat transitions to episodes of ``[s, a, r, V]`` rows, as the Trajectory Transformer models them.

The released code's recipe, step by step:

1. ``done = terminal OR timeout``; the data are split into episodes after every done step.
2. At a real terminal step the reward is replaced by ``termination_penalty`` (default -100; None keeps
   it), before values are computed, so the value of the steps leading there reflects the penalty.
3. ``V_t = sum_{k>=1} gamma^(k-1) r_{t+k}`` within the episode: the discounted return *after* step
   ``t`` (it excludes ``r_t``), 0 on the last step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttrl.data.loading import Transitions
from ttrl.errors import TtrlError


@dataclass
class Trajectories:
    """Episodes as rows ``[s, a, r (after penalty), V]``, concatenated (real steps only, no padding).

    Attributes:
        joined: float32 ``[n_rows, T]`` with ``T = S + A + 2``; the discretiser is fit on it.
        episode_starts: int64 ``[E]``, first row of each episode in ``joined``.
        episode_lengths: int64 ``[E]``.
        terminated: bool ``[E]``, the episode ended in a real termination (not a timeout).
        observation_dim, action_dim: ``S`` and ``A``.
        discount, termination_penalty, max_path_length: the settings that made it.
    """

    joined: np.ndarray
    episode_starts: np.ndarray
    episode_lengths: np.ndarray
    terminated: np.ndarray
    observation_dim: int
    action_dim: int
    discount: float = 0.99
    termination_penalty: float | None = -100.0
    max_path_length: int = 1000

    @property
    def transition_dim(self) -> int:
        return self.observation_dim + self.action_dim + 2

    @property
    def n_episodes(self) -> int:
        return len(self.episode_lengths)

    def __len__(self) -> int:
        return len(self.joined)


def episode_bounds(transitions: Transitions) -> tuple[np.ndarray, np.ndarray]:
    """Start row and length of every episode (split after each terminal or timeout step)."""
    ends = np.flatnonzero(transitions.terminals | transitions.timeouts) + 1
    if len(ends) == 0 or ends[-1] != len(transitions):
        ends = np.append(ends, len(transitions))  # arrays built by hand may end mid-episode
    starts = np.concatenate([[0], ends[:-1]])
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def penalized_rewards(transitions: Transitions, termination_penalty: float | None) -> np.ndarray:
    """Rewards with the reward of every real terminal step replaced by the penalty (float64)."""
    rewards = transitions.rewards.astype(np.float64)
    if termination_penalty is not None:
        rewards[transitions.terminals] = termination_penalty
    return rewards


def value_targets(
    rewards: np.ndarray, starts: np.ndarray, lengths: np.ndarray, discount: float
) -> np.ndarray:
    """``V_t = r_{t+1} + gamma * V_{t+1}`` within each episode, ``V = 0`` on its last step (float64).

    Vectorised across episodes: one pass per position, from the longest episode's end backwards.
    """
    values = np.zeros(len(rewards), dtype=np.float64)
    for position in range(int(lengths.max()) - 2, -1, -1):
        rows = starts[lengths > position + 1] + position
        values[rows] = rewards[rows + 1] + discount * values[rows + 1]
    return values


def preprocess(
    transitions: Transitions,
    discount: float = 0.99,
    termination_penalty: float | None = -100.0,
    max_path_length: int = 1000,
) -> Trajectories:
    """Split into episodes, apply the termination penalty and append value targets.

    Raises:
        TtrlError: an episode is longer than ``max_path_length``.
    """
    starts, lengths = episode_bounds(transitions)
    too_long = lengths > max_path_length
    if too_long.any():
        raise TtrlError(
            f"{int(too_long.sum())} episodes are longer than max_path_length={max_path_length} "
            f"(longest {int(lengths.max())} steps); raise data.max_path_length to at least that"
        )
    rewards = penalized_rewards(transitions, termination_penalty)
    values = value_targets(rewards, starts, lengths, discount)
    joined = np.concatenate(
        [transitions.observations, transitions.actions, rewards[:, None], values[:, None]],
        axis=1,
        dtype=np.float32,
    )
    return Trajectories(
        joined=joined,
        episode_starts=starts,
        episode_lengths=lengths,
        terminated=transitions.terminals[starts + lengths - 1].copy(),
        observation_dim=transitions.observation_dim,
        action_dim=transitions.action_dim,
        discount=discount,
        termination_penalty=termination_penalty,
        max_path_length=max_path_length,
    )
