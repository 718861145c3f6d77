"""The thread policy of model calls: small calls on one thread while idle threads sleep."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ttrl.discretization import Discretizer
from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig
from ttrl.planning import BeamPlanner, PlannerConfig
from ttrl.planning.decoder import CachedDecoder
from ttrl.threads import (
    SPLIT_MIN_ROW_TOKENS,
    threads_for_call,
    threads_wait_passively,
    torch_threads,
)

S, A, N = 3, 2, 10
T = S + A + 2


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> TrajectoryTransformer:
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig(
        vocab_size=N, observation_dim=S, action_dim=A, transition_dim=T, block_size=4 * T - 1,
        n_layer=1, n_head=2, n_embd=16,
    )  # fmt: skip
    return TrajectoryTransformer(config).eval()


@pytest.mark.parametrize(
    ("value", "passive"),
    [("PASSIVE", True), ("passive ", True), ("ACTIVE", False), ("", False), (None, False)],
)
def test_passive_waits_are_read_from_the_openmp_variable(monkeypatch, value, passive):
    if value is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", value)
    assert threads_wait_passively() is passive


def test_only_small_calls_with_passive_waits_get_one_thread(two_threads):
    small, big = SPLIT_MIN_ROW_TOKENS - 1, SPLIT_MIN_ROW_TOKENS
    assert threads_for_call(small, passive=True) == 1
    assert threads_for_call(big, passive=True) is None
    assert threads_for_call(small, passive=False) is None
    torch.set_num_threads(1)
    assert threads_for_call(small, passive=True) is None  # one thread already


def test_torch_threads_restores_the_count_after_an_error(two_threads):
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("passive", [True, False])
def test_decoder_runs_small_feeds_on_one_thread_when_threads_sleep(
    monkeypatch, two_threads, model, passive
):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE" if passive else "ACTIVE")
    rows = SPLIT_MIN_ROW_TOKENS // 2
    decoder = CachedDecoder(model, 1, rows, model.config.block_size)
    seen = []
    run = model.run

    def counting_run(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return run(*args, **kwargs)

    monkeypatch.setattr(model, "run", counting_run)
    tokens = torch.randint(0, N, (rows, T))
    with torch.no_grad():
        decoder.feed(tokens[:1, :S])  # 3 row-tokens
        decoder.share()
        decoder.feed(tokens[:, S : S + 2])  # rows x 2 = SPLIT_MIN_ROW_TOKENS row-tokens
        decoder.feed(tokens[:, S + 2 : S + 3])  # half of it
    assert seen == ([1, 2, 1] if passive else [2, 2, 2])
    assert torch.get_num_threads() == 2


def test_plans_do_not_depend_on_the_thread_policy(monkeypatch, two_threads, model):
    discretizer = Discretizer.fit(np.random.default_rng(0).normal(size=(200, T)), n_bins=N)
    prefix = torch.randint(0, N, (1, 2 * T + S), generator=torch.Generator().manual_seed(0))
    config = PlannerConfig(horizon=3, beam_width=4, n_expand=2, window_transitions=2)
    model = copy.deepcopy(model).double()  # float64: no summation-order flips between calls
    plans = []
    for policy in ("PASSIVE", "ACTIVE"):
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
        planner = BeamPlanner(model, discretizer, config)
        plans.append(planner.plan(prefix, generator=torch.Generator().manual_seed(1)).tokens)
    assert torch.equal(plans[0], plans[1])
