"""IQL: its losses and target update against hand computations, its values on toy MDPs against
hand-computed fixed points, and scripts/train_baseline.py algo=iql / scripts/train_q.py end to end
with an exact resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ttrl.baselines.data import TransitionBatch, load_baseline_data
from ttrl.baselines.iql import (
    IQLConfig,
    IQLModel,
    expectile_loss,
    fitted_iql,
    polyak_update,
    return_range_scale,
    td_targets,
    train_iql,
)
from ttrl.baselines.runner import train_baseline
from ttrl.checkpoint import load_bundle
from ttrl.config import compose_config
from ttrl.errors import TtrlError

torch.set_num_threads(1)  # the test machine's cores are shared with training jobs

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "algo=iql",
    "logger=disabled",
    "device=cpu",
    "progress=false",
    "num_threads=1",
    "iql.hidden=16",
    "iql.batch_size=8",
    "log_interval=3",
    "eval_interval=5",
    "data.val_fraction=0.25",
]
# toy problems: small networks, a higher lr, a few thousand steps (a few seconds each)
TOY = {"hidden": 32, "steps": 3000, "lr": 1e-3, "batch_size": 256}


def transitions(obs, actions, rewards, next_obs, terminals, ends) -> TransitionBatch:
    def f(x):
        return torch.as_tensor(np.asarray(x, dtype=np.float32))

    def b(x):
        return torch.as_tensor(np.asarray(x, dtype=bool))

    return TransitionBatch(f(obs), f(actions), f(rewards), f(next_obs), b(terminals), b(ends))


# ------------------------------------------------------------------------------- the pieces
def test_expectile_loss_weighs_tau_above_and_one_minus_tau_below():
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])
    # (0.8 * 4 + 0.2 * 1 + 0.8 * 0.25 + 0.2 * 9) / 4
    assert expectile_loss(diff, 0.8).item() == pytest.approx(5.4 / 4)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 0.25 + 9) / 4)
    assert expectile_loss(torch.zeros(3), 0.9).item() == 0.0


def test_polyak_update_moves_tau_of_the_way():
    source, target = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        source.weight.copy_(torch.tensor([[4.0, -2.0]]))
        source.bias.fill_(1.0)
        target.weight.copy_(torch.tensor([[2.0, 2.0]]))
        target.bias.fill_(-1.0)
    polyak_update(target, source, 0.25)
    # 0.75 * target + 0.25 * source
    torch.testing.assert_close(target.weight, torch.tensor([[2.5, 1.0]]))
    torch.testing.assert_close(target.bias, torch.tensor([-0.5]))
    polyak_update(target, source, 1.0)
    torch.testing.assert_close(target.weight, source.weight)


def test_td_targets_stop_at_terminals():
    targets = td_targets(
        torch.tensor([1.0, 2.0, -1.0]),
        torch.tensor([10.0, 10.0, 4.0]),
        torch.tensor([False, True, False]),
        0.5,
    )
    torch.testing.assert_close(targets, torch.tensor([6.0, 2.0, 1.0]))


def test_only_real_successors_enter_the_q_loss():
    # rows: interior step, terminal last step, timeout last step
    rng = np.random.default_rng(0)
    obs, actions = rng.standard_normal((3, 4)), rng.uniform(-1, 1, (3, 2))
    batch = transitions(obs, actions, [0.5, 1.0, 2.0], obs[[1, 1, 2]], [0, 1, 0], [0, 1, 1])
    model = fitted_iql(batch, IQLConfig(hidden=8, reward_shift=-1.0))
    base = model.losses(batch)

    def changed(field: str, row: int, value) -> dict[str, torch.Tensor]:
        data = {f: getattr(batch, f).clone() for f in batch.__dataclass_fields__}
        data[field][row] = value
        return model.losses(TransitionBatch(**data))

    # neither a terminal's nor a timeout's stand-in successor is used; an interior one is
    for row in (1, 2):
        assert changed("next_observations", row, 7.0)["q"] == base["q"]
    assert changed("next_observations", 0, 7.0)["q"] != base["q"]
    # the timeout's reward has no target to enter; V and the actor still train on that row
    assert changed("rewards", 2, 50.0)["q"] == base["q"]
    assert changed("actions", 2, 0.0)["v"] != base["v"]
    # the Q loss by hand: mean over the two rows with a target of both critics' squared errors
    with torch.no_grad():
        o = model.obs_norm.normalize(batch.observations)
        q = torch.stack([c(torch.cat([o, batch.actions], -1)).squeeze(-1) for c in model.critics])
        next_v = model.value_net(model.obs_norm.normalize(batch.next_observations)).squeeze(-1)
    targets = torch.stack([0.5 - 1.0 + 0.99 * next_v[0], torch.tensor(1.0 - 1.0)])
    expected = (q[:, :2] - targets).square().sum() / 2
    torch.testing.assert_close(base["q"], expected)
    assert model.loss(batch) == sum(base.values())


def test_normalize_returns_scales_rewards_by_the_papers_return_range():
    # episodes: rows 0-1 (return 3), row 2 (return -1, terminal), rows 3-4 (return 5, cut by the data)
    rng = np.random.default_rng(0)
    obs, actions = rng.standard_normal((5, 4)), rng.uniform(-1, 1, (5, 2))
    rewards, ends = [1.0, 2.0, -1.0, 4.0, 1.0], [0, 1, 1, 0, 0]
    batch = transitions(obs, actions, rewards, obs, [0, 0, 1, 0, 0], ends)
    assert return_range_scale(batch) == pytest.approx(1000.0 / (5.0 - (-1.0)))
    config = IQLConfig(hidden=8, normalize_returns=True)
    model = fitted_iql(batch, config)
    assert model.reward_scale == pytest.approx(1000.0 / 6.0)
    assert config.reward_scale == 1.0  # the caller's config is left as it was
    # the Q loss sees the scaled rewards: the same as an explicit reward_scale
    explicit = fitted_iql(batch, IQLConfig(hidden=8, reward_scale=1000.0 / 6.0))
    torch.testing.assert_close(model.losses(batch)["q"], explicit.losses(batch)["q"])
    same = transitions(obs[:2], actions[:2], [1.0, 1.0], obs[:2], [0, 0], [1, 1])
    with pytest.raises(TtrlError, match="normalize_returns=true needs episodes of different"):
        fitted_iql(same, config)


def test_configs_reject_bad_settings_in_one_line():
    for field, value in (
        ("expectile", 1.0),
        ("expectile", 0.0),
        ("tau", 0.0),
        ("discount", 1.5),
        ("temperature", -1.0),
        ("max_exp_advantage", 0.0),
        ("reward_shift", float("nan")),
        ("expectile", "high"),
    ):
        with pytest.raises(TtrlError, match=f"IQLConfig.{field}=") as err:
            IQLConfig(**{field: value})
        assert "\n" not in str(err.value)
    assert IQLConfig(temperature=0.0, discount=1.0, tau=1.0).expectile == 0.9


def test_public_inference_takes_any_leading_dims_and_round_trips(tmp_path):
    model = IQLModel(3, 2, IQLConfig(hidden=8))
    obs, act = torch.randn(4, 5, 3), torch.rand(4, 5, 2)
    assert model.q_value(obs, act).shape == (4, 5) and model.value(obs).shape == (4, 5)
    both = model._q(model.critics, model.obs_norm.normalize(obs), act)
    torch.testing.assert_close(model.q_value(obs, act), both.min(dim=0).values)
    # untrained, the targets are the critics
    torch.testing.assert_close(model.q_value(obs, act, target=True), model.q_value(obs, act))
    assert model.act(obs[0]).shape == (5, 2) and model.act(obs[0]).dtype == np.float32
    with pytest.raises(TtrlError, match=r"actions must be \[\.\.\., 2\]"):
        model.q_value(obs, act[..., :1])
    with pytest.raises(TtrlError, match="share their leading dims"):
        model.q_value(obs, act[:2])
    model.save(tmp_path / "iql.safetensors")
    again = IQLModel.load(tmp_path / "iql.safetensors")
    torch.testing.assert_close(again.q_value(obs, act), model.q_value(obs, act))
    assert not any(p.requires_grad for p in again.target_critics.parameters())


# ----------------------------------------------------------------------- toy problems
def expectile(values: list[float], tau: float) -> float:
    """The tau-expectile of equally likely ``values``: tau * sum(above) = (1 - tau) * sum(below)."""
    low, high = min(values), max(values)
    for _ in range(60):
        v = (low + high) / 2
        balance = sum((tau if x > v else 1 - tau) * (x - v) for x in values)
        low, high = (v, high) if balance > 0 else (low, v)
    return v


BANDIT = {0: [(-1.0, 0.0), (0.0, 1.0), (1.0, 3.0)], 1: [(-1.0, 2.0), (0.0, 2.0), (1.0, -1.0)]}


@pytest.mark.parametrize(
    ("tau", "by_hand"),
    [(0.5, (4 / 3, 1.0)), (0.9, (28 / 11, 35 / 19)), (0.99, (298 / 101, 395 / 199))],
)
def test_v_is_the_expectile_of_q_over_the_data_actions(tau, by_hand):
    # two states (one-hot), three actions each, one-step episodes: Q(s, a) = r(s, a), and V(s) is
    # the tau-expectile of those three values: their mean at 0.5, their max as tau -> 1
    rows = [(s, a, r) for s, pairs in BANDIT.items() for a, r in pairs for _ in range(200)]
    s, a, r = map(np.array, zip(*rows, strict=True))
    obs = np.eye(2)[s]
    data = transitions(obs, a[:, None], r, obs, np.ones(len(s)), np.ones(len(s)))
    model, _ = train_iql(data, IQLConfig(**TOY, expectile=tau), progress=False)
    values = model.value(torch.eye(2)).numpy()
    for state, expected in enumerate(by_hand):
        assert expected == pytest.approx(expectile([q for _, q in BANDIT[state]], tau), abs=1e-9)
    np.testing.assert_allclose(values, by_hand, atol=0.05)
    q = model.q_value(np.repeat(np.eye(2), 3, axis=0), np.tile([[-1.0], [0.0], [1.0]], (2, 1)))
    np.testing.assert_allclose(
        q.numpy(), [r for pairs in BANDIT.values() for _, r in pairs], atol=0.05
    )
    if tau == 0.5:
        np.testing.assert_allclose(
            values, [np.mean([x for _, x in BANDIT[i]]) for i in (0, 1)], atol=0.05
        )


GOAL, HORIZON, GAMMA = 4, 8, 0.9  # states 0..4, 4 the (terminal) goal


def chain_data(n_episodes: int = 300, seed: int = 0) -> TransitionBatch:
    """Random-policy episodes on the chain: a > 0 moves right, a <= 0 left (floored at 0); reaching
    the goal pays 1 and terminates; others time out after HORIZON steps."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_episodes):
        s = int(rng.integers(0, GOAL))
        for t in range(HORIZON):
            a = rng.uniform(-1, 1)
            s2 = min(s + 1, GOAL) if a > 0 else max(s - 1, 0)
            last = s2 == GOAL or t == HORIZON - 1
            rows.append((s, a, float(s2 == GOAL), s if last else s2, s2 == GOAL, last))
            s = s2
            if s == GOAL:
                break
    s, a, r, s2, terminal, end = map(np.array, zip(*rows, strict=True))
    eye = np.eye(GOAL + 1)
    return transitions(eye[s], a[:, None], r, eye[s2], terminal, end)


