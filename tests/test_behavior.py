"""Behaviour policies: SAC training with snapshots, the medium-point buffer, resume, and SB3-free loading."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ttrl.errors import TtrlError
from ttrl.making.behavior import (
    CHECKPOINT_FILE,
    POLICIES_DIR,
    BehaviorPolicy,
    BehaviorTrainingConfig,
    actor_from_sb3,
    evaluate_policy,
    load_actor,
    load_policy,
    medium_snapshot,
    policy_info,
    train_behavior,
)

pytest.importorskip("stable_baselines3")

TINY = {
    "env": "hopper",
    "snapshot_interval": 200,
    "checkpoint_interval": 200,
    "learning_starts": 100,
    "eval_episodes": 2,
    "export_eval_episodes": 3,
    "medium_fraction": 0.0,  # every hopper return is positive: the first snapshot is the medium point
}


def train_tiny_behavior(root: Path) -> tuple[Path, Path]:
    """Train a 400-step hopper SAC into ``root`` once; return (run dir, exported policies dir)."""
    run_dir, policies = root / "run", root / "policies"
    if (
        not (run_dir / "state.json").is_file()
        or not json.loads((run_dir / "state.json").read_text())["finished"]
    ):
        train_behavior(
            BehaviorTrainingConfig(total_steps=400, export_dir=str(policies), **TINY), run_dir
        )
    return run_dir, policies


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    return train_tiny_behavior(tmp_path_factory.mktemp("behavior"))


def _load_sb3_buffer(run_dir: Path) -> SimpleNamespace:
    """The replay buffer arrays of a run's checkpoint, shaped as in SB3 ([steps, 1 env, ...])."""
    with np.load(run_dir / CHECKPOINT_FILE) as data:
        return SimpleNamespace(**{k: data[k] for k in data.files})


def _load_sb3_model(run_dir: Path):
    from stable_baselines3 import SAC

    with np.load(run_dir / CHECKPOINT_FILE) as data:
        return SAC.load(io.BytesIO(data["model_zip"].tobytes()), device="cpu")


def test_snapshots_and_medium_point_are_recorded(tiny_run):
    run_dir, _ = tiny_run
    state = json.loads((run_dir / "state.json").read_text())
    assert state["steps"] == 400 and state["finished"]
    assert [s["step"] for s in state["snapshots"]] == [200, 400]
    assert state["medium_step"] == 200
    for snapshot in state["snapshots"]:
        assert (run_dir / snapshot["file"]).is_file()
        assert len(snapshot["returns"]) == 2
        assert snapshot["return_mean"] == pytest.approx(np.mean(snapshot["returns"]))


def test_medium_replay_is_the_buffer_prefix(tiny_run):
    """The saved npz holds exactly the first medium_step transitions of SB3's own replay buffer."""
    run_dir, policies = tiny_run
    buffer = _load_sb3_buffer(run_dir)
    with np.load(policies / "hopper" / "medium_replay.npz") as data:
        saved = {k: data[k] for k in data.files}
    n = 200
    np.testing.assert_array_equal(
        saved["observations"], buffer.observations[:n, 0].astype(np.float32)
    )
    np.testing.assert_array_equal(saved["actions"], buffer.actions[:n, 0].astype(np.float32))
    np.testing.assert_array_equal(saved["rewards"], buffer.rewards[:n, 0].astype(np.float32))
    ends = np.flatnonzero(buffer.dones[:n, 0] > 0)
    assert not saved["terminations"][-1] or n - 1 in ends
    saved_ends = np.flatnonzero(saved["terminations"] | saved["truncations"])
    # Every episode end of the buffer is kept; the buffer's running episode is closed at step n-1.
    assert sorted(set(ends) | {n - 1}) == list(saved_ends)
    np.testing.assert_array_equal(
        saved["final_observations"], buffer.next_observations[saved_ends, 0].astype(np.float32)
    )
    # Within an episode, each observation is the previous step's next observation.
    inner = np.setdiff1d(np.arange(n - 1), saved_ends)
    np.testing.assert_array_equal(
        saved["observations"][inner + 1], buffer.next_observations[inner, 0].astype(np.float32)
    )


