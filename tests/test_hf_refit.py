"""The discretiser refit for HuggingFace checkpoints against the released pipeline, written out plainly.

The released code (jannerm/trajectory-transformer) reads D4RL with a loop over ``range(N - 1)`` (the
dataset's last row is dropped), splits episodes after ``terminal or timeout``, puts the penalty on
the float32 reward of every real terminal, sums each value in float64 over the zero-padded
``max_path_length`` horizon, joins ``[s, a, r, V]`` as float64 and fits quantile edges on that.
``preprocess(..., released_compat=True)`` must give exactly its rows, edges and tokens; without the
option ttrl keeps its own rows (last step kept, float32).
"""

from __future__ import annotations

import importlib
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from ttrl.data import load_transitions, make_transitions, preprocess
from ttrl.discretization import Discretizer
from ttrl.training.pipeline import load_trajectories

N = 100
# the module, not the function of the same name that ttrl.data exports
preprocess_module = importlib.import_module("ttrl.data.preprocess")


# --- the released pipeline, one step at a time ---------------------------------------------------
def released_joined(t, discount: float, penalty: float | None, max_path_length: int) -> np.ndarray:
    """The float64 ``[s, a, r, V]`` rows the released code fits its discretiser on."""
    observations, actions, rewards, done, real_terminal = [], [], [], [], []
    for i in range(len(t) - 1):  # the released loader stops one row short of the end
        observations.append(t.observations[i])
        actions.append(t.actions[i])
        rewards.append(t.rewards[i])
        done.append(bool(t.terminals[i] or t.timeouts[i]))
        real_terminal.append(bool(t.terminals[i]))
    rewards = np.array(rewards, dtype=np.float32)  # D4RL's reward dtype: the penalty is float32 too
    if penalty is not None:
        rewards[np.array(real_terminal)] = penalty

    episodes = [[]]
    for i, end in enumerate(done):
        episodes[-1].append(i)
        if end:
            episodes.append([])
    if not episodes[-1]:
        episodes.pop()

    # Each V_t is one numpy sum over all max_path_length - t - 1 padded positions: numpy sums
    # pairwise, so the number of terms (trailing zeros included) decides the float64 rounding.
    discounts = discount ** np.arange(max_path_length)
    values = np.zeros(len(rewards), dtype=np.float64)
    for episode in episodes:
        padded = np.zeros(max_path_length, dtype=np.float32)
        padded[: len(episode)] = rewards[episode]
        for k, i in enumerate(episode):
            values[i] = np.sum(padded[k + 1 :] * discounts[: max_path_length - k - 1])

    joined = np.concatenate(
        [np.array(observations), np.array(actions), rewards[:, None], values[:, None]], axis=1
    )
    assert joined.dtype == np.float64
    return joined


def released_thresholds(joined: np.ndarray, n_bins: int) -> np.ndarray:
    """Per dimension: every ceil(n / N)-th sorted value, then the maximum."""
    step = math.ceil(len(joined) / n_bins)
    columns = []
    for d in range(joined.shape[1]):
        ordered = np.sort(joined[:, d])
        columns.append(np.append(ordered[::step], joined[:, d].max()))
    return np.stack(columns, axis=1)


def released_encode(thresholds: np.ndarray, x: np.ndarray, n_bins: int) -> np.ndarray:
    """The largest i with x >= thresholds[i], clipped to [0, N - 1]."""
    tokens = np.zeros(x.shape, dtype=np.int64)
    for i, edge in enumerate(thresholds):
        tokens[x >= edge] = i
    return np.clip(tokens, 0, n_bins - 1)


def fit_quietly(joined: np.ndarray, n_bins: int = N) -> Discretizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random data: a few constant dims have collapsed bins
        return Discretizer.fit(joined, n_bins, "quantile")


def data_config(**overrides) -> SimpleNamespace:
    settings = {"source": "auto", "discount": 0.99, "termination_penalty": -100.0}
    return SimpleNamespace(**{"max_path_length": 1000, **settings, **overrides})


# --- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset_fixture", ["tiny_hopper", "tiny_dataset"])
def test_compat_refit_gives_the_released_rows_thresholds_and_tokens(dataset_fixture, request):
    name = request.getfixturevalue(dataset_fixture)
    t = load_transitions(name)
    cfg = SimpleNamespace(env=SimpleNamespace(name=name), data=data_config())
    traj = load_trajectories(cfg, released_compat=True)  # the pipeline's load -> preprocess path

    expected_rows = released_joined(t, 0.99, -100.0, 1000)
    assert traj.joined.dtype == np.float64 and traj.released_compat
    np.testing.assert_array_equal(traj.joined, expected_rows)

    disc = fit_quietly(traj.joined)
    expected_thr = released_thresholds(expected_rows, N)
    assert len(expected_thr) == N + 1  # the data size gives every bin an edge, as D4RL's do
    np.testing.assert_array_equal(disc.thresholds, expected_thr)
    np.testing.assert_array_equal(
        disc.encode(traj.joined), released_encode(expected_thr, expected_rows, N)
    )
    if dataset_fixture == "tiny_hopper":  # real terminations: the penalty path is exercised
        assert t.terminals[:-1].any() and (expected_rows[:, -2] == -100.0).any()


