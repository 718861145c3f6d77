"""Per-dimension discretisation of transitions ``[s, a, r, V]`` into tokens, and back.

Every transition dimension ``d`` has its own sorted bin edges ``thresholds[:, d]``. A value ``x``
falls in bin ``i`` = the largest ``i`` with ``x >= thresholds[i]``, clipped to the valid bins, and a
token decodes to its bin's midpoint ``(thresholds[i] + thresholds[i + 1]) / 2``.

Two kinds of edges:

- ``"quantile"`` (the released Trajectory Transformer's): ``sort(x)[::ceil(n / N)]`` with the maximum
  appended, so each bin holds about ``n / N`` points. Reproducing it exactly makes ttrl usable with
  checkpoints trained by the released code, refit on the same rows: those of
  ``preprocess(..., released_compat=True)`` (last step dropped, float64). When ``n`` is such that this
  yields fewer than ``N + 1`` edges (e.g. ``n = 1050``, ``N = 100`` gives 97 edges), only
  ``len(thresholds) - 1`` bins exist: tokens are clipped to those (the released code would index past
  the last edge), and the unused ids ``n_used_bins .. N - 1`` decode like the last real bin.
- ``"uniform"``: ``N`` equal-width bins between each dimension's min and max. A constant dimension
  has all edges equal: everything falls in the last bin, which decodes to the constant.

Token id ``N`` (``stop_token``) marks the end of an episode: it decodes to NaN, and its probability
mass is dropped (not renormalised) by :meth:`Discretizer.expected_value`, as in the released code.
Inputs may be numpy arrays or torch tensors; outputs match the input's type and stay on its device.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ttrl.errors import TtrlError

KINDS = ("quantile", "uniform")
Dims = slice | int | np.ndarray | list | tuple | None


class Discretizer:
    """Per-dimension bin edges with vectorised encode/decode for numpy and torch.

    Attributes:
        kind: ``"quantile"`` or ``"uniform"``.
        n_bins: the vocabulary size ``N`` per dimension; the stop token is ``N``.
        thresholds: float64 ``[n_edges, T]`` bin edges, sorted per dimension.
    """

    def __init__(self, thresholds: np.ndarray, n_bins: int, kind: str) -> None:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        if thresholds.ndim != 2 or len(thresholds) < 2:
            raise TtrlError(
                f"discretizer thresholds need shape [n_edges >= 2, T], got {thresholds.shape}"
            )
        if kind not in KINDS:
            raise TtrlError(f"unknown discretizer kind {kind!r}; use one of {', '.join(KINDS)}")
        if len(thresholds) - 1 > n_bins:
            raise TtrlError(f"{len(thresholds)} edges make more than n_bins={n_bins} bins")
        self.kind = kind
        self.n_bins = int(n_bins)
        self.thresholds = thresholds
        self._midpoints = _midpoint_table(thresholds, self.n_bins)
        # decode table [n_bins + 1, T]: midpoints, then NaN for the stop token
        self._decode_table = np.concatenate(
            [self._midpoints, np.full((1, thresholds.shape[1]), np.nan)]
        )
        self._torch_cache: dict[
            tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]
        ] = {}

    # ----------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls, data: np.ndarray | torch.Tensor, n_bins: int = 100, kind: str = "quantile"
    ) -> Discretizer:
        """Fit bin edges to ``data [n, T]`` (for ttrl: ``Trajectories.joined``); warns on collapsed bins."""
        data = _as_numpy(data).astype(np.float64)
        if data.ndim != 2 or len(data) == 0:
            raise TtrlError(f"discretizer data need shape [n > 0, T], got {data.shape}")
        if not 1 <= n_bins <= 32766:
            raise TtrlError(
                f"n_bins must be in [1, 32766] (token ids are stored as int16), got {n_bins}"
            )
        if not np.isfinite(data).all():
            raise TtrlError("discretizer data hold NaN/inf values; clean the dataset first")
        edges = {"quantile": quantile_thresholds, "uniform": uniform_thresholds}
        if kind not in edges:
            raise TtrlError(f"unknown discretizer kind {kind!r}; use one of {', '.join(KINDS)}")
        discretizer = cls(edges[kind](data, n_bins), n_bins, kind)
        discretizer._warn_if_collapsed()
        return discretizer

    def _warn_if_collapsed(self) -> None:
        collapsed = self.collapsed_bins()
        dims = np.flatnonzero(collapsed)
        if len(dims):
            counts = ", ".join(f"{d}: {collapsed[d]}" for d in dims)
            warnings.warn(
                f"{self.kind} discretizer: duplicate thresholds leave empty bins in dims "
                f"{dims.tolist()} (dim: collapsed bins = {counts}); those dims have repeated values",
                stacklevel=3,
            )

    # ------------------------------------------------------------------------------- properties
    @property
    def stop_token(self) -> int:
        """The id that ends an episode (= ``n_bins``)."""
        return self.n_bins

    @property
    def transition_dim(self) -> int:
        return int(self.thresholds.shape[1])

    @property
    def n_used_bins(self) -> int:
        """Bins that data can fall in: ``n_edges - 1`` (fewer than ``n_bins`` for some data sizes)."""
        return len(self.thresholds) - 1

    def midpoints(self, dims: Dims = None) -> np.ndarray:
        """Decoded value of every token id below ``n_bins``: float64 ``[n_bins, len(dims)]``."""
        index, _ = self._dim_index(dims)
        return self._midpoints[:, index]

    def collapsed_bins(self) -> np.ndarray:
        """Per dimension, the number of zero-width bins (duplicate thresholds): int ``[T]``."""
        return np.count_nonzero(np.diff(self.thresholds, axis=0) == 0, axis=0)

    # ---------------------------------------------------------------------------- encode/decode
    def encode(self, x: np.ndarray | torch.Tensor, dims: Dims = None) -> np.ndarray | torch.Tensor:
        """Tokens of ``x [..., len(dims)]`` (or ``x [...]`` for an int ``dims``): int64 / long, same shape."""
        index, scalar = self._dim_index(dims)
        if isinstance(x, torch.Tensor):
            thresholds, _ = self._torch_tables(x.device)
            values = x.to(torch.float64)[..., None] if scalar else x.to(torch.float64)
            _check_last_dim(values.shape, len(index))
            flat = values.reshape(-1, len(index)).T.contiguous()
            rows = torch.as_tensor(index, device=x.device)
            tokens = torch.searchsorted(thresholds[rows], flat, right=True) - 1
            tokens = tokens.clamp_(0, self.n_used_bins - 1).T.reshape(values.shape)
            return tokens[..., 0] if scalar else tokens
        values = np.asarray(x, dtype=np.float64)
        values = values[..., None] if scalar else values
        _check_last_dim(values.shape, len(index))
        tokens = np.empty(values.shape, dtype=np.int64)
        for column, d in enumerate(index):
            tokens[..., column] = (
                np.searchsorted(self.thresholds[:, d], values[..., column], side="right") - 1
            )
        np.clip(tokens, 0, self.n_used_bins - 1, out=tokens)
        return tokens[..., 0] if scalar else tokens

    def decode(
        self, tokens: np.ndarray | torch.Tensor, dims: Dims = None
    ) -> np.ndarray | torch.Tensor:
        """Bin midpoints of ``tokens [..., len(dims)]``; the stop token decodes to NaN.

        Returns float64 for numpy input, float32 for torch input (on the tokens' device).

        Raises:
            TtrlError: a token outside ``[0, n_bins]``.
        """
        index, scalar = self._dim_index(dims)
        if isinstance(tokens, torch.Tensor):
            _, table = self._torch_tables(tokens.device)
            ids = tokens.long()[..., None] if scalar else tokens.long()
            self._check_tokens(bool(((ids < 0) | (ids > self.n_bins)).any()))
            _check_last_dim(ids.shape, len(index))
            columns = torch.as_tensor(index, device=tokens.device)
            values = table[ids, columns].float()
            return values[..., 0] if scalar else values
        ids = np.asarray(tokens).astype(np.int64)
        ids = ids[..., None] if scalar else ids
        self._check_tokens(bool(((ids < 0) | (ids > self.n_bins)).any()))
        _check_last_dim(ids.shape, len(index))
        values = self._decode_table[ids, index]
        return values[..., 0] if scalar else values

    def expected_value(
        self, probs: np.ndarray | torch.Tensor, dims: Dims
    ) -> np.ndarray | torch.Tensor:
        """``sum_i p(i) * midpoint(i)`` over the ``n_bins`` real bins; the stop mass is dropped.

        ``probs`` is ``[..., n_bins + 1]`` for an int ``dims`` (result ``[...]``) or
        ``[..., len(dims), n_bins + 1]`` otherwise (result ``[..., len(dims)]``). Not renormalised,
        as in the released code, so mass on the stop token pulls the value towards 0.
        """
        index, scalar = self._dim_index(dims)
        if probs.shape[-1] != self.n_bins + 1:
            raise TtrlError(
                f"probs need {self.n_bins + 1} classes in the last axis, got {probs.shape[-1]}"
            )
        if isinstance(probs, torch.Tensor):
            _, table = self._torch_tables(probs.device)
            mids = table[: self.n_bins, index].T.to(probs.dtype)  # [D, N]
            result = (probs[..., None, :] if scalar else probs)[..., : self.n_bins] * mids
            result = result.sum(-1)
        else:
            mids = self._midpoints[:, index].T
            result = (
                (np.asarray(probs)[..., None, :] if scalar else np.asarray(probs))[
                    ..., : self.n_bins
                ]
                * mids
            ).sum(-1)
        return result[..., 0] if scalar else result

    def reconstruction_error(self, data: np.ndarray | torch.Tensor) -> np.ndarray:
        """Mean absolute error of ``decode(encode(data))`` per dimension: float64 ``[T]``."""
        data = _as_numpy(data).astype(np.float64)
        return np.abs(self.decode(self.encode(data)) - data).mean(axis=0)

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this discretiser (tensors and plain values only)."""
        return {
            "kind": self.kind,
            "n_bins": self.n_bins,
            "thresholds": torch.from_numpy(self.thresholds.copy()),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Discretizer:
        """Rebuild a discretiser from :meth:`state_dict` (thresholds may be a tensor, array or list)."""
        try:
            thresholds = state["thresholds"]
            thresholds = (
                _as_numpy(thresholds) if isinstance(thresholds, torch.Tensor) else thresholds
            )
            return cls(
                np.asarray(thresholds, dtype=np.float64), int(state["n_bins"]), str(state["kind"])
            )
        except KeyError as err:
            raise TtrlError(
                f"discretizer state lacks {err}; pass a dict from Discretizer.state_dict()"
            ) from err

    def __repr__(self) -> str:
        return (
            f"Discretizer(kind={self.kind!r}, n_bins={self.n_bins}, transition_dim={self.transition_dim}, "
            f"n_used_bins={self.n_used_bins})"
        )

    # --------------------------------------------------------------------------------- helpers
    def _dim_index(self, dims: Dims) -> tuple[np.ndarray, bool]:
        """Column indices selected by ``dims`` and whether it was a single int (no trailing axis)."""
        all_dims = np.arange(self.transition_dim)
        if dims is None:
            return all_dims, False
        if isinstance(dims, (int, np.integer)):
            return all_dims[[dims]], True
        if isinstance(dims, slice):
            return all_dims[dims], False
        return all_dims[np.asarray(dims, dtype=np.int64)], False

    def _torch_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Thresholds ``[T, n_edges]`` and the decode table on ``device``, cached per device."""
        key = (torch.device(device), torch.float64)
        if key not in self._torch_cache:
            self._torch_cache[key] = (
                torch.as_tensor(self.thresholds.T.copy(), device=device),
                torch.as_tensor(self._decode_table, device=device),
            )
        return self._torch_cache[key]

    def _check_tokens(self, out_of_range: bool) -> None:
        if out_of_range:
            raise TtrlError(
                f"tokens must lie in [0, {self.n_bins}] (id {self.n_bins} is the stop token); "
                f"check that the model's vocabulary matches this discretizer"
            )


def quantile_thresholds(data: np.ndarray, n_bins: int) -> np.ndarray:
    """The released code's edges: ``sort(x)[::ceil(n / N)]`` per dimension, then the max appended."""
    step = math.ceil(len(data) / n_bins)
    ordered = np.sort(data, axis=0)
    return np.concatenate([ordered[::step], ordered[-1:]], axis=0)


def uniform_thresholds(data: np.ndarray, n_bins: int) -> np.ndarray:
    """``N`` equal-width bins between each dimension's min and max: ``[N + 1, T]`` edges."""
    low, high = data.min(axis=0), data.max(axis=0)
    fractions = np.linspace(0.0, 1.0, n_bins + 1)[:, None]
    edges = low + fractions * (high - low)
    edges[-1] = high  # exactly the max, whatever the rounding
    return edges


def _midpoint_table(thresholds: np.ndarray, n_bins: int) -> np.ndarray:
    """Midpoints of the real bins, padded to ``n_bins`` rows with the last real bin's midpoint."""
    mids = (thresholds[:-1] + thresholds[1:]) / 2
    padding = np.repeat(mids[-1:], n_bins - len(mids), axis=0)
    return np.concatenate([mids, padding], axis=0)


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_last_dim(shape: tuple | torch.Size, n_dims: int) -> None:
    if len(shape) == 0 or shape[-1] != n_dims:
        raise TtrlError(
            f"input has shape {tuple(shape)} but the selected dims hold {n_dims} values in the last axis; "
            f"pass dims matching the data"
        )
