"""Beam search guided by a learned Q-function (``planner.objective=q``, ``planner.q_run=<IQL run>``).

The paper replaces the Monte-Carlo value estimate of the search with the Q-function learned by IQL
for sparse-reward mazes, but gives no formula and released no code. ttrl's reading: after planning
step ``t`` a candidate scores

    sum_{i<t} discount^i r_i  +  discount^t * min(Q1, Q2)(s_t, a_t)

with the transformer's expected rewards ``r_i`` for the earlier steps and the state and action of
step ``t`` decoded to bin midpoints; Q already holds ``r_t`` and what follows. Q is divided by the
IQL run's ``reward_scale`` so that both terms are in the dataset's reward units. The variant
``planner.q_heuristic=v`` uses ``V(s_t)`` in place of ``Q(s_t, a_t)``. Every candidate of every
environment goes through the Q network in one call per planning step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout
from ttrl.planning.scorers import Candidates

Q_HEURISTICS = ("q", "v")


class QFunction(Protocol):
    """What the scorer needs of a Q-learner (``ttrl.baselines.iql.IQLModel`` has it)."""

    observation_dim: int
    action_dim: int
    reward_scale: float  # Q and V are in units of reward_scale * reward

    def q_value(self, observations: Tensor, actions: Tensor) -> Tensor: ...

    def value(self, observations: Tensor) -> Tensor: ...


class QGuidedScorer:
    """Discounted expected rewards before step ``t``, then the learned ``Q(s_t, a_t)`` (or ``V``)."""

    uses_likelihood = False

    def __init__(self, q_function: QFunction, heuristic: str = "q") -> None:
        if heuristic not in Q_HEURISTICS:
            raise TtrlError(
                f"planner.q_heuristic={heuristic!r} is not one of {', '.join(Q_HEURISTICS)}"
            )
        self.q_function, self.heuristic = q_function, heuristic

    def check_layout(self, layout: TransitionLayout) -> None:
        """One line when the Q network's dims are not the transformer's."""
        q = self.q_function
        if (q.observation_dim, q.action_dim) != (layout.observation_dim, layout.action_dim):
            raise TtrlError(
                f"the Q network takes observations of {q.observation_dim} and actions of "
                f"{q.action_dim} dims, but the transformer's are {layout.observation_dim} and "
                f"{layout.action_dim}; train the Q run on the transformer's dataset"
            )

    def score(self, candidates: Candidates) -> Tensor:
        t = candidates.step
        state, action = candidates.decoded_state_action()
        with torch.no_grad():
            if self.heuristic == "q":
                heuristic = self.q_function.q_value(state, action)
            else:
                heuristic = self.q_function.value(state)
        rewards = candidates.rewards[:, :t]
        discounts = candidates.discount ** torch.arange(
            t + 1, dtype=rewards.dtype, device=rewards.device
        )
        # back to the dataset's reward units, those of the transformer's rewards
        heuristic = heuristic.to(device=rewards.device, dtype=rewards.dtype)
        heuristic = heuristic / self.q_function.reward_scale
        return (rewards * discounts[:t]).sum(-1) + discounts[t] * heuristic


def load_q_scorer(settings: Any) -> QGuidedScorer:
    """The scorer of ``planner.objective=q``: the IQL model of run ``settings.q_run``."""
    q_run = getattr(settings, "q_run", None)
    if not q_run:
        raise TtrlError(
            "planner.objective=q needs planner.q_run=<run dir of scripts/train_q.py> (an IQL "
            "Q-function trained on the same dataset)"
        )
    from ttrl.baselines.iql import IQLModel

    model = IQLModel.load(q_checkpoint(q_run)).eval()
    return QGuidedScorer(model, getattr(settings, "q_heuristic", "q"))


def q_checkpoint(q_run: str | os.PathLike) -> Path:
    """The Q run's checkpoint file; one line when there is none."""
    from ttrl.checkpoint import checkpoint_path

    path = checkpoint_path(q_run, "last")
    if not path.is_file():
        raise TtrlError(
            f"planner.q_run={q_run} holds no {path.relative_to(Path(q_run))}; train one with "
            f"`python scripts/train_q.py env=<dataset> run_dir={q_run}`"
        )
    return path


def check_q_run_dataset(q_run: str | os.PathLike, dataset: str) -> None:
    """One line when the Q run was trained on another dataset than the one planned on."""
    from ttrl.checkpoint import load_bundle

    trained_on = ((load_bundle(q_checkpoint(q_run)).get("config") or {}).get("env") or {}).get(
        "name"
    )
    if trained_on is not None and trained_on != dataset:
        raise TtrlError(
            f"planner.q_run={q_run} was trained on {trained_on!r}, but the transformer plans on "
            f"{dataset!r}; train a Q run on {dataset!r}"
        )
