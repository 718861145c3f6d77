"""The discretiser against a direct reimplementation of the released quantile algorithm, and its APIs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError

N = 100


# --- the released code's algorithm, written out directly (boolean comparisons + argmax) ---------
def released_thresholds(data: np.ndarray, n_bins: int) -> np.ndarray:
    per_bin = int(np.ceil(len(data) / n_bins))
    ordered = np.sort(data, axis=0)
    return np.concatenate([ordered[::per_bin, :], data.max(axis=0, keepdims=True)], axis=0)


def released_encode(thresholds: np.ndarray, x: np.ndarray, n_bins: int) -> np.ndarray:
    above = x[None] >= thresholds[:, None]  # [edges, n, T]
    n_edges = len(thresholds)
    weights = np.arange(1, n_edges + 1)[:, None, None]
    indices = np.argmax(above * weights, axis=0)
    indices[(~above).all(axis=0)] = 0
    indices[above.all(axis=0)] = n_edges
    # the released code clips to N - 1; with fewer than N + 1 edges ttrl clips to the last real bin
    return np.clip(indices, 0, min(n_bins, n_edges - 1) - 1)


def released_decode(thresholds: np.ndarray, indices: np.ndarray) -> np.ndarray:
    left = np.take_along_axis(thresholds, indices, axis=0)
    right = np.take_along_axis(thresholds, indices + 1, axis=0)
    return (left + right) / 2.0


def mixed_data(n: int, seed: int = 0) -> np.ndarray:
    """Continuous, heavily duplicated, constant and two-valued columns."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.normal(size=n),
            np.round(rng.normal(scale=2.0, size=n)),
            np.full(n, 3.5),
            rng.choice([-1.0, 2.0], size=n, p=[0.9, 0.1]),
            rng.exponential(size=n) * 100,
        ],
        axis=1,
    ).astype(np.float32)


