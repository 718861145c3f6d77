"""Training windows of tokens: ``sequence_length`` consecutive transitions, flattened.

Each episode of length ``L`` is stored as ``L + sequence_length - 1`` token rows (``T`` tokens each):
its real rows, then padding rows of stop tokens (id ``N``) so that every window fits. Windows start at
every step ``0 .. L - 2`` of every episode, as in the released code.

Which target rows count in the loss:

- real rows, at positions below ``max_path_length``;
- padding after a real termination, at positions below ``max_path_length``: the model learns to emit
  the stop token once an episode has ended;
- padding after a timeout never counts: the episode did not end there, so "stop" would be a lie.

The mask is aligned with the targets ``y`` (one entry per predicted token). Compatibility note: the
released code aligned it with the inputs and also put stop tokens in the loss after timeouts; models
trained either way share the same vocabulary and layout.

Tokens are stored as uint8 (``N <= 254``) or int16, about ``T`` bytes per step (25 MB for 1M
halfcheetah steps); sampling gathers windows by index arithmetic on whatever device holds them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ttrl.data.masking import mask_hidden_observations
from ttrl.data.preprocess import MAX_PATH_LENGTH, Trajectories
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
ENCODE_CHUNK_ROWS = 65536  # encoding works in float64/int64; chunks keep that memory small


class TokenDataset:
    """Windows of ``sequence_length`` transitions over compactly stored episode tokens.

    Build one with :meth:`build`. ``len(ds)`` is the number of windows; :meth:`sample` draws a batch
    ``(x, y, mask)``: ``x, y`` long ``[B, sequence_length * T - 1]`` (``x = tokens[:-1]``,
    ``y = tokens[1:]``) and ``mask`` float ``[B, sequence_length * T - 1]`` aligned with ``y``.

    Attributes:
        tokens: ``[n_rows, T]`` uint8/int16, every episode's rows followed by its padding rows.
        row_in_loss: bool ``[n_rows]``, whether a row's tokens are loss targets.
        window_rows: int64 ``[n_windows]``, first token row of each window.
        window_episodes: int64 ``[n_windows]``, the episode each window belongs to.
        sequence_length: transitions per window.
        n_bins: the discretiser's ``N`` (stop token id).
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        row_in_loss: torch.Tensor,
        window_rows: torch.Tensor,
        window_episodes: torch.Tensor,
        sequence_length: int,
        n_bins: int,
    ) -> None:
        self.tokens = tokens
        self.row_in_loss = row_in_loss
        self.window_rows = window_rows
        self.window_episodes = window_episodes
        self.sequence_length = sequence_length
        self.n_bins = n_bins

    # ----------------------------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        trajectories: Trajectories,
        discretizer: Discretizer,
        sequence_length: int = 10,
        max_path_length: int = MAX_PATH_LENGTH,
        hidden_observation_dims: Sequence[int] = (),
    ) -> TokenDataset:
        """Tokenise ``trajectories`` with ``discretizer`` and index every window.

        ``hidden_observation_dims`` hold :data:`~ttrl.data.masking.HIDDEN_TOKEN` in every real row
        (the partially observed ablation; see :mod:`ttrl.data.masking`).

        Raises:
            TtrlError: mismatched dims, episodes longer than ``max_path_length``, or no window fits.
        """
        if discretizer.transition_dim != trajectories.transition_dim:
            raise TtrlError(
                f"discretizer has {discretizer.transition_dim} dims but the data have "
                f"{trajectories.transition_dim}; fit the discretizer on this dataset"
            )
        if sequence_length < 1:
            raise TtrlError(f"sequence_length must be >= 1 transition, got {sequence_length}")
        lengths = trajectories.episode_lengths
        if lengths.max() > max_path_length:
            raise TtrlError(
                f"an episode has {int(lengths.max())} steps, more than max_path_length={max_path_length}; "
                f"raise data.max_path_length"
            )
        if (lengths - 1).sum() == 0:
            raise TtrlError(
                f"the dataset has {len(lengths)} episodes of 1 step, too few for one training window; "
                f"use a dataset with longer episodes"
            )
        stored, token_starts = stored_episode_rows(lengths, sequence_length)
        tokens = _padded_tokens(trajectories, discretizer, token_starts, int(stored.sum()))
        position = _positions_within(stored)
        episode_of_row = np.repeat(np.arange(len(lengths)), stored)
        if len(hidden_observation_dims):
            real = position < lengths[episode_of_row]  # padding keeps its stop tokens
            tokens[real] = mask_hidden_observations(tokens[real], hidden_observation_dims)
        row_in_loss = (position < max_path_length) & (
            (position < lengths[episode_of_row]) | trajectories.terminated[episode_of_row]
        )
        window_episodes = np.repeat(np.arange(len(lengths)), lengths - 1)
        window_rows = token_starts[window_episodes] + _positions_within(lengths - 1)
        return cls(
            tokens=torch.from_numpy(tokens),
            row_in_loss=torch.from_numpy(row_in_loss),
            window_rows=torch.from_numpy(window_rows.astype(np.int64)),
            window_episodes=torch.from_numpy(window_episodes.astype(np.int64)),
            sequence_length=sequence_length,
            n_bins=discretizer.n_bins,
        )

    # ------------------------------------------------------------------------------ properties
    @property
    def transition_dim(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def stop_token(self) -> int:
        return self.n_bins

    @property
    def block_size(self) -> int:
        """Length of ``x`` and ``y``: ``sequence_length * T - 1``."""
        return self.sequence_length * self.transition_dim - 1

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @property
    def n_episodes(self) -> int:
        return int(torch.unique(self.window_episodes).numel())

    def __len__(self) -> int:
        return int(self.window_rows.numel())

    def nbytes(self) -> int:
        """Memory held by the tokens, loss mask and window index."""
        return sum(
            t.numel() * t.element_size()
            for t in (self.tokens, self.row_in_loss, self.window_rows, self.window_episodes)
        )

    # ---------------------------------------------------------------------------------- access
    def to(self, device: torch.device | str) -> TokenDataset:
        """Move the storage to ``device`` (in place); returns ``self`` so ``ds = ds.to(d)`` works too."""
        for name in ("tokens", "row_in_loss", "window_rows", "window_episodes"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def windows(self, indices: torch.Tensor) -> Batch:
        """``(x, y, mask)`` for the windows with these indices (a long tensor ``[B]``)."""
        rows = self.window_rows[indices.to(self.device)][:, None] + torch.arange(
            self.sequence_length, device=self.device
        )
        tokens = self.tokens[rows].long().flatten(1)  # [B, sequence_length * T]
        in_loss = self.row_in_loss[rows].repeat_interleave(self.transition_dim, dim=1)
        return tokens[:, :-1], tokens[:, 1:], in_loss[:, 1:].float()

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """A batch of windows drawn uniformly with replacement (on ``generator``'s device if given)."""
        if len(self) == 0:
            raise TtrlError("cannot sample from an empty dataset; lower the validation fraction")
        device = generator.device if generator is not None else self.device
        indices = torch.randint(len(self), (batch_size,), generator=generator, device=device)
        return self.windows(indices)

    def iter_windows(self, batch_size: int) -> Iterator[Batch]:
        """Every window once, in order, in batches of up to ``batch_size`` (for validation)."""
        for start in range(0, len(self), batch_size):
            yield self.windows(
                torch.arange(start, min(start + batch_size, len(self)), device=self.device)
            )

    def split(self, val_fraction: float, seed: int = 0) -> tuple[TokenDataset, TokenDataset]:
        """Split by episode: ``round(val_fraction * E)`` random episodes (at least one if > 0) for validation.

        Both parts share the token storage; only the window index is divided.
        """
        held_out = self.validation_episodes(val_fraction, seed)
        is_val = torch.isin(self.window_episodes, held_out.to(self.device))
        return self._subset(~is_val), self._subset(is_val)

    def validation_episodes(self, val_fraction: float, seed: int = 0) -> torch.Tensor:
        """The episodes :meth:`split` holds out (ids into the trajectories' episodes), sorted."""
        if not 0.0 <= val_fraction < 1.0:
            raise TtrlError(f"val_fraction must be in [0, 1), got {val_fraction}")
        episodes = torch.unique(self.window_episodes).cpu()
        n_val = max(round(val_fraction * len(episodes)), 1 if val_fraction > 0 else 0)
        if n_val >= len(episodes):
            raise TtrlError(
                f"val_fraction={val_fraction} leaves no training episodes out of {len(episodes)}; "
                f"lower it or use more data"
            )
        order = torch.randperm(len(episodes), generator=torch.Generator().manual_seed(seed))
        return episodes[order[:n_val]].sort().values

    def _subset(self, keep: torch.Tensor) -> TokenDataset:
        return TokenDataset(
            tokens=self.tokens,
            row_in_loss=self.row_in_loss,
            window_rows=self.window_rows[keep],
            window_episodes=self.window_episodes[keep],
            sequence_length=self.sequence_length,
            n_bins=self.n_bins,
        )

    def __repr__(self) -> str:
        return (
            f"TokenDataset(windows={len(self)}, sequence_length={self.sequence_length}, "
            f"transition_dim={self.transition_dim}, n_bins={self.n_bins}, device={self.device})"
        )


def stored_episode_rows(lengths: np.ndarray, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows each episode takes (its steps, then ``sequence_length - 1`` padding rows) and
    the first of them, for episodes of ``lengths`` stored one after another."""
    stored = lengths + sequence_length - 1
    return stored, np.concatenate([[0], np.cumsum(stored)[:-1]])


def token_dtype(n_bins: int) -> np.dtype:
    """uint8 while every id including the stop token fits, else int16."""
    return np.dtype(np.uint8) if n_bins <= 254 else np.dtype(np.int16)


def _positions_within(counts: np.ndarray) -> np.ndarray:
    """For consecutive groups of sizes ``counts``: each element's index within its group."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def _padded_tokens(
    trajectories: Trajectories, discretizer: Discretizer, token_starts: np.ndarray, n_rows: int
) -> np.ndarray:
    """All episodes' tokens at their stored rows; the padding rows hold the stop token."""
    dtype = token_dtype(discretizer.n_bins)
    tokens = np.full((n_rows, trajectories.transition_dim), discretizer.stop_token, dtype=dtype)
    shift = np.repeat(token_starts - trajectories.episode_starts, trajectories.episode_lengths)
    for begin in range(0, len(trajectories.joined), ENCODE_CHUNK_ROWS):
        rows = np.arange(begin, min(begin + ENCODE_CHUNK_ROWS, len(trajectories.joined)))
        tokens[rows + shift[rows]] = discretizer.encode(trajectories.joined[rows])
    return tokens
