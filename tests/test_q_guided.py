"""The Q-guided plan scorer (planner.objective=q): ranking by hand, cached = uncached, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from test_planning import A, N, S, T, discretizer, model, planner_config, random_prefix  # noqa: F401
from ttrl.errors import TtrlError
from ttrl.planning import BeamPlanner, PlannerConfig
from ttrl.planning.q_guided import QGuidedScorer, check_q_run_dataset
from ttrl.planning.scorers import Candidates


class LinearQ:
    """A known Q-function: Q(s, a) = w_s . s + w_a . a, V(s) = w_s . s (float64)."""

    observation_dim, action_dim = S, A

    def __init__(
        self, seed: int = 0, action_weight: float = 1.0, reward_scale: float = 1.0
    ) -> None:
        self.reward_scale = reward_scale
        rng = np.random.default_rng(seed)
        self.w_s = torch.as_tensor(rng.normal(size=S))
        self.w_a = torch.as_tensor(rng.normal(size=A)) * action_weight
        self.calls = 0

    def q_value(self, observations, actions):
        self.calls += 1
        return observations.double() @ self.w_s + actions.double() @ self.w_a

    def value(self, observations):
        self.calls += 1
        return observations.double() @ self.w_s


def test_q_score_ranks_candidates_as_the_formula_says(discretizer):  # noqa: F811
    rng = np.random.default_rng(1)
    rows, step, gamma = 5, 2, 0.9
    plan = torch.as_tensor(rng.integers(0, N, size=(rows, (step + 1) * T)))
    rewards = torch.as_tensor(rng.normal(size=(rows, step + 1)))
    candidates = Candidates(
        step=step,
        horizon=4,
        sequences=plan,
        plan_start=0,
        rewards=rewards,
        values=torch.zeros(rows, step + 1, dtype=torch.float64),
        log_likelihood=torch.zeros(rows, dtype=torch.float64),
        row_env=torch.zeros(rows, dtype=torch.long),
        discount=gamma,
        discretizer=discretizer,
        observation_dim=S,
        action_dim=A,
    )
    q = LinearQ()
    scores = QGuidedScorer(q).score(candidates)
    assert q.calls == 1  # every candidate in one call
    for row in range(rows):  # by hand: earlier rewards, then Q at step t's decoded (s, a)
        tokens = plan[row, step * T : step * T + S + A].numpy()
        decoded = discretizer.decode(tokens, dims=slice(0, S + A))
        q_value = decoded[:S] @ q.w_s.numpy() + decoded[S:] @ q.w_a.numpy()
        expected = sum(gamma**i * rewards[row, i].item() for i in range(step))
        expected += gamma**step * q_value
        assert scores[row].item() == pytest.approx(expected)
    # a Q trained on rewards scaled by 4 is brought back to the transformer's reward units
    scaled = LinearQ(reward_scale=4.0)
    scaled.w_s, scaled.w_a = q.w_s * 4.0, q.w_a * 4.0
    torch.testing.assert_close(QGuidedScorer(scaled).score(candidates), scores)
    v_scores = QGuidedScorer(q, heuristic="v").score(candidates)
    _, action = candidates.decoded_state_action()
    assert torch.allclose(scores - v_scores, gamma**step * (action.double() @ q.w_a))
    assert list(torch.argsort(scores, descending=True)) == sorted(
        range(rows), key=lambda r: -scores[r].item()
    )


def test_search_with_the_q_scorer_is_the_same_cached_and_uncached(model, discretizer):  # noqa: F811
    prefix = random_prefix(2, context=2, seed=4)
    plans = []
    for use_cache in (True, False):
        config = planner_config(window_transitions=3, horizon=4, use_cache=use_cache, cdf_act=None)
        q = LinearQ(3, action_weight=100.0)  # strongly prefers some actions
        planner = BeamPlanner(model, discretizer, config, scorer=QGuidedScorer(q))
        plans.append(planner.plan(prefix, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(plans[0].tokens, plans[1].tokens)
    torch.testing.assert_close(plans[0].scores, plans[1].scores, rtol=1e-12, atol=1e-12)
    # and the Q scorer chooses differently from the return scorer on the same draws
    default = BeamPlanner(
        model, discretizer, planner_config(window_transitions=3, horizon=4, cdf_act=None)
    )
    other = default.plan(prefix, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(other.tokens, plans[0].tokens)


def test_bad_q_settings_are_one_line(model, discretizer, tmp_path):  # noqa: F811
    with pytest.raises(TtrlError, match=r"objective=q needs planner\.q_run="):
        BeamPlanner(model, discretizer, planner_config(objective="q"))
    with pytest.raises(TtrlError, match=r"holds no checkpoints/last\.safetensors; train one with"):
        BeamPlanner(model, discretizer, planner_config(objective="q", q_run=str(tmp_path)))
    wrong = LinearQ()
    wrong.observation_dim = S + 1
    with pytest.raises(TtrlError, match=f"observations of {S + 1} and actions of {A} dims"):
        BeamPlanner(model, discretizer, planner_config(), scorer=QGuidedScorer(wrong))
    with pytest.raises(TtrlError, match="q_heuristic='w' is not one of q, v"):
        PlannerConfig(q_heuristic="w")


def test_a_q_run_of_another_dataset_is_refused_and_a_real_one_scores(model, discretizer, tmp_path):  # noqa: F811
    from ttrl.baselines.iql import IQLConfig, IQLModel
    from ttrl.checkpoint import checkpoint_path, load_bundle, save_bundle

    q_run = tmp_path / "q"
    IQLModel(S, A, IQLConfig(hidden=8)).save(checkpoint_path(q_run, "last"))
    bundle = load_bundle(checkpoint_path(q_run, "last"))
    save_bundle(checkpoint_path(q_run, "last"), **bundle, config={"env": {"name": "hopper-medium"}})
    check_q_run_dataset(q_run, "hopper-medium")
    with pytest.raises(
        TtrlError,
        match="was trained on 'hopper-medium', but the transformer plans on 'walker2d-medium'",
    ):
        check_q_run_dataset(q_run, "walker2d-medium")
    planner = BeamPlanner(
        model.float(), discretizer, planner_config(objective="q", q_run=str(q_run), horizon=2)
    )
    plan = planner.plan(
        random_prefix(1, context=2, seed=0), generator=torch.Generator().manual_seed(0)
    )
    assert math.isfinite(plan.scores[0].item())
    model.double()
