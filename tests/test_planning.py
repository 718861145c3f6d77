"""The beam-search planner: identical to the plain released algorithm, batched, and choosing well."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reference_planner import reference_beam_plan, reference_filter_cdf, reference_top_k
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig
from ttrl.planning import BeamPlanner, PlannerConfig, PlanningContext
from ttrl.planning.sampling import (
    filter_cdf,
    inverse_cdf,
    keep_top_k,
    sample_tokens,
    sorted_values,
)

S, A, N = 3, 2, 10  # small observation/action dims and bins: planning stays fast
T = S + A + 2


@pytest.fixture(scope="module")
def model() -> TrajectoryTransformer:
    """A random float64 model (float64 so that cached and uncached logits never flip a sample)."""
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig(
        vocab_size=N,
        observation_dim=S,
        action_dim=A,
        transition_dim=T,
        block_size=6 * T - 1,
        n_layer=2,
        n_head=2,
        n_embd=16,
    )
    model = TrajectoryTransformer(config).double().eval()
    # Sharper, more varied distributions than the near-uniform ones of a fresh init.
    with torch.no_grad():
        model.head.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def discretizer() -> Discretizer:
    return Discretizer.fit(np.random.default_rng(0).normal(size=(500, T)), n_bins=N)


def random_prefix(n_env: int, context: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, N, (n_env, context * T + S), generator=generator)


def planner_config(**overrides) -> PlannerConfig:
    settings = dict(horizon=4, beam_width=4, n_expand=2)
    return PlannerConfig(**{**settings, **overrides})


# window None: no crop; 3: the window first slides in the middle of the plan; 2: the prefix is
# already cropped and the window slides every transition.
@pytest.mark.parametrize("window", [None, 3, 2])
@pytest.mark.parametrize(
    "settings",
    [
        {},  # the paper's defaults: tail filter on actions, greedy observations
        {"objective": "likelihood"},
        {"k_act": 3, "cdf_act": None, "k_obs": None, "cdf_obs": 0.3, "k_rew": 2},
    ],
    ids=["default", "likelihood", "topk-sampled-obs"],
)
@pytest.mark.parametrize("use_cache", [True, False])
def test_planner_matches_reference_from_same_seed(model, discretizer, window, settings, use_cache):
    config = planner_config(window_transitions=window, use_cache=use_cache, **settings)
    for seed in range(3):
        prefix = random_prefix(1, context=2, seed=seed)
        reference = reference_beam_plan(
            model, discretizer, prefix[0], config, generator=torch.Generator().manual_seed(seed)
        )
        plan = BeamPlanner(model, discretizer, config).plan(
            prefix, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(plan.tokens[0], reference["tokens"])
        assert torch.equal(plan.first_actions[0], reference["action"].float())
        torch.testing.assert_close(plan.scores[0], reference["score"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(plan.rewards[0], reference["rewards"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(plan.values[0], reference["values"], rtol=1e-12, atol=1e-12)


def test_cached_equals_uncached_for_several_sampled_environments(model, discretizer):
    config = planner_config(window_transitions=3, horizon=5, beam_width=3, n_expand=3)
    prefix = random_prefix(3, context=2, seed=7)
    plans = [
        BeamPlanner(model, discretizer, PlannerConfig(**{**vars(config), "use_cache": cache})).plan(
            prefix, generator=torch.Generator().manual_seed(3)
        )
        for cache in (True, False)
    ]
    assert torch.equal(plans[0].tokens, plans[1].tokens)
    torch.testing.assert_close(plans[0].scores, plans[1].scores, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("window", [None, 2])
def test_batched_environments_equal_each_planned_alone(model, discretizer, window):
    # Greedy everywhere: no random draw can differ between a batch of 3 and a batch of 1.
    config = planner_config(window_transitions=window, k_act=1, cdf_act=None)
    prefix = random_prefix(3, context=2, seed=11)
    planner = BeamPlanner(model, discretizer, config)
    together = planner.plan(prefix)
    assert together.tokens.shape == (3, config.horizon, T)
    assert together.actions.shape == (3, config.horizon, A)
    assert together.rewards.shape == together.values.shape == (3, config.horizon)
    for env in range(3):
        alone = planner.plan(prefix[env : env + 1])
        reference = reference_beam_plan(model, discretizer, prefix[env], config)
        assert torch.equal(together.tokens[env], alone.tokens[0])
        assert torch.equal(together.tokens[env], reference["tokens"])
        torch.testing.assert_close(together.scores[env], alone.scores[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("use_cache", [True, False])
def test_sampled_environments_with_own_generators_equal_each_planned_alone(
    model, discretizer, use_cache
):
    # Sampled actions and observations: each environment reads only its own generator's draws.
    config = planner_config(
        window_transitions=3, k_act=None, cdf_act=0.3, k_obs=None, use_cache=use_cache
    )
    prefix = random_prefix(4, context=2, seed=13)
    planner = BeamPlanner(model, discretizer, config)

    def generators(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    together = planner.plan(prefix, generator=generators([20, 21, 22, 23]))
    for env in range(4):
        alone = planner.plan(prefix[env : env + 1], generator=generators([20 + env]))
        assert torch.equal(together.tokens[env], alone.tokens[0])
        torch.testing.assert_close(together.scores[env], alone.scores[0], rtol=1e-12, atol=1e-12)
    # the last three on their own, as a resumed evaluation plans them
    rest = planner.plan(prefix[1:], generator=generators([21, 22, 23]))
    assert torch.equal(together.tokens[1:], rest.tokens)
    # the draws matter: another generator for environment 0 changes its plan, not the others'
    other = planner.plan(prefix, generator=generators([99, 21, 22, 23]))
    assert not torch.equal(other.tokens[0], together.tokens[0])
    assert torch.equal(other.tokens[1:], together.tokens[1:])


def test_one_generator_per_environment_is_checked(model, discretizer):
    planner = BeamPlanner(model, discretizer, planner_config())
    with pytest.raises(TtrlError, match="2 generators for 3 environments"):
        planner.plan(random_prefix(3, context=2, seed=0), generator=[torch.Generator()] * 2)


def test_inverse_cdf_never_draws_a_token_of_zero_weight():
    weights = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]] * 4, dtype=torch.float32)
    # 0, the largest float32 below 1, and 1 itself (a rounding target past the total)
    uniforms = torch.tensor([0.0, 0.49999, 1.0 - 2**-24, 1.0])
    assert inverse_cdf(weights, uniforms).tolist() == [1, 1, 3, 3]


def test_sample_tokens_follows_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)).repeat(20000, 1)
    tokens, probs = sample_tokens(logits, None, None, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=4).double() / len(tokens)
    torch.testing.assert_close(frequencies, probs[0], atol=0.015, rtol=0)  # ~4 standard errors
    top2, _ = sample_tokens(logits, 2, None, generator=torch.Generator().manual_seed(0))
    assert set(top2.tolist()) == {2, 3}


def test_plan_tokens_continue_the_prefix(model, discretizer):
    prefix = random_prefix(2, context=1, seed=2)
    plan = BeamPlanner(model, discretizer, planner_config()).plan(prefix)
    assert torch.equal(plan.tokens[:, 0, :S], prefix[:, -S:])  # s_0 is the current observation
    decoded = discretizer.decode(
        plan.tokens[:, :, S : S + A].clamp(max=N - 1), dims=slice(S, S + A)
    )
    assert torch.equal(plan.actions, decoded)


def test_likelihood_score_is_the_log_probability_of_the_plan(model, discretizer):
    config = planner_config(objective="likelihood", window_transitions=None)
    prefix = random_prefix(1, context=2, seed=5)
    plan = BeamPlanner(model, discretizer, config).plan(
        prefix, generator=torch.Generator().manual_seed(0)
    )
    # Every token after the prefix was sampled: the score is their summed log-probability.
    sequence = torch.cat([prefix[0, :-S], plan.tokens[0].reshape(-1)])[None]
    with torch.no_grad():
        log_probs = model(sequence[:, :-1]).logits.log_softmax(-1)
    targets = sequence[:, 1:]
    per_token = log_probs.gather(-1, targets[..., None])[0, :, 0]
    expected = per_token[prefix.shape[1] - 1 :].sum()
    torch.testing.assert_close(plan.scores[0], expected, rtol=1e-10, atol=1e-10)


class RewardIsFirstActionModel(torch.nn.Module):
    """Hand-made model: uniform actions; the reward token repeats the first action token, so the
    highest first action earns the highest reward; value and observation tokens are bin 0.

    It follows the model's forward contract (only the uncached planner can use it).
    """

    def __init__(self, reward_logit: float = 10.0) -> None:
        super().__init__()
        self.config = TrajectoryTransformerConfig(
            vocab_size=N, observation_dim=S, action_dim=A, transition_dim=T, block_size=20 * T - 1
        )
        self.reward_logit = reward_logit
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, trajectories):
        logits = [
            self.next_token_logits(trajectories[:, : p + 1]) for p in range(trajectories.shape[1])
        ]
        return SimpleNamespace(logits=torch.stack(logits, 1))

    def next_token_logits(self, tokens):
        batch, length = tokens.shape
        logits = torch.zeros(batch, N + 1, dtype=torch.float64)
        next_dim = length % T
        if S <= next_dim < S + A:
            logits[:, N] = -math.inf  # never the stop token for an action
        elif next_dim == S + A:
            first_action = tokens[:, length - A]
            logits[torch.arange(batch), first_action] = self.reward_logit
        else:
            logits[:, 0] = self.reward_logit
        return logits


def test_planner_picks_the_action_with_the_highest_predicted_reward():
    discretizer = Discretizer.fit(
        np.random.default_rng(1).uniform(size=(1000, T)), n_bins=N, kind="uniform"
    )
    config = PlannerConfig(horizon=2, beam_width=8, n_expand=16, cdf_act=None, use_cache=False)
    plan = BeamPlanner(RewardIsFirstActionModel(), discretizer, config).plan(
        torch.zeros(2, S, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    assert plan.tokens[:, :, S].tolist() == [[N - 1, N - 1], [N - 1, N - 1]]
    highest_action = float(discretizer.midpoints(S)[N - 1, 0])
    assert plan.first_actions[:, 0].tolist() == pytest.approx([highest_action] * 2, rel=1e-6)


def test_return_score_is_the_discounted_expected_rewards_plus_value():
    discretizer = Discretizer.fit(
        np.random.default_rng(1).uniform(size=(1000, T)), n_bins=N, kind="uniform"
    )
    horizon, discount = 3, 0.9
    config = PlannerConfig(
        horizon=horizon,
        beam_width=2,
        n_expand=2,
        discount=discount,
        use_cache=False,
    )
    plan = BeamPlanner(RewardIsFirstActionModel(reward_logit=2.0), discretizer, config).plan(
        torch.zeros(1, S, dtype=torch.long), generator=torch.Generator().manual_seed(4)
    )
    # By hand: softmax of logit 2 on one bin and 0 on the other N bins (the stop token included,
    # whose mass is dropped without renormalising).
    reward_mids = discretizer.midpoints(S + A)[:, 0]
    value_mids = discretizer.midpoints(S + A + 1)[:, 0]
    total = math.exp(2.0) + N

    def expected(mids, peak):
        return sum((math.exp(2.0) if i == peak else 1.0) / total * mids[i] for i in range(N))

    first_actions = plan.tokens[0, :, S].tolist()
    rewards = [expected(reward_mids, a) for a in first_actions]
    final_value = expected(value_mids, 0)
    score = sum(discount**t * r for t, r in enumerate(rewards)) + discount**horizon * final_value
    assert plan.scores[0].item() == pytest.approx(score, rel=1e-6)
    assert plan.rewards[0].tolist() == pytest.approx(rewards, rel=1e-6)
    assert plan.values[0].tolist() == pytest.approx([final_value] * horizon, rel=1e-6)


@pytest.mark.parametrize("cdf", [0.0, 0.3, 0.6, 0.95])
def test_tail_filter_matches_released_filter(cdf):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, N + 1, generator=generator, dtype=torch.float64)
    logits[:8] = logits[:8].round()  # ties
    logits[8] = 0.0  # all equal
    ours = filter_cdf(logits, logits.softmax(-1), cdf)
    assert torch.equal(ours, reference_filter_cdf(logits, cdf))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.bfloat16])
def test_sorted_values_match_torchs_sort(dtype):
    x = torch.randn(16, 2 * (N + 1), generator=torch.Generator().manual_seed(2)).to(dtype)
    x[:4] = x[:4].round()  # ties
    strided = x[:, ::2]  # not contiguous
    assert torch.equal(sorted_values(strided), strided.sort(dim=-1).values)
    assert sorted_values(strided).dtype == dtype


@pytest.mark.parametrize("k", [1, 2, 5, N + 1])
def test_top_k_filter_matches_released_filter(k):
    logits = torch.randn(32, N + 1, generator=torch.Generator().manual_seed(1)).round()  # ties
    assert torch.equal(keep_top_k(logits, k), reference_top_k(logits, k))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"beam_width": 0}, "beam_width=0"),
        ({"n_expand": 0}, "n_expand=0"),
        ({"horizon": 0}, "horizon=0"),
        ({"cdf_act": 1.5}, "cdf_act=1.5"),
        ({"k_act": 0}, "k_act=0"),
        ({"objective": "reward"}, "objective='reward'"),
        ({"discount": 0.0}, "discount=0.0"),
        ({"window_transitions": 1}, "window_transitions=1 must be an integer >= 2"),
    ],
)
def test_config_rejects_impossible_settings(overrides, message):
    with pytest.raises(TtrlError, match=message):
        PlannerConfig(**overrides)


def test_config_rejects_window_larger_than_block(model, discretizer):
    with pytest.raises(
        TtrlError, match=r"window_transitions=7 is 48 tokens .* block_size=41; lower"
    ):
        BeamPlanner(model, discretizer, planner_config(window_transitions=7))


def test_config_rejects_plan_longer_than_block_without_window(model, discretizer):
    config = planner_config(window_transitions=None, horizon=5)
    with pytest.raises(
        TtrlError,
        match=r"context_transitions=2 \+ planner horizon=5 feed the model 48 tokens but its "
        r"block_size is 41; lower planner.horizon or controller.context_transitions",
    ):
        config.check_fits_model(model.config.block_size, model.config.layout, 2)
    planner = BeamPlanner(model, discretizer, config)  # the context is not known until planning
    with pytest.raises(
        TtrlError,
        match=r"prefix of 17 tokens plus horizon=5 feed the model 48 .*context_transitions",
    ):
        planner.plan(random_prefix(1, context=2, seed=0))


def test_cache_needs_a_ttrl_model(discretizer):
    with pytest.raises(TtrlError, match="use_cache needs a ttrl TrajectoryTransformer"):
        BeamPlanner(RewardIsFirstActionModel(), discretizer)


def test_planner_rejects_prefix_that_is_not_whole_transitions(model, discretizer):
    planner = BeamPlanner(model, discretizer, planner_config())
    with pytest.raises(TtrlError, match="not whole transitions"):
        planner.plan(torch.zeros(1, T, dtype=torch.long))
    with pytest.raises(TtrlError, match=r"prefix tokens must lie in \[0, 10\]"):
        planner.plan(torch.full((1, S), N + 1, dtype=torch.long))


def test_context_keeps_the_last_transitions_with_a_value_placeholder(discretizer):
    context = PlanningContext(discretizer, S, A, n_envs=2, context_transitions=2)
    rng = np.random.default_rng(0)
    observations = [rng.normal(size=(2, S))]
    context.reset(observations[0])
    assert torch.equal(
        context.prefix(), discretizer.encode(torch.as_tensor(observations[0]), dims=slice(0, S))
    )
    steps = []
    for _ in range(3):
        actions, rewards, next_obs = (
            rng.normal(size=(2, A)),
            rng.normal(size=2),
            rng.normal(size=(2, S)),
        )
        steps.append(
            np.concatenate([observations[-1], actions, rewards[:, None], np.zeros((2, 1))], 1)
        )
        context.append([0, 1], actions, rewards, next_obs)
        observations.append(next_obs)
    expected = np.concatenate(
        [
            discretizer.encode(steps[1]),
            discretizer.encode(steps[2]),
            discretizer.encode(observations[-1], dims=slice(0, S)),
        ],
        axis=1,
    )
    assert context.prefix().tolist() == expected.tolist()


def test_context_drops_finished_environments(discretizer):
    context = PlanningContext(discretizer, S, A, n_envs=3, context_transitions=2)
    context.reset(np.zeros((3, S)))
    context.append(
        [0, 1, 2], np.zeros((3, A)), np.zeros(3), np.ones((3, S)), done=[False, True, False]
    )
    assert context.active == [0, 2]
    assert context.prefix().shape == (2, T + S)
    with pytest.raises(TtrlError, match="environment 1 was removed"):
        context.prefix([1])
    context.append([0], np.zeros((1, A)), np.zeros(1), np.ones((1, S)))
    with pytest.raises(TtrlError, match="different numbers of context transitions"):
        context.prefix([0, 2])


@pytest.mark.parametrize("n_env", [1, 2])
def test_paper_sized_hopper_model_plans_like_reference(n_env):
    """Hopper's sizes with the paper's 4 layers, 4 heads, d=128 and 5-transition window, float64."""
    torch.manual_seed(1)
    S_h, A_h = 11, 3
    T_h = S_h + A_h + 2
    config = TrajectoryTransformerConfig(
        observation_dim=S_h, action_dim=A_h, transition_dim=T_h, block_size=10 * T_h - 1
    )
    hopper = TrajectoryTransformer(config).double().eval()
    with torch.no_grad():
        hopper.head.weight.mul_(8.0)
    bins = Discretizer.fit(np.random.default_rng(1).normal(size=(2000, T_h)), n_bins=100)
    prefix = torch.randint(
        0, 100, (n_env, 5 * T_h + S_h), generator=torch.Generator().manual_seed(2)
    )
    settings = dict(horizon=3, beam_width=6, n_expand=2)
    if n_env > 1:  # greedy: one batch of environments draws nothing the single runs would not
        settings.update(k_act=1, cdf_act=None)
    planner_settings = PlannerConfig(**settings)
    plan = BeamPlanner(hopper, bins, planner_settings).plan(
        prefix, generator=torch.Generator().manual_seed(5)
    )
    for env in range(n_env):
        reference = reference_beam_plan(
            hopper, bins, prefix[env], planner_settings, generator=torch.Generator().manual_seed(5)
        )
        assert torch.equal(plan.tokens[env], reference["tokens"])
        torch.testing.assert_close(plan.scores[env], reference["score"], rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cached_planner_on_cuda_equals_uncached(model, discretizer):
    cuda_model = TrajectoryTransformer(model.config).double().cuda().eval()
    cuda_model.load_state_dict(model.state_dict())
    prefix = random_prefix(2, context=2, seed=3).cuda()
    plans = [
        BeamPlanner(
            cuda_model, discretizer, planner_config(window_transitions=2, use_cache=cache)
        ).plan(prefix, generator=torch.Generator(device="cuda").manual_seed(0))
        for cache in (True, False)
    ]
    assert plans[0].tokens.is_cuda and plans[0].actions.is_cuda
    assert torch.equal(plans[0].tokens, plans[1].tokens)


@pytest.fixture(params=[("torch", "float64"), ("compiled", "float64"), ("compiled", "float32")])
def decoding_model(request, model, monkeypatch):
    """The model, with each implementation of the cache's attention
    (:mod:`ttrl.planning.cached_attention`): torch ops, the compiled kernel's plain loop (float64)
    and its vectorised one (float32)."""
    implementation, dtype = request.param
    monkeypatch.setenv("TTRL_CACHED_ATTENTION", implementation)
    return model if dtype == "float64" else copy.deepcopy(model).float()


def test_decoder_logits_equal_the_model_on_the_whole_sequence(decoding_model):
    """Shared prefix, multi-token chunks, one-token steps and reordered beams, vs. a full forward."""
    from ttrl.planning.decoder import CachedDecoder

    model = decoding_model
    generator = torch.Generator().manual_seed(0)
    n_env, per_env = 2, 3
    rows = n_env * per_env
    prefix = torch.randint(0, N + 1, (n_env, 2 * T + 1), generator=generator)  # stop tokens too
    row_env = torch.arange(n_env).repeat_interleave(per_env)
    sequences = torch.cat(
        [prefix[row_env], torch.randint(0, N, (rows, 2 * T), generator=generator)], 1
    )
    decoder = CachedDecoder(model, n_env, rows, model.config.block_size)

    def expected(length):
        with torch.no_grad():
            return model(sequences[:, :length]).logits[:, -1]

    with torch.no_grad():
        shared = decoder.feed(prefix)
        torch.testing.assert_close(shared, expected(prefix.shape[1])[::per_env])
        decoder.share()
        decoder.select_rows(row_env)
        length = prefix.shape[1] + T - 1  # a chunk that ends just before a value token
        got = decoder.feed(sequences[:, prefix.shape[1] : length])
        torch.testing.assert_close(got, expected(length))
        for _ in range(T):  # one token at a time, across the value token
            length += 1
            torch.testing.assert_close(
                decoder.feed(sequences[:, length - 1 : length]), expected(length)
            )
        order = torch.tensor([2, 0, 1, 4, 4, 3])  # reorder and repeat within each environment
        sequences = sequences[order]
        decoder.select_rows(order)
        length += 1
        torch.testing.assert_close(
            decoder.feed(sequences[:, length - 1 : length]), expected(length)
        )


def test_distinct_histories_groups_identical_beams_per_environment():
    from ttrl.planning.window import distinct_histories

    history = torch.tensor([[1, 2], [3, 4], [1, 2], [1, 2], [1, 2], [5, 6]])
    row_env = torch.tensor([0, 0, 0, 1, 1, 1])
    group, representative = distinct_histories(history, row_env, n_env=2)
    # env 0 has 2 distinct histories, env 1 has 2: two slots per environment
    assert representative.shape == (4,)
    assert torch.equal(history[representative][group], history)  # every row finds its history
    assert set(group[:3].tolist()) <= {0, 1} and set(group[3:].tolist()) <= {2, 3}
    assert group[0] == group[2] and group[0] != group[1] and group[3] == group[4] != group[5]


def test_decoder_expanded_candidates_read_their_parents_cache(decoding_model):
    """After an expand (tiling each environment's beams), candidates equal a full forward."""
    from ttrl.planning.decoder import CachedDecoder

    model = decoding_model
    generator = torch.Generator().manual_seed(1)
    n_env, beams, children = 2, 2, 3
    prefix = torch.randint(0, N, (n_env, T + S), generator=generator)
    parents = torch.cat(
        [
            prefix.repeat_interleave(beams, 0),
            torch.randint(0, N, (n_env * beams, T), generator=generator),
        ],
        1,
    )
    decoder = CachedDecoder(model, n_env, n_env * beams * children, model.config.block_size)
    with torch.no_grad():
        decoder.feed(prefix)
        decoder.share()
        decoder.select_rows(torch.arange(n_env).repeat_interleave(beams))
        decoder.feed(parents[:, prefix.shape[1] :])
        tiled = (
            torch.arange(n_env * beams).view(n_env, 1, beams).expand(-1, children, -1).reshape(-1)
        )
        decoder.expand(children)
        sequences = parents[tiled]
        for _ in range(3):  # candidates add their own tokens
            sequences = torch.cat(
                [sequences, torch.randint(0, N, (len(tiled), 1), generator=generator)], 1
            )
            got = decoder.feed(sequences[:, -1:])
            torch.testing.assert_close(got, model(sequences).logits[:, -1])
        kept = torch.tensor([5, 1, 2, 4, 11, 6, 9, 9])  # the best candidates, per environment
        decoder.select_rows(kept)
        sequences = torch.cat(
            [sequences[kept], torch.randint(0, N, (len(kept), 1), generator=generator)], 1
        )
        torch.testing.assert_close(decoder.feed(sequences[:, -1:]), model(sequences).logits[:, -1])


def test_decoder_copies_a_reorder_only_when_it_is_read(model):
    """select_rows defers its copy: a reset (the window sliding) drops it unread; a feed makes it."""
    from ttrl.planning.decoder import CachedDecoder

    n_env, rows = 1, 4
    decoder = CachedDecoder(model, n_env, rows, model.config.block_size)
    prefix = torch.randint(0, N, (n_env, T + S), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        decoder.feed(prefix)  # one row, T + S - 1 slots (its value token has none)
        slots = decoder.own_slots
        target = decoder.own[1 - decoder.current, :, :, :rows, :, :slots]  # where rows go
        target.fill_(float("nan"))
        decoder.select_rows(torch.zeros(rows, dtype=torch.long))
        decoder.reset()  # the window slid: the reorder is never read
        assert target.isnan().all()
        decoder.feed(prefix)
        decoder.select_rows(torch.zeros(rows, dtype=torch.long))
        decoder.own[decoder.current, :, :, :rows, :, :slots].fill_(float("nan"))
        decoder.feed(torch.zeros(rows, 1, dtype=torch.long))  # read: copied first
        copied = decoder.own[decoder.current, :, :, :rows, :, :slots]
        source = decoder.own[1 - decoder.current, :, :, :1, :, :slots]
        assert torch.equal(copied, source.expand_as(copied))


def test_rebuild_keeps_each_distinct_history_once_and_equals_the_model(decoding_model):
    """A window rebuild feeds each distinct beam history once (with the compiled kernel as history
    levels that rows read in place, copying nothing); every later step, expand and reorder still
    gives the model's own logits on the whole sequence."""
    from ttrl.planning.decoder import CachedDecoder
    from ttrl.planning.window import ModelWindow

    model = decoding_model
    generator = torch.Generator().manual_seed(4)

    def tokens(rows, length):
        return torch.randint(0, N, (rows, length), generator=generator)

    n_env, beams = 2, 4
    prefix = tokens(n_env, T + S)
    row_env = torch.arange(n_env).repeat_interleave(beams)
    # beams 0 and 1 (and 2 and 3) of an environment share their first planned transition
    first = tokens(n_env * beams // 2, T).repeat_interleave(2, 0)
    sequences = torch.cat([prefix[row_env], first, tokens(n_env * beams, A + 2)], 1)
    decoder = CachedDecoder(model, n_env, 2 * n_env * beams, model.config.block_size)
    window = ModelWindow(model, prefix, model.config.layout, None, decoder)

    def check(sequences):
        with torch.no_grad():
            got = window.next_logits(sequences, sequences.shape[1], row_env)
            torch.testing.assert_close(got, model(sequences).logits[:, -1])

    check(sequences)  # the rebuild: prefix once per environment, then the distinct histories
    if decoder.kernel is not None:
        _, lengths, groups = decoder.levels
        assert lengths == [T - 1, A + 1]  # value tokens keep no slot
        assert groups == [2 * n_env, n_env * beams]  # the shared transition is kept once
        assert decoder.own_slots == 0
    for _ in range(S):  # the next observation, one token at a time
        sequences = torch.cat([sequences, tokens(len(sequences), 1)], 1)
        check(sequences)
    children = 2
    tiled = torch.arange(n_env * beams).view(n_env, 1, beams).expand(-1, children, -1).reshape(-1)
    window.expand(children)
    sequences, row_env = sequences[tiled], row_env[tiled]
    for _ in range(2):  # candidates add actions of their own
        sequences = torch.cat([sequences, tokens(len(sequences), 1)], 1)
        check(sequences)
    kept = torch.tensor([7, 0, 3, 3, 8, 15, 12, 9])  # the best candidates, per environment
    window.select(kept)
    sequences, row_env = sequences[kept], row_env[kept]
    sequences = torch.cat([sequences, tokens(len(sequences), 1)], 1)
    check(sequences)


class LowestRewardScorer:
    """A toy third objective: the plan whose rewards so far sum lowest wins. Records its inputs."""

    uses_likelihood = False

    def __init__(self) -> None:
        self.seen: list = []

    def score(self, candidates):
        self.seen.append(candidates)
        return -candidates.rewards.sum(-1)


def test_a_registered_scorer_is_chosen_from_config_and_ranks_as_defined(model, discretizer):
    from ttrl.planning import available_scorers, register_scorer

    scorer = LowestRewardScorer()
    register_scorer("lowest_reward", lambda: scorer)
    assert "lowest_reward" in available_scorers()
    config = planner_config(objective="lowest_reward", window_transitions=3)
    planner = BeamPlanner(model, discretizer, config)
    assert planner.scorer is scorer
    prefix = random_prefix(2, 2, seed=1)
    plan = planner.plan(prefix, generator=torch.Generator().manual_seed(0))
    assert [c.step for c in scorer.seen] == list(range(config.horizon))
    last = scorer.seen[-1]
    # brute force over the last step's candidates: the kept plan of each env is its best one
    for env in range(2):
        rows = (last.row_env == env).nonzero().squeeze(-1)
        best = rows[(-last.rewards[rows].sum(-1)).argmax()]
        assert plan.scores[env].item() == pytest.approx(-last.rewards[best].sum().item())
        tokens = last.sequences[best, last.plan_start :].view(-1, T)
        assert torch.equal(plan.tokens[env], tokens)
        assert plan.rewards[env].tolist() == pytest.approx(last.rewards[best].tolist())
    # its plans are searched like any others: the uncached search agrees
    uncached = BeamPlanner(
        model, discretizer, planner_config(**{**vars(config), "use_cache": False})
    )
    other = uncached.plan(prefix, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plan.tokens, other.tokens)


def test_candidates_decode_the_state_and_action_of_a_step(model, discretizer):
    scorer = LowestRewardScorer()
    planner = BeamPlanner(model, discretizer, planner_config(horizon=2), scorer=scorer)
    planner.plan(random_prefix(1, 2, seed=2), generator=torch.Generator().manual_seed(0))
    candidates = scorer.seen[-1]
    states, actions = candidates.decoded_state_action(0)
    tokens = candidates.step_tokens(0)
    mids = [discretizer.midpoints(d)[:, 0] for d in range(S + A)]
    by_hand = torch.tensor([[mids[d][int(row[d])] for d in range(S + A)] for row in tokens])
    torch.testing.assert_close(states.double(), by_hand[:, :S].double())
    torch.testing.assert_close(actions.double(), by_hand[:, S:].double())


def test_an_unknown_objective_names_the_registered_ones():
    with pytest.raises(
        TtrlError, match=r"objective='reward' is unknown; use one of return, likelihood"
    ):
        PlannerConfig(objective="reward")
