"""From flat transitions to episodes of ``[s, a, r, V]`` rows, as the Trajectory Transformer models them.

The released code's recipe, step by step:

1. ``done = terminal OR timeout``; the data are split into episodes after every done step.
2. At a real terminal step the reward is replaced by ``termination_penalty`` (default -100; None keeps
   it), before values are computed, so the value of the steps leading there reflects the penalty.
3. ``V_t = sum_{k>=1} gamma^(k-1) r_{t+k}`` within the episode: the discounted return *after* step
   ``t`` (it excludes ``r_t``), 0 on the last step.

Where ttrl's own training deliberately differs from the released code (jannerm/trajectory-transformer,
``trajectory/datasets/d4rl.py`` and ``sequence.py``), and what ``released_compat=True`` restores:

- **The dataset's last step.** The released loader walks ``range(N - 1)``, so the final row of the
  whole dataset is dropped (only that one row; timeouts elsewhere are kept). ttrl keeps it: it is a
  real step, and when it is a termination, dropping it loses that episode's penalty and stop token.
- **Precision.** The released code sums every ``V_t`` directly over the zero-padded
  ``max_path_length`` horizon in float64, and joins ``[s, a, r, V]`` (float32 ``s, a, r``) into a
  float64 array that the discretiser is fitted on and encodes. ttrl computes ``V`` by the recursion
  ``V_t = r_{t+1} + gamma V_{t+1}`` and stores ``joined`` as float32 (half the memory; ``s, a, r``
  are float32 anyway). The values agree to float64 rounding, but quantile edges are data points,
  so the value edges move in their last bits (and the dropped row shifts edges in every dimension).

Checkpoints trained by the released code (the HuggingFace ones) hold no discretiser; refitting it
with ``released_compat=True`` gives exactly the edges and tokens they were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttrl.data.loading import Transitions
from ttrl.errors import TtrlError

# The released code's preprocessing settings: the one definition of their defaults (DataConfig,
# the functions below and planning's fallbacks for checkpoints without a data config use them).
DISCOUNT = 0.99  # gamma of the value targets
TERMINATION_PENALTY = -100.0  # the reward of a real terminal step
MAX_PATH_LENGTH = 1000  # the longest episode; released values sum over this padded horizon

# episodes per padded [chunk, max_path_length] block of rewards (16 MB at 1000 steps)
RELEASED_VALUE_CHUNK = 2048


@dataclass
class Trajectories:
    """Episodes as rows ``[s, a, r (after penalty), V]``, concatenated (real steps only, no padding).

    Attributes:
        joined: float32 ``[n_rows, T]`` with ``T = S + A + 2`` (float64 with ``released_compat``);
            the discretiser is fit on it.
        episode_starts: int64 ``[E]``, first row of each episode in ``joined``.
        episode_lengths: int64 ``[E]``.
        terminated: bool ``[E]``, the episode ended in a real termination (not a timeout).
        observation_dim, action_dim: ``S`` and ``A``.
        discount, termination_penalty, max_path_length, released_compat: the settings that made it.
    """

    joined: np.ndarray
    episode_starts: np.ndarray
    episode_lengths: np.ndarray
    terminated: np.ndarray
    observation_dim: int
    action_dim: int
    discount: float = DISCOUNT
    termination_penalty: float | None = TERMINATION_PENALTY
    max_path_length: int = MAX_PATH_LENGTH
    released_compat: bool = False

    @property
    def transition_dim(self) -> int:
        from ttrl.layout import TransitionLayout  # torch only when asked

        return TransitionLayout(self.observation_dim, self.action_dim).transition_dim

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


def without_last_step(transitions: Transitions) -> Transitions:
    """The transitions minus the dataset's final row, as the released loader reads them.

    Raises:
        TtrlError: fewer than two steps (nothing would be left).
    """
    if len(transitions) < 2:
        raise TtrlError(
            f"released_compat drops the dataset's last step, and this dataset has {len(transitions)}; "
            "use a larger dataset"
        )
    return Transitions(
        observations=transitions.observations[:-1],
        actions=transitions.actions[:-1],
        rewards=transitions.rewards[:-1],
        terminals=transitions.terminals[:-1],
        timeouts=transitions.timeouts[:-1],
    )


def penalized_rewards(
    transitions: Transitions, termination_penalty: float | None, dtype: type = np.float64
) -> np.ndarray:
    """Rewards with every real terminal step's reward replaced by the penalty, as float64.

    The penalty is stored in ``dtype`` first: float32 rounds it as the released code's float32 reward
    array does (only matters for penalties that float32 cannot hold, -100 is exact).
    """
    rewards = transitions.rewards.astype(dtype)
    if termination_penalty is not None:
        rewards[transitions.terminals] = termination_penalty
    return rewards.astype(np.float64)


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


def released_value_targets(
    rewards: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    discount: float,
    max_path_length: int,
) -> np.ndarray:
    """The same ``V_t``, bit for bit as the released code computes it (float64).

    Each ``V_t`` is one numpy sum of ``r_{t+1+k} * discount**k`` over all ``max_path_length - t - 1``
    positions of the zero-padded episode. The padding matters: numpy sums pairwise, so the number of
    terms (zeros included) decides the rounding. Costs about ``len(rewards) * max_path_length`` flops.
    """
    discounts = discount ** np.arange(max_path_length)
    values = np.zeros(len(rewards), dtype=np.float64)
    offsets = np.arange(max_path_length)
    # longest first, so the episodes still running at position t are a prefix of each block
    order = np.argsort(-lengths, kind="stable")
    for begin in range(0, len(order), RELEASED_VALUE_CHUNK):
        episodes = order[begin : begin + RELEASED_VALUE_CHUNK]
        block_starts, block_lengths = starts[episodes], lengths[episodes]
        inside = offsets < block_lengths[:, None]
        padded = np.zeros((len(episodes), max_path_length), dtype=np.float64)
        padded[inside] = rewards[(block_starts[:, None] + offsets)[inside]]
        for position in range(int(block_lengths[0])):
            running = int(np.count_nonzero(block_lengths > position))
            tail = padded[:running, position + 1 :] * discounts[: max_path_length - position - 1]
            values[block_starts[:running] + position] = tail.sum(axis=1)
    return values


def preprocess(
    transitions: Transitions,
    discount: float = DISCOUNT,
    termination_penalty: float | None = TERMINATION_PENALTY,
    max_path_length: int = MAX_PATH_LENGTH,
    released_compat: bool = False,
) -> Trajectories:
    """Split into episodes, apply the termination penalty and append value targets.

    Args:
        released_compat: reproduce the released code's rows exactly, for refitting the discretiser
            of a checkpoint it trained: drop the dataset's last step, sum values as it does and keep
            ``joined`` in float64 (see the module docstring). ttrl's own training leaves it False.

    Raises:
        TtrlError: an episode is longer than ``max_path_length``.
    """
    if released_compat:
        transitions = without_last_step(transitions)
    starts, lengths = episode_bounds(transitions)
    too_long = lengths > max_path_length
    if too_long.any():
        raise TtrlError(
            f"{int(too_long.sum())} episodes are longer than max_path_length={max_path_length} "
            f"(longest {int(lengths.max())} steps); raise data.max_path_length to at least that"
        )
    if released_compat:
        rewards = penalized_rewards(transitions, termination_penalty, dtype=np.float32)
        values = released_value_targets(rewards, starts, lengths, discount, max_path_length)
    else:
        rewards = penalized_rewards(transitions, termination_penalty)
        values = value_targets(rewards, starts, lengths, discount)
    joined = np.concatenate(
        [transitions.observations, transitions.actions, rewards[:, None], values[:, None]],
        axis=1,
        dtype=np.float64 if released_compat else np.float32,
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
        released_compat=released_compat,
    )
