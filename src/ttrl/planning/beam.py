"""Beam search over the Trajectory Transformer: the paper's planner, exact, cached and batched.

Per planning step every kept plan is repeated ``n_expand`` times, actions are sampled token by token,
reward and value tokens are taken (greedily by default), each candidate is scored and the best
``beam_width`` per environment are kept; then the next observation is sampled. Every sampled token
costs one incremental model step thanks to the key/value cache; the plans are identical to re-running
the cropped window for every token (``use_cache=False``), random draws included.

Random draws are per environment: each ``plan`` call takes one block of uniforms for every
environment (from that environment's own generator when given one per environment), and each
environment's rows read only its block. An environment's plan is therefore the same whether it is
planned alone or in a batch with any others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ttrl.errors import TtrlError
from ttrl.model import TrajectoryTransformer
from ttrl.planning.config import PlannerConfig
from ttrl.planning.decoder import CachedDecoder
from ttrl.planning.scorers import Candidates, PlanScorer, build_scorer
from ttrl.planning.state import RolloutState
from ttrl.planning.window import ModelWindow


@dataclass
class Plan:
    """The best plan found for each environment.

    ``tokens [N_env, H, T]`` are the planned transitions ``[s_t, a_t, r_t, V_t]`` (``s_0`` is the
    current observation); ``actions [N_env, H, A]`` their actions decoded to bin midpoints;
    ``rewards``/``values [N_env, H]`` the expected reward and value-to-go the model predicted at each
    step; ``scores [N_env]`` the objective the plan won with (discounted return, or log-likelihood).
    """

    tokens: Tensor
    actions: Tensor
    rewards: Tensor
    values: Tensor
    scores: Tensor

    @property
    def first_actions(self) -> Tensor:
        """``[N_env, A]``: the actions to execute now."""
        return self.actions[:, 0]


class BeamPlanner:
    """Plans with a trained :class:`~ttrl.model.TrajectoryTransformer` and its discretiser.

    Candidates are ranked by the scorer ``config.objective`` names (see :mod:`ttrl.planning.scorers`),
    or by ``scorer`` when one is given. ``likelihood`` sums the log-probabilities, under the
    unfiltered temperature-1 distributions, of every token sampled so far in the plan: actions,
    rewards, values and observations (the prefix is common to all plans and not counted). ``return``
    is ``sum_{i<=t} discount^i r_i + discount^(t+1) V_t`` with expected (not sampled) rewards and
    values.
    """

    def __init__(
        self,
        model: Any,
        discretizer: Any,
        config: PlannerConfig | None = None,
        scorer: PlanScorer | None = None,
    ) -> None:
        self.model = model
        self.discretizer = discretizer
        self.config = config if config is not None else PlannerConfig()
        self.scorer = (
            scorer if scorer is not None else build_scorer(self.config.objective, self.config)
        )
        model_config = model.config
        self.layout = model_config.layout
        if hasattr(self.scorer, "check_layout"):  # a scorer with a model of its own (a Q network)
            self.scorer.check_layout(self.layout)
        self.observation_dim = self.layout.observation_dim
        self.action_dim = self.layout.action_dim
        self.transition_dim = self.layout.transition_dim
        if discretizer.n_bins != model_config.vocab_size:
            raise TtrlError(
                f"discretizer has {discretizer.n_bins} bins but the model's vocab_size is "
                f"{model_config.vocab_size}; plan with the discretizer the model was trained with"
            )
        self.config.check_fits_model(model_config.block_size, self.layout)
        if self.config.use_cache and not isinstance(model, TrajectoryTransformer):
            raise TtrlError(
                f"use_cache needs a ttrl TrajectoryTransformer, got {type(model).__name__}; "
                f"set planner.use_cache=false to plan with another model"
            )
        self.max_window = self.config.window_tokens(self.layout)
        self._decoder_key: tuple | None = None
        self._cached_decoder: CachedDecoder | None = None

    def plan(
        self,
        prefix: Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        goals: Tensor | None = None,
    ) -> Plan:
        """Plan for ``prefix [N_env, L]`` (context transitions then the current observation's tokens).

        All environments are searched together in one model batch of ``N_env * beam`` rows.
        ``generator`` drives every random draw: one generator per environment (each environment's
        plan then depends only on its own generator), or one for all, which gives each environment
        its block of draws in turn (default: torch's global generator). A goal-conditioned model
        plans toward ``goals [N_env, G]`` (goal tokens), which go before every window.
        """
        self._check_prefix(prefix)
        device = next(self.model.parameters()).device
        goals = check_goals(goals, self.model.config, prefix.shape[0])
        prefix = prefix.to(device)
        goals = None if goals is None else goals.to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                uniforms = self._uniforms(prefix.shape[0], generator, prefix.device)
                return self._search(prefix, uniforms, goals)
        finally:
            self.model.train(was_training)

    @property
    def draws_per_plan(self) -> int:
        """Uniform numbers one environment uses per :meth:`plan` call (one per sampled token of
        every row: actions, reward and value of ``beam * n_expand`` candidates, then the next
        observation of the ``beam`` kept ones)."""
        cfg = self.config
        S, T, H = self.observation_dim, self.transition_dim, cfg.horizon
        candidates = cfg.beam_width * cfg.n_expand
        return H * (T - S) * candidates + (H - 1) * S * cfg.beam_width

    def _uniforms(
        self,
        n_env: int,
        generator: torch.Generator | Sequence[torch.Generator] | None,
        device: torch.device,
    ) -> Tensor:
        """``[n_env, draws_per_plan]`` uniforms: row ``e`` is environment ``e``'s block."""
        dtype = next(self.model.parameters()).dtype
        if generator is None or isinstance(generator, torch.Generator):
            generators = [generator] * n_env
        else:
            generators = list(generator)
            if len(generators) != n_env:
                raise TtrlError(
                    f"plan() got {len(generators)} generators for {n_env} environments; pass one "
                    f"per prefix row, or a single generator for all"
                )
        blocks = [
            torch.rand(
                self.draws_per_plan,
                generator=g,
                dtype=dtype,
                device=g.device if g is not None else device,
            )
            for g in generators
        ]
        return torch.stack(blocks).to(device)

    def _check_prefix(self, prefix: Tensor) -> None:
        if prefix.dim() != 2 or prefix.dtype != torch.long:
            raise TtrlError(
                f"plan() needs a LongTensor prefix [N_env, L], got {prefix.dtype} {tuple(prefix.shape)}; "
                f"build it with PlanningContext.prefix()"
            )
        length, S, T = prefix.shape[1], self.observation_dim, self.transition_dim
        if length < S or (length - S) % T:
            raise TtrlError(
                f"prefix length {length} is not whole transitions (T={T}) plus one observation "
                f"(S={S}); build it with PlanningContext.prefix()"
            )
        n_bins = self.model.config.vocab_size
        if bool(((prefix < 0) | (prefix > n_bins)).any()):
            raise TtrlError(
                f"prefix tokens must lie in [0, {n_bins}] (id {n_bins} is the stop token); "
                f"encode observations with the model's discretizer"
            )
        if self.max_window is None:
            fed = self.layout.prefix_length + length + self.config.horizon * T - S - 1
            block_size = self.model.config.block_size
            if fed > block_size:
                raise TtrlError(
                    f"prefix of {length} tokens plus horizon={self.config.horizon} feed the model "
                    f"{fed} tokens but its block_size is {block_size}; shorten the context "
                    f"(controller.context_transitions) or the horizon, or set "
                    f"planner.window_transitions"
                )

    def _search(self, prefix: Tensor, uniforms: Tensor, goals: Tensor | None = None) -> Plan:
        cfg = self.config
        S, A, T, H = self.observation_dim, self.action_dim, self.transition_dim, cfg.horizon
        n_env, prefix_length = prefix.shape
        decoder = self._decoder(n_env) if cfg.use_cache else None
        window = ModelWindow(self.model, prefix, self.layout, self.max_window, decoder, goals)
        beams = _Beams(prefix, H * T - S, window, uniforms, self.scorer.uses_likelihood, H)
        for t in range(H):
            beams.expand(cfg.n_expand * (cfg.beam_width if t == 0 else 1))
            for _ in range(A):
                beams.sample(cfg.k_act, cfg.cdf_act)
            reward = self._expected(beams.sample(cfg.k_rew, cfg.cdf_rew), self.layout.reward_dim)
            value = self._expected(beams.sample(cfg.k_rew, cfg.cdf_rew), self.layout.value_dim)
            beams.record(t, reward, value)
            objective = self.scorer.score(self._candidates(beams, t, prefix_length - S))
            beams.keep(*_best_per_env(objective, n_env, cfg.beam_width))
            if t < H - 1:
                for _ in range(S):
                    beams.sample(cfg.k_obs, cfg.cdf_obs)
        assert beams.used == uniforms.shape[1], "draws_per_plan must count every sampled token"
        return self._best_plans(beams, prefix_length - S)

    def _candidates(self, beams: _Beams, step: int, plan_start: int) -> Candidates:
        """What the scorer sees of every candidate after step ``step``'s reward and value."""
        return Candidates(
            step=step,
            horizon=self.config.horizon,
            sequences=beams.sequences[:, : beams.length],
            plan_start=plan_start,
            rewards=beams.rewards[:, : step + 1],
            values=beams.step_values[:, : step + 1],
            log_likelihood=beams.log_likelihood,
            row_env=beams.row_env,
            discount=self.config.discount,
            discretizer=self.discretizer,
            observation_dim=self.observation_dim,
            action_dim=self.action_dim,
        )

    def _decoder(self, n_env: int) -> CachedDecoder:
        """A decoder big enough for ``n_env`` environments, reused across calls (its buffers are large)."""
        cfg = self.config
        rows = n_env * cfg.beam_width * cfg.n_expand
        window = self.max_window or self.model.config.block_size
        parameter = next(self.model.parameters())
        key = (n_env, rows, window, parameter.dtype, parameter.device)
        if self._decoder_key != key:
            self._cached_decoder = CachedDecoder(self.model, n_env, rows, window)
            self._decoder_key = key
        return self._cached_decoder

    def _expected(self, probs: Tensor, dim: int) -> Tensor:
        """Expected midpoint of transition dimension ``dim`` (stop-token mass dropped)."""
        expected = self.discretizer.expected_value(probs, dim)
        return torch.as_tensor(expected, dtype=probs.dtype, device=probs.device)

    def _best_plans(self, beams: _Beams, plan_start: int) -> Plan:
        n_env, T, S, A = beams.n_env, self.transition_dim, self.observation_dim, self.action_dim
        scores = beams.scores.view(n_env, -1)
        best = scores.argmax(dim=-1) + torch.arange(n_env, device=scores.device) * scores.shape[1]
        tokens = beams.sequences.index_select(0, best)[:, plan_start:].reshape(n_env, -1, T)
        # A stop token among the actions decodes as the last bin (the released code clips it too).
        action_tokens = tokens[:, :, S : S + A].clamp(max=self.discretizer.n_bins - 1)
        actions = torch.as_tensor(self.discretizer.decode(action_tokens, dims=slice(S, S + A)))
        return Plan(
            tokens=tokens,
            actions=actions.to(device=tokens.device, dtype=torch.float32),
            rewards=beams.rewards.index_select(0, best)[:, :-1],
            values=beams.step_values.index_select(0, best),
            scores=beams.scores.index_select(0, best),
        )


class _Beams(RolloutState):
    """Every beam of every environment: a :class:`~ttrl.planning.state.RolloutState` whose rows
    also carry their predicted rewards and values, likelihood and score, and read their random
    draws from their environment's block of uniforms.

    The search only says :meth:`expand`, :meth:`sample`, :meth:`record` and :meth:`keep`; the
    window, its cache and every per-row tensor move with the rows.
    """

    per_row = ("rewards", "step_values", "log_likelihood", "scores")

    def __init__(
        self,
        prefix: Tensor,
        plan_tokens: int,
        window: ModelWindow,
        uniforms: Tensor,
        track_likelihood: bool,
        horizon: int,
    ) -> None:
        super().__init__(window, prefix, plan_tokens)
        self.uniforms, self.track_likelihood = uniforms, track_likelihood
        self.used = 0  # uniforms of every environment's block read so far
        dtype = self.logits.dtype
        zeros = torch.zeros(self.n_env, horizon + 1, dtype=dtype, device=prefix.device)
        self.rewards = zeros  # [rows, H + 1]: r_0 .. r_t, then V_t
        self.step_values = zeros[:, :-1].clone()  # [rows, H]: V_t of every step
        self.log_likelihood = zeros[:, 0].clone()
        self.scores = zeros[:, 0].clone()

    def sample(self, top_k: int | None, cdf: float | None) -> Tensor:  # type: ignore[override]
        """Draw and append the next token of every row from its environment's uniforms; returns
        the unfiltered probabilities."""
        per_env = self.rows_per_env
        rows_uniforms = self.uniforms[:, self.used : self.used + per_env].reshape(-1)
        self.used += per_env
        tokens, probs = super().sample(top_k, cdf, uniforms=rows_uniforms)
        if self.track_likelihood:
            self.log_likelihood += probs.gather(-1, tokens[:, None]).squeeze(-1).log()
        return probs

    def record(self, step: int, reward: Tensor, value: Tensor) -> None:
        """The expected reward and value the model predicted at planning step ``step``."""
        self.rewards[:, step] = reward
        self.rewards[:, step + 1] = self.step_values[:, step] = value

    def keep(self, rows: Tensor, scores: Tensor) -> None:
        """Keep ``rows`` (the best candidates, with their ``scores``) as the beams."""
        self.select(rows)
        self.scores = scores


def check_goals(goals: Tensor | None, model_config: Any, n_rows: int) -> Tensor | None:
    """``goals`` as long ``[n_rows, G]`` tokens for a goal model (None for a model without goal);
    one line for a missing goal, a goal of the wrong size or tokens out of range."""
    G, n_bins = getattr(model_config, "goal_dim", 0), model_config.vocab_size
    if goals is None:
        if G:
            raise TtrlError(
                f"the model is goal-conditioned ({G} goal tokens): plan with goals=[N_env, {G}], "
                f"the goal encoded with the run's goal discretiser"
            )
        return None
    if not G:
        raise TtrlError("goals= was given, but the model is not goal-conditioned (goal_dim=0)")
    goals = torch.as_tensor(goals)
    if goals.dtype != torch.long or tuple(goals.shape) != (n_rows, G):
        raise TtrlError(
            f"goals must be long tokens [N_env, goal_dim] = [{n_rows}, {G}], got {goals.dtype} "
            f"{tuple(goals.shape)}"
        )
    if bool(((goals < 0) | (goals >= n_bins)).any()):
        raise TtrlError(f"goal tokens must lie in [0, {n_bins - 1}]")
    return goals


def _best_per_env(objective: Tensor, n_env: int, keep: int) -> tuple[Tensor, Tensor]:
    """Rows of the ``keep`` best candidates of every environment, best first, and their scores."""
    per_env = objective.view(n_env, -1)
    scores, rows = per_env.topk(keep, dim=-1)
    rows = rows + torch.arange(n_env, device=rows.device)[:, None] * per_env.shape[1]
    return rows.reshape(-1), scores.reshape(-1)
