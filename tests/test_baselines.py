"""The baselines: a PETS ensemble learns a noisy linear system, BC clones actions, both round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttrl.baselines import (
    BCConfig,
    BCPolicy,
    EnsembleConfig,
    GaussianEnsemble,
    Normalizer,
    fit_minibatches,
    gaussian_log_density,
    load_module,
    save_module,
    train_bc,
    train_ensemble,
)
from ttrl.baselines.ensemble import bootstrap_indices
from ttrl.checkpoint import save_bundle
from ttrl.errors import TtrlError

torch.set_num_threads(1)  # the test machine's cores are shared with training jobs

S, A, NOISE = 3, 2, 0.05
RNG = np.random.default_rng(0)
A_MAT = np.eye(S) + 0.1 * RNG.standard_normal((S, S))
B_MAT = 0.5 * RNG.standard_normal((S, A))
R_OBS, R_ACT = RNG.standard_normal(S), RNG.standard_normal(A)
SMALL = EnsembleConfig(n_members=3, hidden=64, n_layers=2, steps=800, batch_size=128)


def linear_system(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Transitions of s' = A s + B a + noise, r = c.s + d.a + noise (float32)."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, S))
    act = rng.uniform(-1, 1, (n, A))
    next_obs = obs @ A_MAT.T + act @ B_MAT.T + NOISE * rng.standard_normal((n, S))
    reward = obs @ R_OBS + act @ R_ACT + NOISE * rng.standard_normal(n)
    return tuple(x.astype(np.float32) for x in (obs, act, next_obs, reward))


@pytest.fixture(scope="module")
def trained() -> tuple[GaussianEnsemble, list[float]]:
    return train_ensemble(*linear_system(2000, seed=1), config=SMALL, progress=False)


def untrained_like(model: GaussianEnsemble) -> GaussianEnsemble:
    """A fresh ensemble with ``model``'s normalisers, i.e. the trained one before training."""
    fresh = GaussianEnsemble(S, A, model.config)
    fresh.input_norm.load_state_dict(model.input_norm.state_dict())
    fresh.target_norm.load_state_dict(model.target_norm.state_dict())
    return fresh


def raw_nll(model: GaussianEnsemble, obs, act, next_obs, reward) -> float:
    """Held-out NLL of the true next state and reward in raw units, averaged over members."""
    pred = model.predict(obs, act)
    next_ll = gaussian_log_density(torch.from_numpy(next_obs), pred.next_mean, pred.next_std)
    reward_ll = gaussian_log_density(torch.from_numpy(reward), pred.reward_mean, pred.reward_std)
    return -(next_ll.sum(-1) + reward_ll).mean().item()


# ------------------------------------------------------------------------------------ ensemble
def test_ensemble_learns_the_linear_system(trained):
    model, history = trained
    held_out = linear_system(500, seed=2)
    obs, act, _, _ = held_out
    before, after = untrained_like(model), model
    assert (after.nll(*held_out) < before.nll(*held_out) - 1.0).all()  # every member improved
    assert raw_nll(after, *held_out) < raw_nll(before, *held_out) - 5.0
    assert history[-1] < history[0]
    assert len(history) == math.ceil(SMALL.steps / 100)

    pred = model.predict(obs, act)
    true_next = obs @ A_MAT.T + act @ B_MAT.T
    true_reward = obs @ R_OBS + act @ R_ACT
    assert np.abs(pred.next_mean.mean(0).numpy() - true_next).max() < 0.15
    assert np.abs(pred.reward_mean.mean(0).numpy() - true_reward).max() < 0.15
    # the predicted noise, denormalised, is the system's (0.05), not the data's spread (~1)
    assert 0.7 * NOISE < pred.next_std.mean().item() < 1.4 * NOISE
    assert 0.7 * NOISE < pred.reward_std.mean().item() < 1.4 * NOISE