def test_actor_matches_sb3_actor(tiny_run):
    """The SB3-free actor gives SB3's deterministic action and samples from SB3's distribution."""
    run_dir, _ = tiny_run
    model = _load_sb3_model(run_dir)
    actor = actor_from_sb3(model)
    obs = np.random.default_rng(0).normal(size=(8, 11)).astype(np.float32)
    sb3_actions, _ = model.predict(obs, deterministic=True)
    ours = actor.act(torch.from_numpy(obs), deterministic=True).numpy()
    np.testing.assert_allclose(ours, sb3_actions, atol=1e-6)

    mean, log_std, _ = model.actor.get_action_dist_params(torch.from_numpy(obs[:1]))
    samples = actor.act(
        torch.from_numpy(obs[:1]).repeat(20_000, 1), torch.Generator().manual_seed(0)
    )
    pre_tanh = torch.atanh(samples.clamp(-1 + 1e-6, 1 - 1e-6))
    torch.testing.assert_close(pre_tanh.mean(0), mean[0].detach(), atol=0.05, rtol=0.05)
    torch.testing.assert_close(pre_tanh.std(0), log_std[0].exp().detach(), atol=0.05, rtol=0.05)


def test_exported_policy_reproduces_its_recorded_evaluation(tiny_run):
    _, policies = tiny_run
    path = policies / "hopper" / "medium.pt"
    info = policy_info(path)
    assert info["training_steps"] == 200 and info["level"] == "medium"
    assert info["return_stderr"] == pytest.approx(np.std(info["returns"], ddof=1) / math.sqrt(3))
    assert info["command"] and info["date"]
    again = evaluate_policy(
        load_policy(path, seed=info["seed"]), "hopper", 3, seed=20_000 + info["seed"]
    )
    np.testing.assert_allclose(again.returns, info["returns"], rtol=1e-5)
    assert (policies / "hopper" / "expert.pt").is_file()
    assert policy_info(policies / "hopper" / "expert.pt")["training_steps"] == 400


def test_policy_acts_on_single_and_batched_observations(tiny_run):
    _, policies = tiny_run
    actor = load_actor(policies / "hopper" / "medium.pt")
    policy = BehaviorPolicy(actor, seed=3)
    obs = np.zeros((5, 11))
    batch = policy(obs)
    assert batch.shape == (5, 3) and np.all(np.abs(batch) <= 1)
    assert policy(obs[0]).shape == (3,)
    policy.seed(3)
    np.testing.assert_array_equal(policy(obs), batch)


def test_resume_continues_the_run(tmp_path):
    """A killed run resumes from its checkpoint: steps continue and the cut episode is closed."""
    torch.set_num_threads(1)
    cfg = BehaviorTrainingConfig(total_steps=200, **TINY)
    train_behavior(cfg, tmp_path)
    cfg.total_steps = 400
    state = train_behavior(cfg, tmp_path)
    assert state["steps"] == 400
    assert [s["step"] for s in state["snapshots"]] == [200, 400]
    buffer = _load_sb3_buffer(tmp_path)
    assert int(buffer.pos) == 400
    assert buffer.timeouts[199, 0] == 1 and buffer.dones[199, 0] == 1


def test_missing_policy_names_the_training_command(tmp_path):
    with pytest.raises(TtrlError, match=re.escape("train_behavior.py env=walker2d")):
        load_policy("walker2d-expert", policies_dir=tmp_path)


SHIPPED = sorted(POLICIES_DIR.glob("*/*.pt"))


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}-{p.stem}" for p in SHIPPED])
def test_shipped_policy_loads_and_acts(path):
    import gymnasium as gym

    info = policy_info(path)
    env = gym.make(info["env_id"])
    policy = load_policy(path, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        action = policy(obs)
        assert env.action_space.contains(action.astype(env.action_space.dtype))
        obs, *_ = env.step(action)
    env.close()


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}-{p.stem}" for p in SHIPPED])
def test_shipped_policy_return_matches_its_record(path):
    """Three fresh episodes: their mean is within the recorded mean's statistical range."""
    info = policy_info(path)
    fresh = evaluate_policy(load_policy(path, seed=1), info["env"], 3, seed=30_000)
    recorded_std = info["return_stderr"] * math.sqrt(info["n_episodes"])
    tolerance = 4 * math.sqrt(recorded_std**2 / 3 + info["return_stderr"] ** 2) + 0.02 * abs(
        info["return_mean"]
    )
    assert abs(fresh.mean - info["return_mean"]) <= tolerance


def test_medium_point_is_the_snapshot_closest_to_the_target_around_the_crossing():
    def snaps(*returns):
        return [{"step": 5000 * (i + 1), "return_mean": r} for i, r in enumerate(returns)]

    target = 1078.0
    # Learning jumped far past the target: the snapshot before the crossing is the medium policy.
    assert medium_snapshot(snaps(845.0, 1055.0, 2231.0), target)["step"] == 10_000
    # The crossing snapshot is closer: it is the medium policy.
    assert medium_snapshot(snaps(700.0, 1090.0), target)["step"] == 10_000
    assert medium_snapshot(snaps(1500.0), target)["step"] == 5000
