"""Open-loop rollouts against a brute-force loop that re-runs the cropped window for every token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig
from ttrl.planning.rollouts import Sampling, TokenFilter, sample_rollout
from ttrl.planning.state import RolloutState

N, S, A = 10, 3, 2
T = S + A + 2


@pytest.fixture(scope="module")
def model() -> TrajectoryTransformer:
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig.for_dims(
        S, A, sequence_length=3, vocab_size=N, n_layer=2, n_head=2, n_embd=16
    )
    model = TrajectoryTransformer(config).double().eval()
    with torch.no_grad():
        model.head.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def discretizer() -> Discretizer:
    return Discretizer.fit(np.random.default_rng(0).normal(size=(500, T)), n_bins=N)


def prefix(rows: int, context: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, N, (rows, context * T + S), generator=generator)


def brute_force_greedy(model, start: torch.Tensor, n: int, window: int, given=None) -> torch.Tensor:
    """Greedy tokens, the model re-run on the last ``window`` transitions - 1 tokens each time."""
    sequence = start.clone()
    max_tokens = window * T - 1
    plan_start = start.shape[1] - S
    for _ in range(n * T):
        length = sequence.shape[1]
        crop = 0 if length <= max_tokens else -(-(length - max_tokens) // T) * T
        logits = model(sequence[:, crop:]).logits[:, -1]
        token = logits.argmax(-1)
        dim = (length - plan_start) % T
        if given is not None and S <= dim < S + A:
            token = given[:, (length - plan_start) // T, dim - S]
        sequence = torch.cat((sequence, token[:, None]), dim=1)
    return sequence


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_rollout_longer_than_the_window_equals_the_brute_force_loop(
    model, discretizer, use_cache
):
    start = prefix(3, context=2)
    rollout = sample_rollout(
        model, discretizer, start, 6, sampling=Sampling.greedy(), use_cache=use_cache
    )
    expected = brute_force_greedy(model, start, 6, window=3)
    planned = expected[:, start.shape[1] - S :]
    assert torch.equal(rollout.tokens, planned[:, : 6 * T].view(3, 6, T))
    assert torch.equal(rollout.next_observation_tokens, planned[:, -S:])


def test_given_actions_are_fed_and_their_consequences_predicted(model, discretizer):
    start = prefix(2, context=1, seed=3)
    given = torch.randint(0, N, (2, 5, A), generator=torch.Generator().manual_seed(1))
    rollout = sample_rollout(
        model, discretizer, start, 5, actions=given, sampling=Sampling.greedy()
    )
    assert torch.equal(rollout.tokens[:, :, S : S + A], given)
    expected = brute_force_greedy(model, start, 5, window=3, given=given)
    assert torch.equal(rollout.tokens, expected[:, start.shape[1] - S :][:, : 5 * T].view(2, 5, T))
    # actions given as values are encoded with the discretiser first
    values = discretizer.decode(given.numpy(), dims=slice(S, S + A))
    again = sample_rollout(
        model, discretizer, start, 5, actions=torch.as_tensor(values), sampling=Sampling.greedy()
    )
    assert torch.equal(again.tokens, rollout.tokens)


def test_sampled_rollouts_are_the_same_cached_and_uncached(model, discretizer):
    start = prefix(4, context=2, seed=5)
    sampling = Sampling(action=TokenFilter(cdf=0.5), observation=TokenFilter(top_k=3))
    runs = [
        sample_rollout(
            model,
            discretizer,
            start,
            5,
            sampling=sampling,
            use_cache=cache,
            keep_probs=True,
            generator=torch.Generator().manual_seed(7),
        )
        for cache in (True, False)
    ]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    torch.testing.assert_close(runs[0].log_probs, runs[1].log_probs)
    # log_probs are the kept distributions at the sampled tokens, s_{t+1} in the s dims of row t
    rollout = runs[0]
    sampled = torch.cat(
        (
            rollout.tokens[:, :, S:],
            torch.cat((rollout.tokens[:, 1:, :S], rollout.next_observation_tokens[:, None]), 1),
        ),
        dim=-1,
    )  # [rows, n, T]: a, r, V of t then s_{t+1}
    reordered = torch.cat((rollout.log_probs[:, :, S:], rollout.log_probs[:, :, :S]), dim=-1)
    probs = torch.cat((rollout.probs[:, :, S:], rollout.probs[:, :, :S]), dim=2)
    torch.testing.assert_close(reordered, probs.gather(-1, sampled[..., None]).squeeze(-1).log())
    decoded = discretizer.decode(rollout.next_observation_tokens.numpy(), dims=slice(0, S))
    np.testing.assert_allclose(rollout.observations[:, -1].numpy(), decoded, rtol=1e-6)


def test_bad_rollout_input_is_one_line(model, discretizer):
    with pytest.raises(TtrlError, match="n_transitions >= 1"):
        sample_rollout(model, discretizer, prefix(1, 1), 0)
    with pytest.raises(TtrlError, match="whole transitions"):
        sample_rollout(model, discretizer, prefix(1, 1)[:, :-1], 2)
    with pytest.raises(TtrlError, match=r"actions must be \[rows, n_transitions, action_dim\]"):
        sample_rollout(model, discretizer, prefix(1, 1), 2, actions=torch.zeros(1, 3, A))
    with pytest.raises(TtrlError, match="window_transitions=5"):
        sample_rollout(model, discretizer, prefix(1, 1), 2, window_transitions=5)


class _Scored(RolloutState):
    per_row = ("score",)


def test_rollout_state_moves_rows_their_tensors_and_the_cache_together(model):
    """After appends, an expand and a reordering select, every row's logits are those of a plain
    forward over its own tokens, and a per-row tensor followed its row."""
    from ttrl.planning.decoder import CachedDecoder
    from ttrl.planning.window import ModelWindow

    start = prefix(2, context=1)  # two environments
    max_window = 3 * T - 1
    window = ModelWindow(
        model, start, model.config.layout, max_window, CachedDecoder(model, 2, 12, max_window)
    )
    with torch.inference_mode():
        state = _Scored(window, start, 2 * T)
        state.score = torch.arange(2.0)
        state.expand(3)  # rows: env 0 x3, env 1 x3
        assert state.row_env.tolist() == [0, 0, 0, 1, 1, 1]
        assert state.score.tolist() == [0, 0, 0, 1, 1, 1]
        state.score = state.score + torch.arange(6.0) / 10
        state.append(torch.tensor([1, 2, 3, 4, 5, 6]))  # a token of each row's own
        state.sample(top_k=None, cdf=None, generator=torch.Generator().manual_seed(0))
        keep = torch.tensor([2, 0, 4, 5])  # two rows of each environment, reordered
        expected_score = state.score[keep]
        expected_tokens = state.sequences[keep, : state.length]
        state.select(keep)
        torch.testing.assert_close(state.score, expected_score)
        assert torch.equal(state.sequences[:, : state.length], expected_tokens)
        assert state.row_env.tolist() == [0, 0, 1, 1]
        full = model(state.sequences[:, : state.length]).logits[:, -1]
        torch.testing.assert_close(state.logits, full)
