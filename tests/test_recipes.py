"""D4RL-level datasets made from behaviour policies: structure, metadata, and how the levels relate."""

from __future__ import annotations

import re

import minari
import numpy as np
import pytest
import torch

from test_behavior import _load_sb3_buffer, train_tiny_behavior
from ttrl.data import load_transitions, resolve_dataset
from ttrl.data.registry import ENVS, read_minari_metadata
from ttrl.errors import TtrlError
from ttrl.making.behavior import policy_info
from ttrl.making.recipes import level_dataset_summary, make_level_dataset

pytest.importorskip("stable_baselines3")

N_STEPS = 1500
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")


@pytest.fixture(scope="module")
def hopper_levels(tmp_path_factory):
    """Every hopper level made from a tiny SAC run, in a module-wide Minari root."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("recipes")
    run_dir, policies = train_tiny_behavior(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        for level in LEVELS:
            make_level_dataset(
                f"hopper-{level}", N_STEPS, seed=1, policies_dir=policies, progress=False
            )
        yield run_dir, policies


def _episodes(level: str) -> list:
    return list(minari.load_dataset(f"ttrl/hopper/{level}-v0").iterate_episodes())


def _metadata(level: str) -> dict:
    return read_minari_metadata(f"ttrl/hopper/{level}-v0")


@pytest.mark.parametrize("level", LEVELS)
def test_level_loads_with_d4rl_refs_and_its_policy(hopper_levels, level):
    _, policies = hopper_levels
    spec = resolve_dataset(f"hopper-{level}", source="ttrl")
    assert spec.minari_id == f"ttrl/hopper/{level}-v0"
    assert (spec.ref_min_score, spec.ref_max_score) == (
        ENVS["hopper"].ref_min_score,
        ENVS["hopper"].ref_max_score,
    )
    transitions = load_transitions(spec)
    assert transitions.observation_dim == 11 and transitions.action_dim == 3
    assert transitions.terminals[-1] or transitions.timeouts[-1]
    expected_steps = {"medium-replay": 200, "medium-expert": 2 * N_STEPS}.get(level, N_STEPS)
    assert len(transitions) == expected_steps
    meta = _metadata(level)
    assert meta["ref_min_score"] == pytest.approx(ENVS["hopper"].ref_min_score)
    ttrl_meta = meta["ttrl"]
    assert ttrl_meta["n_steps"] == expected_steps and ttrl_meta["name"] == f"hopper-{level}"
    if level in ("medium", "expert"):
        info = policy_info(policies / "hopper" / f"{level}.pt")
        assert ttrl_meta["policy"].endswith(f"hopper/{level}.pt")
        assert ttrl_meta["policy_return_mean"] == pytest.approx(info["return_mean"])
        assert ttrl_meta["policy_training_steps"] == info["training_steps"]


def test_medium_and_expert_use_their_own_policies(hopper_levels):
    """Same seed, same env resets: only the policy differs, so the first actions differ."""
    medium, expert = _episodes("medium")[0], _episodes("expert")[0]
    np.testing.assert_array_equal(medium.observations[0], expert.observations[0])
    assert not np.allclose(medium.actions[0], expert.actions[0])


def test_medium_expert_concatenates_medium_then_expert(hopper_levels):
    parts = _episodes("medium") + _episodes("expert")
    combined = _episodes("medium-expert")
    assert len(combined) == len(parts)
    for ours, part in zip(combined, parts, strict=True):
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(ours, key), getattr(part, key))
    assert set(_metadata("medium-expert")["ttrl"]["parts"]) == {"medium", "expert"}


def test_medium_replay_episodes_end_where_the_buffer_episodes_ended(hopper_levels):
    run_dir, _ = hopper_levels
    buffer = _load_sb3_buffer(run_dir)
    n = 200  # the tiny run's medium point
    ends = list(np.flatnonzero(buffer.dones[:n, 0] > 0))
    ends = ends if ends and ends[-1] == n - 1 else [*ends, n - 1]
    expected_lengths = np.diff([-1, *ends])
    episodes = _episodes("medium-replay")
    np.testing.assert_array_equal([len(e.rewards) for e in episodes], expected_lengths)
    starts = np.concatenate([[0], np.asarray(ends[:-1]) + 1])
    for episode, start, end in zip(episodes, starts, ends, strict=True):
        np.testing.assert_allclose(
            episode.observations[:-1], buffer.observations[start : end + 1, 0]
        )
        np.testing.assert_allclose(episode.observations[-1], buffer.next_observations[end, 0])
        np.testing.assert_allclose(episode.actions, buffer.actions[start : end + 1, 0])
        terminated = buffer.dones[end, 0] > 0 and not buffer.timeouts[end, 0] > 0
        assert episode.terminations[-1] == terminated
        assert episode.terminations[-1] or episode.truncations[-1]


def test_existing_dataset_is_not_overwritten(hopper_levels):
    with pytest.raises(TtrlError, match="already exists"):
        make_level_dataset("hopper-random", 100, progress=False)


@pytest.mark.parametrize("level", ["medium", "expert", "medium-replay", "medium-expert"])
def test_missing_policy_or_buffer_names_the_training_command(minari_root, tmp_path, level):
    with pytest.raises(TtrlError, match=re.escape("python scripts/train_behavior.py env=walker2d")):
        make_level_dataset(f"walker2d-{level}", 100, policies_dir=tmp_path, progress=False)


def test_summary_averages_whole_episodes(hopper_levels):
    """Brute force over Minari's own episodes: terminated or 1000 steps long count, the cut one not."""
    episodes = _episodes("medium")
    whole = [e for e in episodes if e.terminations[-1] or len(e.rewards) >= 1000]
    expected = np.mean([e.rewards.sum() for e in whole])
    summary = level_dataset_summary("hopper-medium")
    assert summary["n_episodes"] == len(episodes) and summary["n_whole_episodes"] == len(whole)
    assert summary["return_mean"] == pytest.approx(expected, rel=1e-5)
    spec = resolve_dataset("hopper-medium")
    assert summary["normalized_score_mean"] == pytest.approx(
        spec.normalized_score(expected), rel=1e-5
    )