def test_members_differ_but_one_forward_computes_all(trained):
    model, _ = trained
    K = SMALL.n_members
    obs, act, _, _ = linear_system(16, seed=3)
    pred = model.predict(obs, act)  # [B, .] inputs go to every member
    assert pred.next_mean.shape == pred.next_std.shape == (K, 16, S)
    assert pred.reward_mean.shape == pred.reward_std.shape == (K, 16)
    for k in range(1, K):  # bootstrap + init make members disagree
        assert (pred.next_mean[k] - pred.next_mean[0]).abs().max() > 1e-4
    fresh = untrained_like(model).predict(obs, act).next_mean
    assert (fresh[1] - fresh[0]).abs().max() > 1e-4
    boot = bootstrap_indices(100, K, seed=0)
    assert boot.shape == (K, 100) and boot.min() >= 0 and boot.max() < 100
    assert not torch.equal(boot[0], boot[1])

    # the batched forward equals each member's own MLP, computed with its slice of the weights
    x = model.member_inputs(obs, act)
    mean, _ = model(x)
    for k in range(K):
        h = x[k]
        for i, layer in enumerate(model.layers):
            h = h @ layer.weight[k] + layer.bias[k]
            if i < len(model.layers) - 1:
                h = torch.nn.functional.silu(h)
        torch.testing.assert_close(mean[k], h[:, : S + 1], rtol=1e-5, atol=1e-5)

    # [K, B, S] inputs: member k predicts for its own batch
    per_member = np.stack([linear_system(16, seed=10 + k)[0] for k in range(K)])
    joint = model.predict(per_member, np.broadcast_to(act, (K, 16, A)))
    for k in range(K):
        alone = model.predict(per_member[k], act)
        torch.testing.assert_close(joint.next_mean[k], alone.next_mean[k])


def test_logvar_stays_within_the_learned_bounds():
    model = GaussianEnsemble(S, A, EnsembleConfig(n_members=3, hidden=32, n_layers=2))
    with torch.no_grad():  # a narrow band, so the soft clamp has work to do
        model.max_logvar.copy_(torch.linspace(0.0, 1.0, S + 1))
        model.min_logvar.copy_(torch.linspace(-2.0, -1.0, S + 1))
    inputs = 100 * torch.randn(3, 2000, S + A, generator=torch.Generator().manual_seed(0))
    _, logvar = model(inputs)
    low, high = model.min_logvar.detach(), model.max_logvar.detach()
    # softplus keeps it at or above min (min + a softplus that underflows to 0 is min itself, in
    # float32); above max it can overshoot by log(1 + e^(min - max))
    assert (logvar >= low).all()
    assert (logvar <= high + torch.log1p(torch.exp(low - high)) + 1e-6).all()
    # both bounds are actually reached by extreme inputs, so the checks above are not vacuous
    assert ((logvar - low).amin(dim=(0, 1)) < 0.05).all()
    assert ((high - logvar).amin(dim=(0, 1)) < 0.05).all()


def test_gaussian_log_density_closed_form():
    x, mean, std = torch.tensor(1.0), torch.tensor(0.0), torch.tensor(2.0)
    expected = -0.5 * (1.0 / 2.0) ** 2 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    assert gaussian_log_density(x, mean, std).item() == pytest.approx(expected, rel=1e-6)
    x, mean, std = torch.randn(4, 5), torch.randn(5), torch.rand(3, 1, 5) + 0.1
    density = gaussian_log_density(x, mean, std)
    assert density.shape == (3, 4, 5)  # per dimension, broadcast
    torch.testing.assert_close(density, torch.distributions.Normal(mean, std).log_prob(x))


def test_ensemble_config_rejects_bad_values():
    for bad in ({"n_members": 0}, {"hidden": 2.5}, {"lr": -1.0}, {"weight_decay": -1e-3}):
        with pytest.raises(TtrlError, match=next(iter(bad))):
            EnsembleConfig(**bad)
    with pytest.raises(TtrlError, match="activation"):
        EnsembleConfig(activation="swishy")
    with pytest.raises(TtrlError, match="rows"):
        obs, act, next_obs, reward = linear_system(10, seed=0)
        train_ensemble(obs, act[:5], next_obs, reward, config=SMALL, progress=False)


# ------------------------------------------------------------------------------------------ BC
def test_bc_loss_falls():
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((256, 4)).astype(np.float32)
    actions = (0.8 * np.tanh(obs @ rng.standard_normal((4, 2)))).astype(np.float32)
    config = BCConfig(hidden=64, steps=400, batch_size=64, lr=1e-3)
    policy, history = train_bc(obs, actions, config, progress=False)
    assert len(history) == 4 and history[-1] < 0.2 * history[0]
    out = policy.act(obs)
    assert out.dtype == np.float32 and out.shape == (256, 2)
    assert ((out >= actions.min(0)) & (out <= actions.max(0))).all()  # tanh keeps data bounds


