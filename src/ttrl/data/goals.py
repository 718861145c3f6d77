"""Training windows for the goal-conditioned Trajectory Transformer: each window with a goal.

A goal-conditioned model (``TrajectoryTransformerConfig.goal_dim = G``) reads ``G`` goal tokens
before every window. The goals come from the dataset's dict observations (PointMaze's
``achieved_goal`` / ``desired_goal``, :attr:`ttrl.data.loading.Transitions.goals`) by hindsight
relabelling, chosen with ``relabel``; for the window that starts at step ``t`` of an episode whose
last step is ``t_end``:

- ``"future"``: the achieved goal at a step drawn uniformly from ``t+1 .. t_end`` (later than the
  window's start), drawn again every time the window is sampled (HER's "future" strategy);
- ``"final"``: the achieved goal at ``t_end``, the episode's final state (the released code's
  ``GoalDataset``; with flat data this is the state the last action was taken in);
- ``"desired"``: the dataset's ``desired_goal`` at ``t``, the goal the behaviour policy was
  pursuing (PointMaze's datasets move it whenever it is reached).

**How goals are discretised.** The goal dims get their own bin edges: a
:class:`~ttrl.discretization.Discretizer` of the same kind and ``N`` as the trajectory's, fitted on
the achieved and desired goals together (:func:`fit_goal_discretizer`), stored beside the
trajectory's one (its ``state_dict``). Why not reuse the observation dims' bins: the goal need not
be part of the observation (AntMaze's observation leaves out the x, y that its goals are), the
desired goals that evaluation plans to must fall inside the edges (fitting on both fields ensures
it), and the model embeds goal tokens with a table of their own anyway, so nothing requires a goal
token to be the observation token of the same value.

Reward and value tokens are kept as they are (the released code does the same), so a goal model
still plans by return or by likelihood.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch

from ttrl.data.loading import Transitions
from ttrl.data.preprocess import MAX_PATH_LENGTH, Trajectories, episode_bounds
from ttrl.data.registry import SUCCESS_DISTANCE
from ttrl.data.sequences import TokenDataset, stored_episode_rows, token_dtype
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError

RELABELLINGS = ("future", "final", "desired")
ACHIEVED_GOAL, DESIRED_GOAL = "achieved_goal", "desired_goal"
VALIDATION_GOAL_SEED = 0  # "future" goals of iter_windows: the same ones every validation pass

GoalBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def check_relabel(relabel: str) -> None:
    """Raise one :class:`TtrlError` line unless ``relabel`` is one of :data:`RELABELLINGS`."""
    if relabel not in RELABELLINGS:
        raise TtrlError(
            f"unknown goal relabelling {relabel!r}; use one of {', '.join(RELABELLINGS)}"
        )


def fit_goal_discretizer(
    transitions: Transitions, n_bins: int = 100, kind: str = "quantile"
) -> Discretizer:
    """Bin edges for the goal dims: ``kind`` and ``n_bins`` as the trajectory's discretiser, fit on
    the achieved and desired goals of every step together (see the module docstring).

    Raises:
        TtrlError: the dataset lacks a goal field (one line, from :meth:`Transitions.goal`), or its
            two goal fields differ in size.
    """
    achieved, desired = goal_arrays(transitions)
    return Discretizer.fit(np.concatenate([achieved, desired]), n_bins=n_bins, kind=kind)


def hindsight_goal_steps(
    first: torch.Tensor, last: torch.Tensor, relabel: str, uniforms: torch.Tensor | None = None
) -> torch.Tensor:
    """The step whose goal each window gets, for windows starting at step ``first`` of episodes
    ending at step ``last`` (both long ``[B]``, rows of the dataset).

    ``"future"`` needs ``uniforms [B]`` in ``[0, 1)`` (float64): the step is
    ``first + 1 + floor(u * (last - first))``, uniform over ``first + 1 .. last``. ``"final"`` gives
    ``last``, ``"desired"`` ``first`` (read from the desired goals).
    """
    check_relabel(relabel)
    if relabel == "final":
        return last
    if relabel == "desired":
        return first
    if uniforms is None:
        raise TtrlError('the "future" relabelling draws a later step: pass uniforms')
    later = torch.floor(uniforms.to(torch.float64) * (last - first).to(torch.float64))
    return torch.minimum(first + 1 + later.long(), last)  # u rounded up to 1 stays in the episode


class GoalTokenDataset:
    """:class:`~ttrl.data.sequences.TokenDataset` windows, each with its goal's tokens.

    Build one with :meth:`build`. :meth:`windows`, :meth:`sample` and :meth:`iter_windows` give
    ``(x, y, mask, goals)`` (the token dataset's methods, plus the goals): ``x, y, mask`` as it
    gives them, ``goals`` long ``[B, G]``, for
    ``model(x, goals=goals, targets=y, attention_mask=mask)``.

    Attributes:
        trajectory_windows: the windows without goals (split, device and storage are shared).
        achieved, desired: ``[n_rows, G]`` goal tokens of every dataset step (uint8/int16).
        episode_starts, episode_lengths: int64 ``[E]``, each episode's first row and length.
        episode_token_starts: int64 ``[E]``, each episode's first row in ``trajectory_windows.tokens``.
        relabel: one of :data:`RELABELLINGS`.
    """

    def __init__(
        self,
        trajectory_windows: TokenDataset,
        achieved: torch.Tensor,
        desired: torch.Tensor,
        episode_starts: torch.Tensor,
        episode_lengths: torch.Tensor,
        episode_token_starts: torch.Tensor,
        relabel: str,
    ) -> None:
        check_relabel(relabel)
        self.trajectory_windows = trajectory_windows
        self.achieved = achieved
        self.desired = desired
        self.episode_starts = episode_starts
        self.episode_lengths = episode_lengths
        self.episode_token_starts = episode_token_starts
        self.relabel = relabel

    @classmethod
    def build(
        cls,
        trajectories: Trajectories,
        transitions: Transitions,
        discretizer: Discretizer,
        goal_discretizer: Discretizer,
        relabel: str = "future",
        sequence_length: int = 10,
        max_path_length: int = MAX_PATH_LENGTH,
        hidden_observation_dims: Sequence[int] = (),
    ) -> GoalTokenDataset:
        """Tokenise ``trajectories`` (made from ``transitions`` by ``preprocess``) into windows as
        :meth:`TokenDataset.build` does, and encode ``transitions``' goals with ``goal_discretizer``.

        Raises:
            TtrlError: an unknown ``relabel``; the dataset lacks a goal field (one line, from
                :meth:`Transitions.goal`); goals that do not fit the discretiser or the rows.
        """
        check_relabel(relabel)
        achieved, desired = goal_arrays(transitions)
        n_rows = len(trajectories)
        # released_compat drops the dataset's last step: the rows are the first n_rows steps
        if len(achieved) < n_rows:
            raise TtrlError(
                f"{transitions.source} has goals for {len(achieved)} steps but the trajectories "
                f"{n_rows}; preprocess these transitions"
            )
        if goal_discretizer.transition_dim != achieved.shape[1]:
            raise TtrlError(
                f"the goal discretizer has {goal_discretizer.transition_dim} dims but the goals "
                f"{achieved.shape[1]}; fit it with fit_goal_discretizer on this dataset"
            )
        if goal_discretizer.n_bins != discretizer.n_bins:
            raise TtrlError(
                f"the goal discretizer has {goal_discretizer.n_bins} bins but the trajectory's "
                f"{discretizer.n_bins}; fit both with the same n_bins"
            )
        windows = TokenDataset.build(
            trajectories,
            discretizer,
            sequence_length=sequence_length,
            max_path_length=max_path_length,
            hidden_observation_dims=hidden_observation_dims,
        )
        dtype = token_dtype(goal_discretizer.n_bins)
        lengths = trajectories.episode_lengths
        _, token_starts = stored_episode_rows(lengths, sequence_length)
        return cls(
            trajectory_windows=windows,
            achieved=torch.from_numpy(goal_discretizer.encode(achieved[:n_rows]).astype(dtype)),
            desired=torch.from_numpy(goal_discretizer.encode(desired[:n_rows]).astype(dtype)),
            episode_starts=torch.from_numpy(trajectories.episode_starts.astype(np.int64)),
            episode_lengths=torch.from_numpy(lengths.astype(np.int64)),
            episode_token_starts=torch.from_numpy(token_starts.astype(np.int64)),
            relabel=relabel,
        )

    # ------------------------------------------------------------------------------ properties
    @property
    def goal_dim(self) -> int:
        """``G``: goal tokens per window (the model's ``goal_dim``)."""
        return int(self.achieved.shape[1])

    @property
    def device(self) -> torch.device:
        return self.trajectory_windows.device

    def __len__(self) -> int:
        return len(self.trajectory_windows)

    # ---------------------------------------------------------------------------------- access
    def window_steps(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset rows of each window's first step and of its episode's last step (long ``[B]``)."""
        indices = indices.to(self.device)
        episodes = self.trajectory_windows.window_episodes[indices]
        offsets = self.trajectory_windows.window_rows[indices] - self.episode_token_starts[episodes]
        first = self.episode_starts[episodes] + offsets
        last = self.episode_starts[episodes] + self.episode_lengths[episodes] - 1
        return first, last

    def goals(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Goal tokens ``[B, G]`` (long) of the windows with these indices, relabelled as
        :attr:`relabel` says; ``"future"`` draws ``B`` float64 uniforms from ``generator``."""
        first, last = self.window_steps(indices)
        uniforms = None
        if self.relabel == "future":
            device = generator.device if generator is not None else self.device
            uniforms = torch.rand(
                first.shape[0], generator=generator, dtype=torch.float64, device=device
            ).to(self.device)
        steps = hindsight_goal_steps(first, last, self.relabel, uniforms)
        source = self.desired if self.relabel == "desired" else self.achieved
        return source[steps].long()

    def windows(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> GoalBatch:
        """``(x, y, mask, goals)`` for the windows with these indices."""
        x, y, mask = self.trajectory_windows.windows(indices)
        return x, y, mask, self.goals(indices, generator)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> GoalBatch:
        """A batch of windows drawn uniformly with replacement, then (``"future"``) their goals,
        both from ``generator``."""
        if len(self) == 0:
            raise TtrlError("cannot sample from an empty dataset; lower the validation fraction")
        device = generator.device if generator is not None else self.device
        indices = torch.randint(len(self), (batch_size,), generator=generator, device=device)
        return self.windows(indices, generator)

    def iter_windows(self, batch_size: int) -> Iterator[GoalBatch]:
        """Every window once, in order (for validation); ``"future"`` goals come from a generator
        seeded with :data:`VALIDATION_GOAL_SEED`, so every pass sees the same goals."""
        generator = torch.Generator(self.device).manual_seed(VALIDATION_GOAL_SEED)
        for start in range(0, len(self), batch_size):
            indices = torch.arange(start, min(start + batch_size, len(self)), device=self.device)
            yield self.windows(indices, generator)

    def split(
        self, val_fraction: float, seed: int = 0
    ) -> tuple[GoalTokenDataset, GoalTokenDataset]:
        """Split by episode exactly as :meth:`TokenDataset.split`; both parts share the storage."""
        train, val = self.trajectory_windows.split(val_fraction, seed)
        return self._with_windows(train), self._with_windows(val)

    def to(self, device: torch.device | str) -> GoalTokenDataset:
        """Move the storage to ``device`` (in place); returns ``self``."""
        self.trajectory_windows.to(device)
        for name in (
            "achieved",
            "desired",
            "episode_starts",
            "episode_lengths",
            "episode_token_starts",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _with_windows(self, windows: TokenDataset) -> GoalTokenDataset:
        return GoalTokenDataset(
            windows,
            self.achieved,
            self.desired,
            self.episode_starts,
            self.episode_lengths,
            self.episode_token_starts,
            self.relabel,
        )

    def __repr__(self) -> str:
        return (
            f"GoalTokenDataset(windows={len(self)}, goal_dim={self.goal_dim}, "
            f"relabel={self.relabel!r}, sequence_length={self.trajectory_windows.sequence_length}, "
            f"device={self.device})"
        )


def observe_desired_goal(transitions: Transitions) -> Transitions:
    """``transitions`` for an agent that sees its goal in its observation (``data.observe_goal``):
    each observation followed by the goal pursued at that step, and every step that reached its
    goal the (terminal) end of its episode.

    This is how reward-driven agents (IQL, TT planning by return or by Q) learn goal reaching from
    a continuing goal dataset (PointMaze's): the evaluation task ends at the goal
    (``continuing_task=False``), so a reached goal is a terminal success (paying the sparse reward
    1) and what the behaviour policy did next, for its next goal, starts an episode of its own.

    - **Reached**: step ``t`` of an episode reached its goal when the position after it
      (``achieved_goal[t + 1]``) lies within :data:`~ttrl.data.registry.SUCCESS_DISTANCE` of the
      goal pursued at ``t``; such steps become terminals (the episode's last step stays as it was:
      its successor is not in the data).
    - **Pursued goal**: the ``desired_goal`` of step ``t``, but one step late after a success:
      gymnasium-robotics builds the observation before it moves the goal, so the observation
      right after a success still shows the old goal while the env (and that step's reward)
      already pursue the new one, which the observation after it shows.

    Raises:
        TtrlError: the dataset lacks goal fields (one line).
    """
    achieved, desired = goal_arrays(transitions)
    starts, lengths = episode_bounds(transitions)
    last = np.zeros(len(transitions), dtype=bool)
    last[starts + lengths - 1] = True
    inner = np.flatnonzero(~last)  # steps whose successor is in the same episode
    moved = np.zeros(len(transitions), dtype=bool)  # the next observation shows another goal
    moved[inner] = (desired[inner + 1] != desired[inner]).any(axis=1)
    stale = moved & np.roll(_reached(achieved, desired, inner, SUCCESS_DISTANCE), 1)
    stale[starts] = False  # an episode's first observation follows no success of its own
    pursued = desired.copy()
    pursued[stale] = desired[np.flatnonzero(stale) + 1]
    reached = _reached(achieved, pursued, inner, SUCCESS_DISTANCE)
    observations = np.concatenate([transitions.observations, pursued], axis=1)
    return replace(
        transitions,
        observations=observations.astype(np.float32, copy=False),
        terminals=transitions.terminals | reached,
        timeouts=transitions.timeouts & ~reached,
    )


def _reached(
    achieved: np.ndarray, goals: np.ndarray, inner: np.ndarray, radius: float
) -> np.ndarray:
    """Whether each step brought the position within ``radius`` of ``goals`` at that step."""
    reached = np.zeros(len(achieved), dtype=bool)
    reached[inner] = np.linalg.norm(achieved[inner + 1] - goals[inner], axis=1) <= radius
    return reached


def goal_arrays(transitions: Transitions) -> tuple[np.ndarray, np.ndarray]:
    """The achieved and desired goals ``[N, G]``; one :class:`TtrlError` line if the dataset lacks
    either (:meth:`~ttrl.data.loading.Transitions.goal`'s) or they differ in size."""
    achieved, desired = transitions.goal(ACHIEVED_GOAL), transitions.goal(DESIRED_GOAL)
    if achieved.shape[1] != desired.shape[1]:
        raise TtrlError(
            f"{transitions.source}: achieved_goal has {achieved.shape[1]} dims but desired_goal "
            f"{desired.shape[1]}; goals must live in one space"
        )
    return achieved, desired