def test_own_preprocessing_keeps_the_last_step_and_float32(tiny_hopper):
    t = load_transitions(tiny_hopper)
    own = preprocess(t)
    compat = preprocess(t, released_compat=True)
    assert own.joined.dtype == np.float32 and not own.released_compat
    assert len(own) == len(t) == len(compat) + 1
    assert own.episode_lengths.sum() == len(t)
    # s, a, r of the shared steps are equal, values too outside the last (shortened) episode
    np.testing.assert_array_equal(own.joined[:-1, :-1], compat.joined[:, :-1])
    before_last = own.episode_starts[-1]
    np.testing.assert_allclose(
        own.joined[:before_last, -1], compat.joined[:before_last, -1], rtol=1e-6, atol=1e-4
    )
    # yet the edges differ: the option is what makes them the released ones
    released_thr = released_thresholds(released_joined(t, 0.99, -100.0, 1000), N)
    assert not np.array_equal(fit_quietly(own.joined).thresholds, released_thr)


def long_episodes(lengths, terminated, seed=0):
    """Synthetic episodes (obs 2, act 1) ending in a termination or a timeout."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    ends = np.cumsum(lengths) - 1
    terminals[ends[np.asarray(terminated)]] = True
    timeouts[ends[~np.asarray(terminated)]] = True
    return make_transitions(
        rng.normal(size=(n, 2)),
        rng.uniform(-1, 1, size=(n, 1)),
        rng.normal(size=n) * 3,
        terminals,
        timeouts,
    )


@pytest.mark.parametrize("penalty", [-7.3, None])
def test_compat_values_are_bitwise_for_long_episodes_and_any_chunking(penalty, monkeypatch):
    # Episodes longer than numpy's 128-term pairwise block, a 1-step episode, a final episode that
    # terminates (its last step, dropped, takes the penalty with it), and a penalty float32 rounds.
    lengths = [300, 1, 129, 40, 520, 7, 260]
    terminated = [True, True, False, True, False, False, True]
    t = long_episodes(lengths, terminated)
    expected = released_joined(t, 0.97, penalty, 600)
    for chunk in (2, 3, 2048):  # blocks of episodes must not change a bit
        monkeypatch.setattr(preprocess_module, "RELEASED_VALUE_CHUNK", chunk)
        traj = preprocess(
            t, discount=0.97, termination_penalty=penalty, max_path_length=600, released_compat=True
        )
        np.testing.assert_array_equal(traj.joined, expected)
    np.testing.assert_array_equal(traj.episode_lengths, [*lengths[:-1], lengths[-1] - 1])
    assert traj.terminated.tolist() == [*terminated[:-1], False]
    # ttrl's own recursion on the same rows differs in the last float64 bits: exactness needs the
    # released sums
    recursion = preprocess_module.value_targets(
        expected[:, -2], traj.episode_starts, traj.episode_lengths, 0.97
    )
    np.testing.assert_allclose(recursion, expected[:, -1], rtol=1e-12, atol=1e-12)
    assert not np.array_equal(recursion, expected[:, -1])


def test_a_final_one_step_episode_disappears_as_in_the_released_code():
    t = long_episodes([5, 3, 1], [False, True, True])
    traj = preprocess(t, max_path_length=10, released_compat=True)
    np.testing.assert_array_equal(traj.episode_lengths, [5, 3])
    np.testing.assert_array_equal(traj.joined, released_joined(t, 0.99, -100.0, 10))


def test_hf_checkpoint_refit_is_the_released_discretizer(tmp_path, tiny_hopper):
    """Planning with ``checkpoint=<HF dir>`` refits the discretiser the released way."""
    from test_evaluation import N_BINS, tiny_model
    from ttrl.evaluation import load_checkpoint_with_dataset

    hf_dir = tmp_path / "hf"
    tiny_model(observation_dim=11, action_dim=3).save_pretrained(hf_dir, hf_format=True)
    refit = load_checkpoint_with_dataset(hf_dir, tiny_hopper, {}).discretizer
    rows = released_joined(load_transitions(tiny_hopper), 0.99, -100.0, 1000)
    expected_thr = released_thresholds(rows, N_BINS)
    np.testing.assert_array_equal(refit.thresholds, expected_thr)
    np.testing.assert_array_equal(refit.encode(rows), released_encode(expected_thr, rows, N_BINS))