def test_bc_on_one_repeated_action_returns_it():
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((256, 4)).astype(np.float32)
    target = np.array([0.3, -0.5, 0.9], dtype=np.float32)
    actions = np.tile(target, (256, 1))
    config = BCConfig(hidden=64, steps=500, batch_size=64, lr=3e-3)
    # bounds from the data collapse to the action: exact for any observation, however far off
    policy, _ = train_bc(obs, actions, BCConfig(hidden=16, steps=10), progress=False)
    far = 100 * rng.standard_normal((50, 4)).astype(np.float32)
    np.testing.assert_allclose(policy.act(far), np.tile(target, (50, 1)), atol=1e-6)
    assert policy.act(far[0]).shape == (3,)
    # with the env's bounds the network itself has to learn the constant
    bounds = (-np.ones(3), np.ones(3))
    policy, _ = train_bc(obs, actions, config, progress=False, action_bounds=bounds)
    fresh = rng.standard_normal((100, 4)).astype(np.float32)
    assert np.abs(policy.act(fresh) - target).max() < 0.1
    assert np.abs(policy.act(torch.from_numpy(fresh)) - target).max() < 0.1  # torch in, numpy out


# ------------------------------------------------------------------------- shared pieces, I/O
def test_normalizer_and_minibatch_loop():
    data = np.stack([np.arange(10.0), np.full(10, 3.0)], axis=1)
    norm = Normalizer(2).fit(data)
    assert norm.std[1].item() == pytest.approx(1e-6)  # floored, not 0
    x = torch.from_numpy(data).float()
    assert norm.normalize(x)[:, 1].abs().max() == 0
    torch.testing.assert_close(norm.denormalize(norm.normalize(x)), x)

    def run(seed: int) -> list[float]:
        weight = torch.zeros(3, requires_grad=True)
        inputs = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        targets = inputs @ torch.tensor([1.0, -2.0, 0.5])
        loss = lambda idx: ((inputs[idx] @ weight - targets[idx]) ** 2).mean()  # noqa: E731
        return fit_minibatches(loss, [weight], 64, 8, 250, 0.05, seed=seed, progress=False)

    history = run(0)
    assert len(history) == 3 and history[-1] < 0.1 * history[0]
    assert run(0) == history and run(1) != history  # the seed alone fixes the batches


def test_save_load_round_trips(tmp_path, trained):
    model, _ = trained
    obs, act, _, _ = linear_system(32, seed=4)
    loaded = GaussianEnsemble.load(model.save(tmp_path / "ensemble.safetensors"))
    assert loaded.config == model.config
    for a, b in zip(model.predict(obs, act), loaded.predict(obs, act), strict=True):
        assert torch.equal(a, b)

    policy, _ = train_bc(obs, act, BCConfig(hidden=16, steps=20), progress=False)
    policy.save(tmp_path / "bc.safetensors")
    again = BCPolicy.load(tmp_path / "bc.safetensors")
    np.testing.assert_array_equal(again.act(obs), policy.act(obs))
    assert torch.equal(again.action_low, policy.action_low)

    state, config, extra = load_module(tmp_path / "bc.safetensors")
    assert config == {**vars(BCConfig(hidden=16, steps=20))}
    assert extra == {"observation_dim": S, "action_dim": A} and "net.0.weight" in state
    save_module(tmp_path / "plain.safetensors", torch.nn.Linear(2, 1), {"a": 1}, {"b": [1, 2]})
    assert load_module(tmp_path / "plain.safetensors")[1:] == ({"a": 1}, {"b": [1, 2]})


def test_loading_something_else_raises_one_line(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    other = save_bundle(tmp_path / "transformer.safetensors", model_config={}, model={})
    bc = BCPolicy(S, A, BCConfig(hidden=8)).save(tmp_path / "bc.safetensors")
    for path, cls in ((junk, GaussianEnsemble), (other, BCPolicy), (bc, GaussianEnsemble)):
        with pytest.raises(TtrlError) as err:
            cls.load(path)
        assert "\n" not in str(err.value)
    with pytest.raises(TtrlError, match="holds a BCPolicy"):
        GaussianEnsemble.load(bc)
