"""Open-loop rollouts: the model samples whole transitions after a prefix, or the consequences of
given actions, through the same sampling API as beam search (:class:`~ttrl.planning.state.RolloutState`:
its window, cache and sampler).

    rollout = sample_rollout(model, discretizer, context.prefix(), n_transitions=100)
    rollout.observations       # [rows, n, S] predicted next states (bin midpoints)
    rollout = sample_rollout(model, discretizer, prefix, 100, actions=dataset_actions)  # [rows, n, A]

Each row is its own trajectory (rows are planned together in one model batch). The model sees at
most ``window_transitions`` transitions, cropped from the front by whole transitions as in planning,
so a rollout may be far longer than the model's block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout
from ttrl.planning.beam import check_goals
from ttrl.planning.decoder import CachedDecoder
from ttrl.planning.state import RolloutState
from ttrl.planning.window import ModelWindow


@dataclass(frozen=True)
class TokenFilter:
    """How tokens of one kind are drawn: ``top_k=1`` is greedy; None and None is plain sampling."""

    top_k: int | None = None
    cdf: float | None = None


@dataclass(frozen=True)
class Sampling:
    """A :class:`TokenFilter` for each kind of token (defaults: sample everything unfiltered)."""

    observation: TokenFilter = field(default_factory=TokenFilter)
    action: TokenFilter = field(default_factory=TokenFilter)
    reward: TokenFilter = field(default_factory=TokenFilter)
    value: TokenFilter = field(default_factory=TokenFilter)

    @classmethod
    def greedy(cls) -> Sampling:
        """The most likely token everywhere."""
        one = TokenFilter(top_k=1)
        return cls(one, one, one, one)


@dataclass
class Rollout:
    """``n`` predicted transitions per row after the prefix.

    ``tokens [rows, n, T]`` are ``[s_t, a_t, r_t, V_t]`` with ``s_0`` the prefix's observation;
    ``next_observation_tokens [rows, S]`` is ``s_n``. ``observations [rows, n, S]`` are the predicted
    next states ``s_1 .. s_n`` decoded to bin midpoints (NaN after a stop token); ``actions``,
    ``rewards``, ``values`` likewise. ``log_probs [rows, n, T]``: row ``t`` holds the
    log-probabilities, under the model's unfiltered distributions, of ``a_t, r_t, V_t`` (their dims)
    and of ``s_{t+1}`` (the observation dims); ``distribution_log_probs`` (with ``keep_probs``)
    the whole distributions' log-probabilities ``[rows, n, T, N + 1]`` in the same places (kept in
    log space: a confident model's small probabilities underflow float32), ``probs`` the same as
    probabilities. Given actions get the model's probability of the given token.
    """

    tokens: Tensor
    next_observation_tokens: Tensor
    observations: Tensor
    actions: Tensor
    rewards: Tensor
    values: Tensor
    log_probs: Tensor
    distribution_log_probs: Tensor | None = None

    @property
    def probs(self) -> Tensor | None:
        """``[rows, n, T, N + 1]`` the distributions (with ``keep_probs``), else None."""
        kept = self.distribution_log_probs
        return None if kept is None else kept.exp()


def sample_rollout(
    model: torch.nn.Module,
    discretizer: object,
    prefix: Tensor,
    n_transitions: int,
    actions: Tensor | None = None,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
    window_transitions: int | None = None,
    use_cache: bool = True,
    keep_probs: bool = False,
    goals: Tensor | None = None,
) -> Rollout:
    """Sample ``n_transitions`` transitions after ``prefix [rows, L]`` (whole transitions then the
    current observation, as :class:`~ttrl.planning.PlanningContext` builds it).

    With ``actions [rows, n, A]`` (values, encoded with ``discretizer``, or long tokens) the model's
    action tokens are replaced by those: it predicts their consequences. ``window_transitions``
    (default: as many as the model's block holds) crops the context as planning does. A
    goal-conditioned model rolls out toward ``goals [rows, G]`` (goal tokens, never cropped).
    """
    config = model.config
    layout: TransitionLayout = config.layout
    S, T = layout.observation_dim, layout.transition_dim
    rows, length = prefix.shape
    if n_transitions < 1:
        raise TtrlError(f"a rollout needs n_transitions >= 1, got {n_transitions}")
    if length < S or (length - S) % T:
        raise TtrlError(
            f"prefix length {length} is not whole transitions (T={T}) plus one observation (S={S})"
        )
    sampling = sampling or Sampling()
    device = next(model.parameters()).device
    prefix = prefix.to(device)
    given = (
        None
        if actions is None
        else _action_tokens(actions, discretizer, layout, rows, n_transitions)
    )
    window = window_transitions or layout.transitions_fitting(config.block_size)
    if layout.block_size(window) > config.block_size:
        raise TtrlError(
            f"window_transitions={window} is {layout.block_size(window)} tokens but the model "
            f"attends over block_size={config.block_size}; lower it to "
            f"{layout.transitions_fitting(config.block_size)}"
        )
    max_window = layout.block_size(window) - layout.prefix_length  # trajectory tokens; goal apart
    goals = check_goals(goals, config, rows)
    goals = None if goals is None else goals.to(device)
    n_probs = config.vocab_size + 1
    log_probs = torch.zeros(rows, n_transitions, T, device=device)
    kept = torch.zeros(rows, n_transitions, T, n_probs, device=device) if keep_probs else None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            decoder = CachedDecoder(model, rows, rows, max_window) if use_cache else None
            window = ModelWindow(model, prefix, layout, max_window, decoder, goals)
            state = RolloutState(window, prefix, n_transitions * T)
            filters = _filters_by_dim(sampling, layout)
            for t in range(n_transitions):
                for offset in range(S, T + S):  # a, r, V of step t, then s_{t+1}
                    dim = offset % T
                    logits = state.logits
                    if given is not None and layout.action.start <= dim < layout.action.stop:
                        token = given[:, t, dim - S]
                        state.append(token)
                    else:
                        token, _ = state.sample(
                            filters[dim].top_k, filters[dim].cdf, generator=generator
                        )
                    distribution = logits.float().log_softmax(-1)  # unfiltered, temperature 1
                    # row t holds a_t, r_t, V_t in their dims and s_{t+1} in the s dims
                    log_probs[:, t, dim] = distribution.gather(-1, token[:, None]).squeeze(-1)
                    if kept is not None:
                        kept[:, t, dim] = distribution
    finally:
        model.train(was_training)
    sequences = state.sequences.clone()  # an ordinary tensor, as callers may use it in autograd
    return _decoded(sequences, length - S, n_transitions, layout, discretizer, log_probs, kept)


def _action_tokens(
    actions: Tensor, discretizer: object, layout: TransitionLayout, rows: int, n: int
) -> Tensor:
    """Given actions as tokens ``[rows, n, A]`` (values are encoded with ``discretizer``)."""
    actions = torch.as_tensor(actions)
    if tuple(actions.shape) != (rows, n, layout.action_dim):
        raise TtrlError(
            f"actions must be [rows, n_transitions, action_dim] = [{rows}, {n}, "
            f"{layout.action_dim}], got {list(actions.shape)}"
        )
    if actions.dtype == torch.long:
        return actions
    return torch.as_tensor(discretizer.encode(actions, dims=layout.action)).long()


def _filters_by_dim(sampling: Sampling, layout: TransitionLayout) -> list[TokenFilter]:
    """The filter of each transition dim."""
    filters = [sampling.observation] * layout.transition_dim
    for dim in range(layout.action.start, layout.action.stop):
        filters[dim] = sampling.action
    filters[layout.reward_dim] = sampling.reward
    filters[layout.value_dim] = sampling.value
    return filters


def _decoded(
    sequences: Tensor,
    plan_start: int,
    n: int,
    layout: TransitionLayout,
    discretizer: object,
    log_probs: Tensor,
    distribution_log_probs: Tensor | None,
) -> Rollout:
    """Split the sampled sequences into transitions and decode them to bin midpoints."""
    S, T = layout.observation_dim, layout.transition_dim
    planned = sequences[:, plan_start:]
    tokens = planned[:, : n * T].reshape(-1, n, T)
    next_observations = planned[:, S:].reshape(-1, n, T)[:, :, T - S :]  # s_1 .. s_n
    decode = discretizer.decode  # the stop token decodes to NaN
    return Rollout(
        tokens=tokens,
        next_observation_tokens=next_observations[:, -1],
        observations=torch.as_tensor(decode(next_observations, dims=layout.observation)),
        actions=torch.as_tensor(decode(tokens[:, :, layout.action], dims=layout.action)),
        rewards=torch.as_tensor(decode(tokens[:, :, layout.reward_dim], dims=layout.reward_dim)),
        values=torch.as_tensor(decode(tokens[:, :, layout.value_dim], dims=layout.value_dim)),
        log_probs=log_probs,
        distribution_log_probs=distribution_log_probs,
    )
