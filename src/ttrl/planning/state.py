"""The rows being sampled: their tokens, the environment of each, and the model's view of them.

:class:`RolloutState` is the one sampling API that beam search and open-loop rollouts are both
clients of. It holds each row's token sequence, the row -> environment map and the
:class:`~ttrl.planning.window.ModelWindow` (with its cache) over them. Every change goes through it:
:meth:`~RolloutState.append` or :meth:`~RolloutState.sample` one token per row,
:meth:`~RolloutState.expand` each environment's rows, :meth:`~RolloutState.select` rows. The window,
the cache and any per-row tensors a client declares in ``per_row`` move in step with the rows.

    state = RolloutState(window, prefix, extra_tokens=n * T)
    logits = state.logits                      # [rows, V] for the next token (computed once)
    tokens, probs = state.sample(top_k=1, cdf=None, generator=g)   # drawn and appended
    state.append(given_tokens)                 # or a token chosen elsewhere
"""

from __future__ import annotations

import torch
from torch import Tensor

from ttrl.planning.sampling import sample_tokens
from ttrl.planning.window import ModelWindow


class RolloutState:
    """Rows of token sequences that grow one token at a time through the model's window.

    Rows are environment-major: the rows of environment ``e`` are together, and every environment
    has as many. ``sequences[:, :length]`` are the tokens so far, ``row_env`` each row's
    environment. A subclass names in ``per_row`` the attributes (tensors with one entry per row)
    that :meth:`expand` and :meth:`select` must move with the rows.
    """

    per_row: tuple[str, ...] = ()

    def __init__(self, window: ModelWindow, prefix: Tensor, extra_tokens: int) -> None:
        self.n_env, prefix_length = prefix.shape
        self.sequences = torch.empty(
            self.n_env, prefix_length + extra_tokens, dtype=torch.long, device=prefix.device
        )
        self.sequences[:, :prefix_length] = prefix
        self.length = prefix_length
        self.row_env = torch.arange(self.n_env, device=prefix.device)
        self.window = window
        self._logits: Tensor | None = None

    @property
    def rows_per_env(self) -> int:
        """How many rows each environment has now."""
        return self.sequences.shape[0] // self.n_env

    @property
    def logits(self) -> Tensor:
        """Next-token logits ``[rows, V]`` of every row, computed when first needed after a change."""
        if self._logits is None:
            self._logits = self.window.next_logits(self.sequences, self.length, self.row_env)
        return self._logits

    def append(self, tokens: Tensor) -> None:
        """Append one token per row (``tokens [rows]``)."""
        self.sequences[:, self.length] = tokens
        self.length += 1
        self._logits = None

    def sample(
        self,
        top_k: int | None,
        cdf: float | None,
        uniforms: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw the next token of every row (see :func:`~ttrl.planning.sampling.sample_tokens`)
        and append it; returns the tokens and the unfiltered probabilities."""
        tokens, probs = sample_tokens(self.logits, top_k, cdf, uniforms, generator)
        self.append(tokens)
        return tokens, probs

    def expand(self, factor: int) -> None:
        """Tile each environment's rows ``factor`` times (like ``x.repeat(factor, 1)`` per env)."""
        logits = self.logits  # the children's logits are their parent's: computed once
        rows = torch.arange(self.sequences.shape[0], device=self.sequences.device)
        rows = rows.view(self.n_env, 1, self.rows_per_env).expand(-1, factor, -1).reshape(-1)
        self._move(rows)
        self.window.expand(factor)
        self._logits = logits.index_select(0, rows)

    def select(self, rows: Tensor) -> None:
        """Keep ``rows`` (indices into the current rows, environment-major) in that order."""
        self._move(rows)
        self.window.select(rows)
        self._logits = None

    def _move(self, rows: Tensor) -> None:
        self.sequences = self.sequences.index_select(0, rows)
        self.row_env = self.row_env.index_select(0, rows)
        for name in self.per_row:
            setattr(self, name, getattr(self, name).index_select(0, rows))
