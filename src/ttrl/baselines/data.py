"""The transitions a baseline trains on: the transformer's dataset, split into the same episodes.

A baseline reads the dataset the transformer would (``resolve_dataset(name, data.source)``), cuts
it into episodes with the data stage's :func:`~ttrl.data.preprocess.episode_bounds`, and holds out
the validation episodes that ``TokenDataset.split`` holds out for the same ``data.val_fraction``
and seed, so a baseline's validation loss and the transformer's are measured on the same episodes.
Rewards are the dataset's own (no termination penalty: that is the transformer's value-target
convention).

**Goals** (``data.goal``, goal-conditioned baselines on PointMaze's dict observations): each split
is then a :class:`GoalTransitionBatch`, which also carries every row's ``achieved_goal`` and
``desired_goal``, its own row number and the row of its episode's last step, so that the rows of a minibatch can be given hindsight goals with the
transformer's relabellings (:func:`with_hindsight_goals`, :mod:`ttrl.data.goals`): ``"future"``
the achieved goal of a later step of the episode, drawn again every time a row is sampled;
``"final"`` the achieved goal of its last step; ``"desired"`` the row's own desired goal. The
validation rows get their goals once, with ``"future"`` ones drawn from
:data:`~ttrl.data.goals.VALIDATION_GOAL_SEED`, so every validation pass scores the same goals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np
import torch

from ttrl.data import TokenDataset, load_transitions, resolve_dataset
from ttrl.data.goals import (
    VALIDATION_GOAL_SEED,
    check_relabel,
    goal_arrays,
    hindsight_goal_steps,
)
from ttrl.data.loading import Transitions
from ttrl.data.preprocess import episode_bounds
from ttrl.errors import TtrlError

B = TypeVar("B", bound="TransitionBatch")


@dataclass
class TransitionBatch:
    """Transitions as tensors on one device; N rows, S observation dims, A action dims.

    ``next_observations`` of an episode's last step is that step's own observation (the flat D4RL
    layout holds no successor there); ``episode_ends`` marks those rows, ``terminals`` the real
    terminations among them, so a bootstrapping baseline can mask them. Data loaded with
    ``data.goal`` is a :class:`GoalTransitionBatch`, which adds the goal fields.
    """

    observations: torch.Tensor  # float32 [N, S]
    actions: torch.Tensor  # float32 [N, A]
    rewards: torch.Tensor  # float32 [N], as the dataset pays them
    next_observations: torch.Tensor  # float32 [N, S]
    terminals: torch.Tensor  # bool [N]
    episode_ends: torch.Tensor  # bool [N]: the last step of its episode (terminal or timeout)

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def _map(self: B, f: Callable[[torch.Tensor], torch.Tensor]) -> B:
        """A batch of the same kind holding ``f(tensor)`` of each field (None stays None)."""
        values = {name.name: getattr(self, name.name) for name in fields(self)}
        return type(self)(**{k: None if v is None else f(v) for k, v in values.items()})

    def take(self: B, indices: torch.Tensor) -> B:
        """The rows ``indices`` (a long tensor on this batch's device)."""
        return self._map(lambda tensor: tensor[indices])

    def to(self: B, device: torch.device | str) -> B:
        """A copy on ``device`` (no copy of tensors already there)."""
        return self._map(lambda tensor: tensor.to(device))

    def chunks(self: B, size: int) -> Iterator[B]:
        """Every row once, in order, ``size`` at a time (for validation)."""
        for start in range(0, len(self), size):
            yield self._map(lambda tensor, start=start: tensor[start : start + size])


@dataclass
class GoalTransitionBatch(TransitionBatch):
    """A :class:`TransitionBatch` of a dataset with goals (``data.goal``), G numbers per goal.

    ``rows`` and ``episode_last`` number the rows of the split the batch was cut from, and
    :meth:`~TransitionBatch.take` keeps them, so the rows of a minibatch still point into that
    split (``split.achieved_goals[batch.episode_last]`` are the rows' final achieved goals).
    ``goals`` are what a goal-conditioned baseline is conditioned on: None until
    :func:`with_hindsight_goals` chooses them.
    """

    achieved_goals: torch.Tensor  # float32 [N, G]: where the ball is in the observation
    desired_goals: torch.Tensor  # float32 [N, G]: the goal the data pursued there
    rows: torch.Tensor  # long [N]: each row's index in its split
    episode_last: torch.Tensor  # long [N]: the split's row of the last step of its episode
    goals: torch.Tensor | None = None  # float32 [N, G]: the (hindsight) goal each row is given

    @property
    def goal_dim(self) -> int:
        """``G``, the size of a goal."""
        return int(self.achieved_goals.shape[1])


def with_hindsight_goals(
    batch: TransitionBatch,
    split: TransitionBatch,
    relabel: str,
    generator: torch.Generator | None = None,
) -> GoalTransitionBatch:
    """``batch`` (rows taken from ``split``, or ``split`` itself) with ``goals`` set by hindsight.

    The goal of each row is chosen as the transformer's windows' are (``relabel``, one of
    :data:`~ttrl.data.goals.RELABELLINGS`, through :func:`~ttrl.data.goals.hindsight_goal_steps`):
    ``"future"`` the achieved goal of a step drawn uniformly from the row's next step to its
    episode's last (one float64 uniform per row from ``generator``, or torch's global RNG when it
    is None); ``"final"`` the achieved goal of the episode's last step; ``"desired"`` the row's
    desired goal. An episode's last row has no later step: its ``"future"`` goal is its own
    achieved goal, as :func:`~ttrl.data.goals.hindsight_goal_steps` clamps it.

    Raises:
        TtrlError: an unknown ``relabel``, or a batch without goal fields (loaded without
            ``data.goal``).
    """
    check_relabel(relabel)
    if not (isinstance(batch, GoalTransitionBatch) and isinstance(split, GoalTransitionBatch)):
        raise TtrlError(
            "these transitions hold no goal fields; load them with data.goal set (a dataset "
            "whose dict observations hold achieved_goal and desired_goal, e.g. pointmaze-umaze)"
        )
    uniforms = None
    if relabel == "future":
        device = generator.device if generator is not None else batch.rows.device
        uniforms = torch.rand(
            len(batch), generator=generator, dtype=torch.float64, device=device
        ).to(batch.rows.device)
    steps = hindsight_goal_steps(batch.rows, batch.episode_last, relabel, uniforms)
    source = split.desired_goals if relabel == "desired" else split.achieved_goals
    return dataclasses.replace(batch, goals=source[steps])


@dataclass
class BaselineData:
    """A dataset's transitions, split by episode into training and validation rows.

    With ``goal`` (``data.goal``) both splits carry the goal fields and the validation rows their
    fixed hindsight goals; the training rows get theirs per minibatch (:func:`with_hindsight_goals`).
    """

    dataset: str
    train: TransitionBatch
    val: TransitionBatch | None  # None when data.val_fraction is 0
    val_episodes: np.ndarray  # int64: the held-out episodes' indices, sorted
    observation_dim: int
    action_dim: int
    goal: str | None = None  # the hindsight relabelling (data.goal), None without goals
    env_id: str | None = None  # the dataset's gymnasium env (None when its metadata names none)

    @property
    def goal_dim(self) -> int:
        """``G``, the size of a goal (0 without ``goal``)."""
        return self.train.goal_dim if isinstance(self.train, GoalTransitionBatch) else 0


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


def transition_batch(
    transitions: Transitions, rows: np.ndarray, goals: bool = False
) -> TransitionBatch:
    """The ``rows`` of ``transitions`` (CPU tensors), with successors within each episode.

    ``rows`` must hold whole episodes, in order. ``goals``: a :class:`GoalTransitionBatch`, with
    their goal fields, row numbers and episode ends; the dataset must have goal fields.
    """
    starts, lengths = episode_bounds(transitions)
    ends = np.zeros(len(transitions), dtype=bool)
    ends[starts + lengths - 1] = True
    successor = np.where(ends, np.arange(len(transitions)), np.arange(len(transitions)) + 1)
    observations = transitions.observations.astype(np.float32, copy=False)

    def tensor(array: np.ndarray, dtype: Any = np.float32) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array[rows], dtype=dtype))

    batch = TransitionBatch(
        observations=tensor(observations),
        actions=tensor(transitions.actions),
        rewards=tensor(transitions.rewards),
        next_observations=tensor(observations[successor]),
        terminals=tensor(transitions.terminals, bool),
        episode_ends=tensor(ends, bool),
    )
    if not goals:
        return batch
    achieved, desired = goal_arrays(transitions)
    last_step = np.repeat(starts + lengths - 1, lengths)  # of each dataset row's episode
    return GoalTransitionBatch(
        **{f.name: getattr(batch, f.name) for f in fields(batch)},
        achieved_goals=tensor(achieved),
        desired_goals=tensor(desired),
        rows=torch.arange(len(rows)),
        # whole episodes, in order: each episode's last step is a row of this split too
        episode_last=torch.from_numpy(np.searchsorted(rows, last_step[rows])),
    )


