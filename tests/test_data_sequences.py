"""Token windows: padding, stop tokens and loss masks against a brute-force per-window construction."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from test_data_preprocess import synthetic_transitions
from ttrl.data import TokenDataset, preprocess
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError

N = 20
LENGTHS = [5, 1, 12, 3, 9, 2, 12]
TERMINATED = [True, False, False, True, True, False, True]


def build(seq_len=4, max_path_length=12, n_bins=N):
    traj = preprocess(
        synthetic_transitions(LENGTHS, TERMINATED, seed=1), max_path_length=max_path_length
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = Discretizer.fit(traj.joined, n_bins)
    return traj, disc, TokenDataset.build(traj, disc, seq_len, max_path_length)


def brute_force_windows(traj, disc, seq_len, max_path_length):
    """Every window the released recipe makes, with ttrl's loss rule for padding, one by one."""
    windows = []
    for e, (start, length) in enumerate(
        zip(traj.episode_starts, traj.episode_lengths, strict=True)
    ):
        real = disc.encode(traj.joined[start : start + length])
        for j in range(length - 1):
            tokens, in_loss = [], []
            for r in range(j, j + seq_len):
                tokens.extend(real[r] if r < length else [disc.stop_token] * traj.transition_dim)
                keep = r < max_path_length and (r < length or bool(traj.terminated[e]))
                in_loss.extend([keep] * traj.transition_dim)
            windows.append((e, tokens[:-1], tokens[1:], in_loss[1:]))
    return windows


@pytest.mark.parametrize(("seq_len", "max_path_length"), [(4, 12), (1, 12), (3, 13), (10, 40)])
def test_windows_match_brute_force(seq_len, max_path_length):
    traj, disc, ds = build(seq_len, max_path_length)
    expected = brute_force_windows(traj, disc, seq_len, max_path_length)
    assert len(ds) == len(expected) == sum(length - 1 for length in LENGTHS)
    x, y, mask = ds.windows(torch.arange(len(ds)))
    assert x.dtype == y.dtype == torch.long and mask.dtype == torch.float32
    assert x.shape == y.shape == mask.shape == (len(ds), seq_len * traj.transition_dim - 1)
    assert ds.block_size == x.shape[1]
    np.testing.assert_array_equal(x.numpy(), [w[1] for w in expected])
    np.testing.assert_array_equal(y.numpy(), [w[2] for w in expected])
    np.testing.assert_array_equal(mask.numpy(), [w[3] for w in expected])
    np.testing.assert_array_equal(ds.window_episodes.numpy(), [w[0] for w in expected])


def test_stop_tokens_are_learned_after_terminations_only():
    traj, disc, ds = build(seq_len=4, max_path_length=12)
    _, y, mask = ds.windows(torch.arange(len(ds)))
    stop_targets = y == disc.stop_token
    episodes = ds.window_episodes
    terminated = torch.from_numpy(traj.terminated)[episodes][:, None].expand_as(y)
    assert (mask[stop_targets & terminated] == 1).any()  # the model learns to stop...
    assert (mask[stop_targets & ~terminated] == 0).all()  # ...but never after a timeout


def test_storage_is_compact():
    traj, _, ds = build(seq_len=4)
    assert ds.tokens.dtype == torch.uint8
    assert ds.tokens.shape == (len(traj) + len(LENGTHS) * 3, traj.transition_dim)
    _, _, wide = build(seq_len=4, n_bins=300)
    assert wide.tokens.dtype == torch.int16


def test_token_memory_for_a_million_halfcheetah_steps():
    """1M x 25 steps in 1000 episodes: tokens stay at about T bytes per step (well under 100 MB)."""
    from ttrl.data.preprocess import Trajectories

    n, episodes, transition_dim = 1_000_000, 1000, 25
    joined = np.random.default_rng(0).random((n, transition_dim), dtype=np.float32)
    traj = Trajectories(
        joined=joined,
        episode_starts=np.arange(episodes) * 1000,
        episode_lengths=np.full(episodes, 1000),
        terminated=np.zeros(episodes, bool),
        observation_dim=17,
        action_dim=6,
    )
    edges = np.repeat(np.linspace(0, 1, 101)[:, None], transition_dim, axis=1)
    ds = TokenDataset.build(traj, Discretizer(edges, 100, "uniform"), 10, 1000)
    token_bytes = ds.tokens.numel() * ds.tokens.element_size()
    assert token_bytes == (n + episodes * 9) * transition_dim  # 25.2 MB
    assert ds.nbytes() < 45e6  # plus 1 byte/row of mask and 16 bytes/window of index
    x, _, _ = ds.sample(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 249) and int(x.max()) < 100  # no padding: every episode is 1000 long


def test_sample_draws_real_windows_reproducibly():
    _, _, ds = build()
    all_x = {tuple(row) for row in ds.windows(torch.arange(len(ds)))[0].tolist()}
    x1, y1, _ = ds.sample(64, torch.Generator().manual_seed(3))
    x2, _, _ = ds.sample(64, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2)
    assert all(tuple(row) in all_x for row in x1.tolist())
    assert torch.equal(x1[:, 1:], y1[:, :-1])


def test_split_is_by_episode_and_iter_windows_covers_everything():
    _, _, ds = build()
    train, val = ds.split(0.3, seed=0)
    assert len(train) + len(val) == len(ds)
    train_eps, val_eps = set(train.window_episodes.tolist()), set(val.window_episodes.tolist())
    assert not train_eps & val_eps
    assert len(val_eps) == round(0.3 * ds.n_episodes)
    batches = list(val.iter_windows(batch_size=4))
    assert sum(len(b[0]) for b in batches) == len(val)
    x_all = torch.cat([b[0] for b in batches])
    assert torch.equal(x_all, val.windows(torch.arange(len(val)))[0])
    again, _ = ds.split(0.3, seed=0)
    assert torch.equal(again.window_rows, train.window_rows)
    with pytest.raises(TtrlError, match="val_fraction"):
        ds.split(1.0)


def test_to_device_keeps_sampling_working():
    _, _, ds = build()
    moved = ds.to(torch.device("cpu"))
    assert moved is ds and ds.device.type == "cpu"
    x, _, _ = ds.sample(5)
    assert x.device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_on_cuda_matches_cpu():
    _, _, ds = build()
    cpu = ds.windows(torch.arange(len(ds)))
    ds.to("cuda")
    gpu = ds.windows(torch.arange(len(ds), device="cuda"))
    for a, b in zip(cpu, gpu, strict=True):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu())
    x, _, _ = ds.sample(16, torch.Generator(device="cuda").manual_seed(0))
    assert x.device.type == "cuda"


def test_too_small_for_a_window_raises():
    traj = preprocess(synthetic_transitions([1, 1, 1], [True, False, True]), max_path_length=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = Discretizer.fit(traj.joined, N)
    with pytest.raises(TtrlError, match="too few for one training window"):
        TokenDataset.build(traj, disc, 4, 5)
