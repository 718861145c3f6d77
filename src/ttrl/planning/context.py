"""The planner's input for each environment: its last executed transitions and its observation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout


class PlanningContext:
    """Rolling, discretised context of ``n_envs`` environments stepped together.

    Each environment keeps its last ``context_transitions`` executed transitions ``[s, a, r, 0]``
    (the real reward; the value is a placeholder 0, which the model never attends to) and its current
    observation. Environments are addressed by a fixed index ``0 .. n_envs - 1``; finished ones are
    removed with :meth:`remove` (or ``done`` in :meth:`append`) and drop out of :meth:`prefix`.

    Example::

        context = PlanningContext(discretizer, 17, 6, n_envs=4, context_transitions=5)
        context.reset(observations)                          # [4, 17]
        plan = planner.plan(context.prefix())                # all active envs
        context.append(context.active, actions, rewards, next_observations, done=dones)
    """

    def __init__(
        self,
        discretizer: Any,
        observation_dim: int,
        action_dim: int,
        n_envs: int,
        context_transitions: int = 5,
        device: torch.device | str = "cpu",
    ) -> None:
        if n_envs < 1:
            raise TtrlError(f"PlanningContext needs n_envs >= 1, got {n_envs}")
        self.discretizer = discretizer
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.n_envs = n_envs
        self.context_transitions = context_transitions
        self.device = torch.device(device)
        self._transitions: list[np.ndarray] = []  # per env: tokens [k, T], oldest first
        self._observations = np.zeros((0, observation_dim), dtype=np.int64)  # tokens [n_envs, S]
        self._active: list[bool] = []

    @property
    def active(self) -> list[int]:
        """Indices of the environments still being planned for."""
        return [i for i, running in enumerate(self._active) if running]

    def reset(self, observations: np.ndarray | torch.Tensor) -> None:
        """Start all environments at ``observations [n_envs, S]`` with empty contexts."""
        observations = _as_rows(observations, self.n_envs, self.observation_dim, "observations")
        self._observations = self._encode(observations, slice(0, self.observation_dim))
        transition_dim = TransitionLayout(self.observation_dim, self.action_dim).transition_dim
        self._transitions = [np.zeros((0, transition_dim), dtype=np.int64)] * self.n_envs
        self._active = [True] * self.n_envs

    def append(
        self,
        rows: Sequence[int],
        actions: np.ndarray | torch.Tensor,
        rewards: np.ndarray | torch.Tensor,
        next_observations: np.ndarray | torch.Tensor,
        done: Sequence[bool] | np.ndarray | None = None,
    ) -> None:
        """Record that environments ``rows`` executed ``actions [n, A]``, got ``rewards [n]`` and
        now observe ``next_observations [n, S]``; those with ``done`` are removed afterwards."""
        rows = self._check_rows(rows)
        n, S, A = len(rows), self.observation_dim, self.action_dim
        actions = _as_rows(actions, n, A, "actions")
        rewards = _as_rows(np.reshape(_numpy(rewards), (-1, 1)), n, 1, "rewards")
        next_observations = _as_rows(next_observations, n, S, "next_observations")
        executed = np.concatenate(
            [
                self._observations[rows],
                self._encode(actions, slice(S, S + A)),
                self._encode(
                    np.concatenate([rewards, np.zeros_like(rewards)], 1), slice(S + A, None)
                ),
            ],
            axis=1,
        )
        keep = self.context_transitions
        for row, transition in zip(rows, executed, strict=True):
            history = np.concatenate([self._transitions[row], transition[None]])
            self._transitions[row] = history[-keep:] if keep else history[:0]
        self._observations[rows] = self._encode(next_observations, slice(0, S))
        if done is not None:
            self.remove([row for row, finished in zip(rows, done, strict=True) if finished])

    def remove(self, rows: Sequence[int]) -> None:
        """Stop planning for environments ``rows`` (e.g. their episodes ended)."""
        for row in self._check_rows(rows):
            self._active[row] = False

    def prefix(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Tokens ``[len(rows), L]``: context transitions then the current observation.

        ``rows`` defaults to the active environments; all of them must hold as many transitions.
        """
        rows = self.active if rows is None else self._check_rows(rows)
        if not rows:
            raise TtrlError("no environment left to plan for; reset the context or pass rows")
        lengths = {len(self._transitions[row]) for row in rows}
        if len(lengths) > 1:
            raise TtrlError(
                f"environments {list(rows)} hold different numbers of context transitions "
                f"{sorted(lengths)}; plan environments that started together in one call"
            )
        tokens = [
            np.concatenate([self._transitions[row].reshape(-1), self._observations[row]])
            for row in rows
        ]
        return torch.as_tensor(np.stack(tokens), dtype=torch.long, device=self.device)

    def _encode(self, values: np.ndarray, dims: slice) -> np.ndarray:
        return np.asarray(self.discretizer.encode(values, dims=dims), dtype=np.int64)

    def _check_rows(self, rows: Sequence[int]) -> list[int]:
        if not self._active:
            raise TtrlError("PlanningContext was never reset; call reset(observations) first")
        rows = [int(row) for row in rows]
        for row in rows:
            if not 0 <= row < self.n_envs:
                raise TtrlError(f"environment index {row} is outside 0..{self.n_envs - 1}")
            if not self._active[row]:
                raise TtrlError(f"environment {row} was removed; reset the context to reuse it")
        return rows


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_rows(x: np.ndarray | torch.Tensor, n: int, width: int, name: str) -> np.ndarray:
    """``x`` as a float64 array ``[n, width]``, or a TtrlError naming the expected shape."""
    array = _numpy(x).astype(np.float64)
    if array.shape != (n, width):
        raise TtrlError(f"{name} must have shape ({n}, {width}), got {array.shape}")
    return array