def split_transitions(
    transitions: Transitions,
    dataset: str,
    val_fraction: float,
    seed: int,
    goal: str | None = None,
    env_id: str | None = None,
) -> BaselineData:
    """Split ``transitions`` by episode as the transformer's training splits its windows.

    ``goal``: a relabelling of :data:`~ttrl.data.goals.RELABELLINGS` (``data.goal``): both splits
    carry the goal fields, and the validation rows get their fixed goals (see the module docstring).

    Raises:
        TtrlError: no transitions, an unknown ``goal``, or ``goal`` on a dataset without goal fields.
    """
    if len(transitions) == 0:
        raise TtrlError(f"dataset {dataset} holds no transitions; make it again")
    if goal is not None:
        check_relabel(goal)
        goal_arrays(transitions)  # one line, before any work, if the dataset has no goals
    _, lengths = episode_bounds(transitions)
    held_out = (
        validation_episodes(lengths, val_fraction, seed)
        if val_fraction > 0
        else np.zeros(0, dtype=np.int64)
    )
    episode_of_row = np.repeat(np.arange(len(lengths)), lengths)
    is_val = np.isin(episode_of_row, held_out)
    with_goals = goal is not None
    val = None
    if is_val.any():
        val = transition_batch(transitions, np.flatnonzero(is_val), with_goals)
        if goal is not None:  # the same goals in every validation pass
            generator = torch.Generator().manual_seed(VALIDATION_GOAL_SEED)
            val = with_hindsight_goals(val, val, goal, generator)
    return BaselineData(
        dataset=dataset,
        train=transition_batch(transitions, np.flatnonzero(~is_val), with_goals),
        val=val,
        val_episodes=held_out,
        observation_dim=transitions.observation_dim,
        action_dim=transitions.action_dim,
        goal=goal,
        env_id=env_id,
    )


def load_baseline_data(
    dataset: str,
    source: str = "auto",
    val_fraction: float = 0.05,
    seed: int = 0,
    goal: str | None = None,
    observe_goal: bool = False,
) -> BaselineData:
    """Load ``dataset`` (from ``source``, see :func:`~ttrl.data.resolve_dataset`) and split it,
    with hindsight ``goal`` fields when given (see :func:`split_transitions`). ``observe_goal``
    reads it as the transformer's ``data.observe_goal`` does
    (:func:`~ttrl.data.goals.observe_desired_goal`)."""
    spec = resolve_dataset(dataset, source)
    transitions = load_transitions(spec)
    if observe_goal:
        from ttrl.data.goals import observe_desired_goal

        transitions = observe_desired_goal(transitions)
    return split_transitions(transitions, dataset, val_fraction, seed, goal, spec.env_id)