def chain_fixed_point(tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQL's in-sample fixed point by hand: random actions go left or right with probability 1/2,
    so V(s) = tau * max(QR, QL) + (1 - tau) * min(QR, QL) (the expectile of two equal masses)."""
    v = np.zeros(GOAL)
    for _ in range(500):
        right = np.array([GAMMA * v[s + 1] if s + 1 < GOAL else 1.0 for s in range(GOAL)])
        left = np.array([GAMMA * v[max(s - 1, 0)] for s in range(GOAL)])
        v = tau * np.maximum(right, left) + (1 - tau) * np.minimum(right, left)
    return right, left, v


def test_on_a_chain_q_prefers_the_way_to_the_goal_everywhere():
    data = chain_data()
    assert data.terminals.any() and (data.episode_ends & ~data.terminals).any()  # both ends occur
    model, history = train_iql(data, IQLConfig(**TOY, discount=GAMMA), progress=False)
    states = torch.eye(GOAL + 1)[:GOAL]
    right = model.q_value(states, torch.full((GOAL, 1), 0.75)).numpy()
    left = model.q_value(states, torch.full((GOAL, 1), -0.75)).numpy()
    v = model.value(states).numpy()
    assert (right > left + 0.04).all(), (right, left)
    assert (np.diff(v) > 0.05).all(), v  # V rises towards the goal
    assert (model.act(states) > 0).all()  # the advantage-weighted actor heads right
    expected = chain_fixed_point(0.9)
    for learned, by_hand in zip((right, left, v), expected, strict=True):
        np.testing.assert_allclose(learned, by_hand, atol=0.05)
    assert np.isfinite(history).all() and len(history) == 30


# ------------------------------------------------------------------------- the scripts
def tiny_cfg(dataset: str, *overrides: str):
    return compose_config("train_baseline", [*TINY, f"env.name={dataset}", *overrides])


def test_train_baseline_iql_resumes_bit_exact(tiny_hopper, tmp_path):
    whole = train_baseline(tiny_cfg(tiny_hopper, "steps=16", "iql=antmaze"), tmp_path / "whole")
    assert whole["step"] == 16 and whole["signal"] is None and np.isfinite(whole["val/loss"])
    half = train_baseline(tiny_cfg(tiny_hopper, "steps=8", "iql=antmaze"), tmp_path / "split")
    assert half["step"] == 8
    rest = train_baseline(tiny_cfg(tiny_hopper, "steps=16", "iql=antmaze"), tmp_path / "split")
    assert rest["step"] == 16 and rest["val/loss"] == whole["val/loss"]
    expected, resumed = load_bundle(tmp_path / "whole"), load_bundle(tmp_path / "split")
    assert expected["baseline"] == "IQLModel" and expected["config"]["iql"]["reward_shift"] == -1
    assert any(k.startswith("target_critics.") for k in expected["model"])
    for key, value in expected["model"].items():  # the targets too
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    states = [b["trainer"]["stepper"]["optimizer"]["state"] for b in (expected, resumed)]
    assert len(states[0]) == len(list(IQLModel(11, 3, IQLConfig(hidden=16)).trainable_parameters()))
    for key, moments in states[0].items():  # Adam's moments of Q, V and the actor
        for name, tensor in moments.items():
            torch.testing.assert_close(states[1][key][name], tensor, rtol=0, atol=0)
    model = IQLModel.load(tmp_path / "whole" / "checkpoints" / "last.safetensors")
    targets, critics = model.target_critics.state_dict(), model.critics.state_dict()
    assert all(not torch.equal(targets[k], critics[k]) for k in critics)  # trailing, not equal
    fresh = fitted_iql(load_baseline_data(tiny_hopper, val_fraction=0.25).train, model.config)
    assert not torch.equal(fresh.target_critics.state_dict()["0.0.weight"], targets["0.0.weight"])


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"scripts/{script}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_train_q_script_end_to_end(tiny_hopper, tmp_path):
    run_dir = tmp_path / "run"
    args = [a for a in TINY if a != "algo=iql"]
    result = run_script("train_q.py", *args, f"env={tiny_hopper}", "steps=4", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = load_bundle(run_dir)
    assert bundle["config"]["algo"] == "iql" and bundle["trainer"]["step"] == 4
    assert not (run_dir / "plan").exists()  # no env evaluation by default
    model = IQLModel.load(run_dir / "checkpoints" / "last.safetensors")
    assert model.q_value(np.zeros((2, 11)), np.zeros((2, 3))).shape == (2,)


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("train_baseline.py", ["algo=iql", "iql.expectile=1.5"], "IQLConfig.expectile=1.5 must be"),
        ("train_q.py", ["algo=bc"], "use scripts/train_baseline.py algo=bc"),
    ],
)
def test_bad_input_is_one_error_line(minari_root, tmp_path, script, args, message):
    result = run_script(script, "logger=disabled", f"run_dir={tmp_path / 'run'}", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and message in lines[0]
