"""Plan scorers: how beam search ranks its candidate plans (``planner.objective``).

After the reward and value of planning step ``t`` are predicted, the search hands every candidate
plan of every environment to the scorer as one :class:`Candidates` batch and keeps the
``beam_width`` best of each environment. A scorer is anything with ``score(candidates) -> [rows]``
(:class:`PlanScorer`); the two of the paper are built in:

- ``return`` (:class:`ReturnScorer`): ``sum_{i<=t} discount^i r_i + discount^(t+1) V_t`` with the
  expected (not sampled) rewards and values, as the released planner does;
- ``likelihood`` (:class:`LikelihoodScorer`): the log-probability of every token sampled in the
  plan so far, under the unfiltered distributions (imitation).

and one for sparse rewards: ``q`` (:mod:`ttrl.planning.q_guided`), guided by an IQL Q-function
(``planner.q_run``).

A new scorer is registered by name, from Python (:func:`register_scorer`) or by an installed
package's entry point in the group ``ttrl.plan_scorers``, and then chosen in config:
``planner.objective=<name>``. Names only: a config (which may come from someone else's run dir)
never names code to import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout

ENTRY_POINT_GROUP = "ttrl.plan_scorers"


@dataclass
class Candidates:
    """What the search predicted for its candidate plans at planning step ``step``.

    Rows are environment-major (``row_env[i]`` is row ``i``'s environment). ``sequences[:, start:]``
    are the planned tokens so far: whole transitions ``[s, a, r, V]`` for steps ``0..step``.
    """

    step: int
    horizon: int  # H, the steps the search plans
    sequences: Tensor  # [rows, length] long: context, then the plan
    plan_start: int  # where the plan starts in ``sequences`` (at s_0)
    rewards: Tensor  # [rows, step + 1] expected rewards r_0 .. r_t
    values: Tensor  # [rows, step + 1] expected values V_0 .. V_t
    log_likelihood: Tensor  # [rows] of the sampled plan tokens (0 unless the scorer asks for it)
    row_env: Tensor  # [rows] the environment of each row
    discount: float
    discretizer: Any
    observation_dim: int
    action_dim: int

    @property
    def transition_dim(self) -> int:
        """Tokens per transition, ``S + A + 2``."""
        return TransitionLayout(self.observation_dim, self.action_dim).transition_dim

    def step_tokens(self, step: int | None = None) -> Tensor:
        """``[rows, T]``: the tokens of planning step ``step`` (default: the current one)."""
        step = self.step if step is None else step
        begin = self.plan_start + step * self.transition_dim
        return self.sequences[:, begin : begin + self.transition_dim]

    def decoded_state_action(self, step: int | None = None) -> tuple[Tensor, Tensor]:
        """``([rows, S], [rows, A])``: step ``step``'s state and action decoded to bin midpoints."""
        S, A = self.observation_dim, self.action_dim
        tokens = self.step_tokens(step)[:, : S + A].clamp(max=self.discretizer.n_bins - 1)
        decoded = torch.as_tensor(self.discretizer.decode(tokens, dims=slice(0, S + A)))
        decoded = decoded.to(device=self.rewards.device, dtype=self.rewards.dtype)
        return decoded[:, :S], decoded[:, S:]


@runtime_checkable
class PlanScorer(Protocol):
    """Ranks candidate plans: higher is better. ``uses_likelihood`` asks the search to sum the
    log-probabilities of the sampled tokens into ``Candidates.log_likelihood``."""

    uses_likelihood: bool

    def score(self, candidates: Candidates) -> Tensor:
        """``[rows]`` scores of the candidate plans."""
        ...


class ReturnScorer:
    """The paper's objective: discounted expected rewards so far plus the discounted last value."""

    uses_likelihood = False

    def score(self, candidates: Candidates) -> Tensor:
        t, H = candidates.step, candidates.horizon
        rewards = candidates.rewards
        # One sum over H + 1 terms (zeros past t + 1), as the released planner adds them up.
        terms = rewards.new_zeros(rewards.shape[0], H + 1)
        terms[:, : t + 1] = rewards
        terms[:, t + 1] = candidates.values[:, t]
        discounts = candidates.discount ** torch.arange(
            H + 1, dtype=rewards.dtype, device=rewards.device
        )
        return (terms * discounts).sum(-1)


class LikelihoodScorer:
    """Imitation: the log-likelihood of the plan's sampled tokens."""

    uses_likelihood = True

    def score(self, candidates: Candidates) -> Tensor:
        return candidates.log_likelihood


def _q_guided(settings: Any) -> PlanScorer:
    from ttrl.planning.q_guided import load_q_scorer  # loads the IQL run named in the settings

    return load_q_scorer(settings)


_SCORERS: dict[str, Callable[..., PlanScorer]] = {
    "return": ReturnScorer,
    "likelihood": LikelihoodScorer,
    "q": _q_guided,
}
_TAKE_SETTINGS = {"q"}  # factories called with the planner's settings (the others with nothing)


def register_scorer(
    name: str, factory: Callable[..., PlanScorer], needs_settings: bool = False
) -> None:
    """Make ``planner.objective=<name>`` build a scorer with ``factory()`` (``factory(settings)``,
    the :class:`~ttrl.planning.PlannerConfig`, with ``needs_settings``)."""
    if not name or not isinstance(name, str):
        raise TtrlError(f"a scorer needs a non-empty name, got {name!r}")
    _SCORERS[name] = factory
    (_TAKE_SETTINGS.add if needs_settings else _TAKE_SETTINGS.discard)(name)


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _SCORERS.setdefault(entry.name, entry.load())


def available_scorers() -> tuple[str, ...]:
    """The names ``planner.objective`` accepts."""
    _load_entry_points()
    return tuple(_SCORERS)


def build_scorer(name: str, settings: Any = None) -> PlanScorer:
    """The scorer registered as ``name`` (given ``settings`` if it asks for them); one line naming
    the choices when there is none."""
    if name not in _SCORERS:
        _load_entry_points()
    if name not in _SCORERS:
        raise TtrlError(
            f"planner objective={name!r} is unknown; use one of {', '.join(_SCORERS)} (or "
            f"register a scorer with ttrl.planning.register_scorer or the "
            f"{ENTRY_POINT_GROUP!r} entry point group)"
        )
    scorer = _SCORERS[name](settings) if name in _TAKE_SETTINGS else _SCORERS[name]()
    if not isinstance(scorer, PlanScorer):
        raise TtrlError(
            f"scorer {name!r} has no score(candidates) method and uses_likelihood attribute; "
            f"see docs/scorers.md"
        )
    return scorer
