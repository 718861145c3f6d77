"""Planning and open-loop rollouts toward a goal: cached = uncached with the goal prefix, the goal
matters, and one-line errors for goals that do not fit the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_goal_model import G, N, S, T, goal_model, random_goals
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.planning import BeamPlanner, PlannerConfig
from ttrl.planning.rollouts import Sampling, sample_rollout


@pytest.fixture(scope="module")
def model():
    return goal_model(double=True, sequence_length=5)


@pytest.fixture(scope="module")
def discretizer():
    return Discretizer.fit(np.random.default_rng(0).normal(size=(500, T)), n_bins=N)


def prefix(n_env: int, context: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.randint(
        0, N, (n_env, context * T + S), generator=torch.Generator().manual_seed(seed)
    )


def config(**overrides) -> PlannerConfig:
    settings = dict(horizon=4, beam_width=3, n_expand=2, cdf_act=None)
    return PlannerConfig(**{**settings, **overrides})


@pytest.mark.parametrize("window", [None, 3, 2])  # no crop; slides mid-plan; slides every step
def test_cached_planning_toward_a_goal_equals_uncached(model, discretizer, window):
    goals = random_goals(2)
    horizon = 3 if window is None else 4  # without a crop, context + plan must fit the block
    plans = [
        BeamPlanner(
            model, discretizer, config(window_transitions=window, use_cache=cache, horizon=horizon)
        ).plan(prefix(2), generator=torch.Generator().manual_seed(1), goals=goals)
        for cache in (True, False)
    ]
    assert torch.equal(plans[0].tokens, plans[1].tokens)
    torch.testing.assert_close(plans[0].scores, plans[1].scores, rtol=1e-12, atol=1e-12)


def test_the_goal_changes_the_plan(model, discretizer):
    planner = BeamPlanner(model, discretizer, config(window_transitions=3, objective="likelihood"))
    plans = [
        planner.plan(prefix(1), generator=torch.Generator().manual_seed(1), goals=goal)
        for goal in (torch.tensor([[0, 0]]), torch.tensor([[N - 1, N - 1]]))
    ]
    assert not torch.equal(plans[0].scores, plans[1].scores)


def test_a_rollout_toward_a_goal_longer_than_the_window_is_the_same_cached(model, discretizer):
    goals = random_goals(3, seed=5)
    rollouts = [
        sample_rollout(
            model, discretizer, prefix(3), 7, sampling=Sampling.greedy(), window_transitions=2,
            use_cache=cache, goals=goals,
        )
        for cache in (True, False)
    ]  # fmt: skip
    assert torch.equal(rollouts[0].tokens, rollouts[1].tokens)
    torch.testing.assert_close(rollouts[0].log_probs, rollouts[1].log_probs)


def test_goals_that_do_not_fit_the_model_are_one_line(model, discretizer):
    planner = BeamPlanner(model, discretizer, config())
    with pytest.raises(TtrlError, match=rf"goal-conditioned \({G} goal tokens\): plan with goals="):
        planner.plan(prefix(1))
    with pytest.raises(
        TtrlError, match=rf"goals must be long tokens \[N_env, goal_dim\] = \[1, {G}\]"
    ):
        planner.plan(prefix(1), goals=torch.zeros(1, G + 1, dtype=torch.long))
    with pytest.raises(TtrlError, match=r"goal tokens must lie in \[0, 9\]"):
        planner.plan(prefix(1), goals=torch.full((1, G), N))
    plain = goal_model(goal_dim=0, double=True, sequence_length=5)
    with pytest.raises(TtrlError, match="the model is not goal-conditioned"):
        BeamPlanner(plain, discretizer, config()).plan(prefix(1), goals=random_goals(1))
    with pytest.raises(TtrlError, match="plan with goals="):
        sample_rollout(model, discretizer, prefix(1), 2)
