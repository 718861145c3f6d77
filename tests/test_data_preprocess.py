"""Episode splitting, termination penalty and value targets against a brute-force per-episode loop."""

from __future__ import annotations

import numpy as np
import pytest

from ttrl.data import Transitions, make_transitions, preprocess
from ttrl.errors import TtrlError


def synthetic_transitions(lengths, terminated, seed=0, obs_dim=3, act_dim=2) -> Transitions:
    """Episodes of the given lengths, ending in a termination or a timeout."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    ends = np.cumsum(lengths) - 1
    terminals[ends[np.asarray(terminated)]] = True
    timeouts[ends[~np.asarray(terminated)]] = True
    return make_transitions(
        rng.normal(size=(n, obs_dim)),
        rng.uniform(-1, 1, size=(n, act_dim)),
        rng.normal(size=n),
        terminals,
        timeouts,
    )


def brute_force_rows(t: Transitions, discount: float, penalty: float | None):
    """Per-episode Python: split on done, penalise terminal steps, V_t = sum_{k>=1} g^(k-1) r_{t+k}."""
    episodes, current = [], []
    for i in range(len(t)):
        current.append(i)
        if t.terminals[i] or t.timeouts[i]:
            episodes.append(current)
            current = []
    rows = []
    for episode in episodes:
        rewards = [
            penalty if (t.terminals[i] and penalty is not None) else float(t.rewards[i])
            for i in episode
        ]
        for k, i in enumerate(episode):
            value = sum(discount ** (j - k - 1) * rewards[j] for j in range(k + 1, len(episode)))
            rows.append([*t.observations[i], *t.actions[i], rewards[k], value])
    return episodes, np.array(rows)


@pytest.mark.parametrize("penalty", [-100.0, None, -7.5])
def test_values_and_penalty_match_brute_force(penalty):
    lengths = [5, 1, 12, 3, 9, 2]
    terminated = [True, False, False, True, True, False]
    t = synthetic_transitions(lengths, terminated)
    traj = preprocess(t, discount=0.9, termination_penalty=penalty, max_path_length=20)
    episodes, rows = brute_force_rows(t, 0.9, penalty)
    np.testing.assert_allclose(traj.joined, rows, rtol=1e-5, atol=1e-5)
    assert traj.joined.dtype == np.float32 and traj.transition_dim == 3 + 2 + 2
    np.testing.assert_array_equal(traj.episode_lengths, [len(e) for e in episodes])
    np.testing.assert_array_equal(traj.episode_starts, [e[0] for e in episodes])
    np.testing.assert_array_equal(traj.terminated, terminated)


def test_a_step_with_both_flags_is_a_terminal_and_the_data_end_closes_an_episode():
    t = synthetic_transitions([4, 6], [False, False])
    t.terminals[3] = True  # terminated and truncated at once: the penalty applies
    t.timeouts[-1] = False  # data that stop mid-episode
    traj = preprocess(t, termination_penalty=-100.0, max_path_length=10)
    assert traj.joined[3, -2] == -100.0 and traj.terminated.tolist() == [True, False]
    np.testing.assert_array_equal(traj.episode_lengths, [4, 6])


def test_episodes_longer_than_max_path_length_are_rejected():
    t = synthetic_transitions([5, 30], [True, False])
    with pytest.raises(TtrlError, match="max_path_length=20"):
        preprocess(t, max_path_length=20)


def test_loaded_dataset_preprocesses_like_brute_force(tiny_hopper):
    from ttrl.data import load_transitions

    t = load_transitions(tiny_hopper)
    traj = preprocess(t)
    _, rows = brute_force_rows(t, 0.99, -100.0)
    np.testing.assert_allclose(traj.joined, rows, rtol=1e-5, atol=1e-4)
    assert traj.terminated.any()  # random hopper falls over: real terminations are covered