@pytest.mark.parametrize("n", [1000, 1050, 2345, 37])
def test_quantile_matches_released_algorithm(n):
    data = mixed_data(n, seed=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = Discretizer.fit(data, N, "quantile")
    expected_thr = released_thresholds(data.astype(np.float64), N)
    np.testing.assert_array_equal(disc.thresholds, expected_thr)
    assert disc.n_used_bins == len(expected_thr) - 1 == min(N, math.ceil(n / math.ceil(n / N)))

    probe = np.concatenate(
        [data, mixed_data(200, seed=99) * 3, data.min(0)[None] - 1, data.max(0)[None] + 1]
    )
    tokens = disc.encode(probe)
    np.testing.assert_array_equal(
        tokens, released_encode(expected_thr, probe.astype(np.float64), N)
    )
    np.testing.assert_array_equal(disc.decode(tokens), released_decode(expected_thr, tokens))
    assert tokens.dtype == np.int64 and tokens.max() < disc.n_used_bins


def test_fewer_edges_clip_to_the_last_real_bin():
    data = mixed_data(1050)[:, :1]
    disc = Discretizer.fit(data, N)
    assert disc.n_used_bins == 96 < N  # ceil(1050 / 11) = 96 thresholds + the max
    assert disc.encode(np.array([[1e9]]))[0, 0] == 95
    # unused ids decode like the last real bin instead of indexing past the edges
    mids = disc.midpoints()
    np.testing.assert_array_equal(mids[96:], np.repeat(mids[95:96], 4, axis=0))


def test_uniform_round_trip_within_half_a_bin():
    data = mixed_data(500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = Discretizer.fit(data, N, "uniform")
    low, high = data.min(0).astype(np.float64), data.max(0).astype(np.float64)
    np.testing.assert_allclose(disc.thresholds[0], low)
    np.testing.assert_allclose(disc.thresholds[-1], high)
    error = np.abs(disc.decode(disc.encode(data)) - data)
    assert (error <= (high - low) / N / 2 + 1e-6).all()
    assert (
        disc.decode(disc.encode(data))[:, 2] == 3.5
    ).all()  # the constant column, no division by 0
    np.testing.assert_allclose(disc.reconstruction_error(data), error.mean(0))


def test_stop_token_decodes_to_nan_and_out_of_range_is_rejected():
    disc = Discretizer.fit(np.random.default_rng(0).normal(size=(300, 3)), N)
    assert disc.stop_token == N
    decoded = disc.decode(np.array([[0, N, 5]]))
    assert np.isnan(decoded[0, 1]) and np.isfinite(decoded[0, [0, 2]]).all()
    assert torch.isnan(disc.decode(torch.tensor([[N, 0, 0]])))[0, 0]
    for bad in (N + 1, -1):
        with pytest.raises(TtrlError, match="stop token"):
            disc.decode(np.array([[bad, 0, 0]]))
        with pytest.raises(TtrlError, match="stop token"):
            disc.decode(torch.tensor([[0, bad, 0]]))


def test_expected_value_drops_stop_mass_without_renormalising():
    disc = Discretizer.fit(np.random.default_rng(0).normal(size=(400, 4)), N)
    mids = disc.midpoints()
    probs = np.zeros((2, N + 1))
    probs[0, 7], probs[0, N] = 0.5, 0.5
    probs[1, :N] = 1.0 / N

    def expected(d: int) -> np.ndarray:
        return np.array([0.5 * mids[7, d], mids[:, d].mean()])

    np.testing.assert_allclose(disc.expected_value(probs, 3), expected(3))
    # several dims at once: probs [..., D, N + 1] -> [..., D]
    stacked = np.stack([probs, probs], axis=1)
    np.testing.assert_allclose(
        disc.expected_value(stacked, [1, 3]), np.stack([expected(1), expected(3)], axis=1)
    )


@pytest.mark.parametrize("kind", ["quantile", "uniform"])
def test_torch_and_numpy_agree(kind):
    data = mixed_data(777).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = Discretizer.fit(data, N, kind)
    probe = np.random.default_rng(3).normal(size=(4, 6, 5)) * 3
    tokens_np = disc.encode(probe)
    tokens_t = disc.encode(torch.from_numpy(probe))
    assert tokens_t.dtype == torch.long
    np.testing.assert_array_equal(tokens_np, tokens_t.numpy())
    np.testing.assert_allclose(disc.decode(tokens_np), disc.decode(tokens_t).numpy(), rtol=1e-6)
    probs = np.random.default_rng(4).dirichlet(np.ones(N + 1), size=(3, 2))
    np.testing.assert_allclose(
        disc.expected_value(probs, slice(3, 5)),
        disc.expected_value(torch.from_numpy(probs), slice(3, 5)).numpy(),
    )


def test_dims_select_columns():
    data = mixed_data(600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = Discretizer.fit(data, N)
    full = disc.encode(data)
    np.testing.assert_array_equal(disc.encode(data[:, 3:5], dims=slice(3, 5)), full[:, 3:5])
    np.testing.assert_array_equal(disc.encode(data[:, [4, 0]], dims=[4, 0]), full[:, [4, 0]])
    np.testing.assert_array_equal(disc.encode(data[:, 1], dims=1), full[:, 1])
    np.testing.assert_array_equal(disc.decode(full[:, 1], dims=1), disc.decode(full)[:, 1])
    assert disc.midpoints(slice(3, 5)).shape == (N, 2)
    with pytest.raises(TtrlError, match="selected dims"):
        disc.encode(data[:, :2], dims=slice(0, 3))


def test_state_dict_round_trip_survives_torch_save(tmp_path):
    data = mixed_data(900)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disc = Discretizer.fit(data, 64, "quantile")
    torch.save(disc.state_dict(), tmp_path / "disc.pt")
    restored = Discretizer.from_state_dict(torch.load(tmp_path / "disc.pt", weights_only=True))
    assert (restored.kind, restored.n_bins) == ("quantile", 64)
    np.testing.assert_array_equal(restored.thresholds, disc.thresholds)
    np.testing.assert_array_equal(restored.encode(data), disc.encode(data))


def test_collapsed_bins_are_counted_and_warned_about():
    data = mixed_data(1000)
    with pytest.warns(UserWarning, match=r"dims \[1, 2, 3\]"):
        disc = Discretizer.fit(data, N)
    thr = disc.thresholds
    expected = [sum(thr[i + 1, d] == thr[i, d] for i in range(len(thr) - 1)) for d in range(5)]
    np.testing.assert_array_equal(disc.collapsed_bins(), expected)
    assert disc.collapsed_bins()[0] == 0 and disc.collapsed_bins()[2] == N


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TtrlError, match="kind"):
        Discretizer.fit(np.zeros((10, 2)), N, "log")
    with pytest.raises(TtrlError, match="NaN"):
        Discretizer.fit(np.array([[0.0, np.nan]]), N)
    with pytest.raises(TtrlError, match="shape"):
        Discretizer.fit(np.zeros(10), N)
