"""The transitions a baseline trains on: the transformer's dataset, split into the same episodes.

A baseline reads the dataset the transformer would (``resolve_dataset(name, data.source)``), cuts
it into episodes with the data stage's :func:`~ttrl.data.preprocess.episode_bounds`, and holds out
the validation episodes that ``TokenDataset.split`` holds out for the same ``data.val_fraction``
and seed, so a baseline's validation loss and the transformer's are measured on the same episodes.
Rewards are the dataset's own (no termination penalty: that is the transformer's value-target
convention).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from ttrl.data import TokenDataset, load_transitions, resolve_dataset
from ttrl.data.loading import Transitions
from ttrl.data.preprocess import episode_bounds
from ttrl.errors import TtrlError


@dataclass
class TransitionBatch:
    """Transitions as tensors on one device; N rows, S observation dims, A action dims.

    ``next_observations`` of an episode's last step is that step's own observation (the flat D4RL
    layout holds no successor there); ``episode_ends`` marks those rows, ``terminals`` the real
    terminations among them, so a bootstrapping baseline can mask them.
    """

    observations: torch.Tensor  # float32 [N, S]
    actions: torch.Tensor  # float32 [N, A]
    rewards: torch.Tensor  # float32 [N], as the dataset pays them
    next_observations: torch.Tensor  # float32 [N, S]
    terminals: torch.Tensor  # bool [N]
    episode_ends: torch.Tensor  # bool [N]: the last step of its episode (terminal or timeout)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def take(self, indices: torch.Tensor) -> TransitionBatch:
        """The rows ``indices`` (a long tensor on this batch's device)."""
        return TransitionBatch(**{f.name: getattr(self, f.name)[indices] for f in fields(self)})

    def to(self, device: torch.device | str) -> TransitionBatch:
        """A copy on ``device`` (no copy of tensors already there)."""
        return TransitionBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def chunks(self, size: int) -> Iterator[TransitionBatch]:
        """Every row once, in order, ``size`` at a time (for validation)."""
        for start in range(0, len(self), size):
            yield TransitionBatch(
                **{f.name: getattr(self, f.name)[start : start + size] for f in fields(self)}
            )


@dataclass
class BaselineData:
    """A dataset's transitions, split by episode into training and validation rows."""

    dataset: str
    train: TransitionBatch
    val: TransitionBatch | None  # None when data.val_fraction is 0
    val_episodes: np.ndarray  # int64: the held-out episodes' indices, sorted
    observation_dim: int
    action_dim: int


def validation_episodes(episode_lengths: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """The episodes the transformer's ``TokenDataset.split(val_fraction, seed)`` holds out.

    Its windows start at steps ``0 .. L - 2`` of each episode, so 1-step episodes have none and are
    never held out. The draw itself is ``TokenDataset.validation_episodes``'s, run on a window index
    without tokens, so the two can never disagree.
    """
    lengths = np.asarray(episode_lengths, dtype=np.int64)
    window_episodes = torch.from_numpy(np.repeat(np.arange(len(lengths)), lengths - 1))
    index_only = TokenDataset(
        tokens=torch.empty(0, 1, dtype=torch.uint8),
        row_in_loss=torch.empty(0, dtype=torch.bool),
        window_rows=torch.zeros_like(window_episodes),
        window_episodes=window_episodes,
        sequence_length=1,
        n_bins=1,
    )
    return index_only.validation_episodes(val_fraction, seed).numpy()


def transition_batch(transitions: Transitions, rows: np.ndarray) -> TransitionBatch:
    """The ``rows`` of ``transitions`` (CPU tensors), with successors within each episode."""
    starts, lengths = episode_bounds(transitions)
    ends = np.zeros(len(transitions), dtype=bool)
    ends[starts + lengths - 1] = True
    successor = np.where(ends, np.arange(len(transitions)), np.arange(len(transitions)) + 1)
    observations = transitions.observations.astype(np.float32, copy=False)

    def tensor(array: np.ndarray, dtype: Any = np.float32) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array[rows], dtype=dtype))

    return TransitionBatch(
        observations=tensor(observations),
        actions=tensor(transitions.actions),
        rewards=tensor(transitions.rewards),
        next_observations=tensor(observations[successor]),
        terminals=tensor(transitions.terminals, bool),
        episode_ends=tensor(ends, bool),
    )


def split_transitions(
    transitions: Transitions, dataset: str, val_fraction: float, seed: int
) -> BaselineData:
    """Split ``transitions`` by episode as the transformer's training splits its windows."""
    if len(transitions) == 0:
        raise TtrlError(f"dataset {dataset} holds no transitions; make it again")
    _, lengths = episode_bounds(transitions)
    held_out = (
        validation_episodes(lengths, val_fraction, seed)
        if val_fraction > 0
        else np.zeros(0, dtype=np.int64)
    )
    episode_of_row = np.repeat(np.arange(len(lengths)), lengths)
    is_val = np.isin(episode_of_row, held_out)
    return BaselineData(
        dataset=dataset,
        train=transition_batch(transitions, np.flatnonzero(~is_val)),
        val=transition_batch(transitions, np.flatnonzero(is_val)) if is_val.any() else None,
        val_episodes=held_out,
        observation_dim=transitions.observation_dim,
        action_dim=transitions.action_dim,
    )


def load_baseline_data(
    dataset: str, source: str = "auto", val_fraction: float = 0.05, seed: int = 0
) -> BaselineData:
    """Load ``dataset`` (from ``source``, see :func:`~ttrl.data.resolve_dataset`) and split it."""
    transitions = load_transitions(resolve_dataset(dataset, source))
    return split_transitions(transitions, dataset, val_fraction, seed)
