"""What the model sees while planning: the last whole transitions of each row, optionally cached.

The model only ever attends over the last ``window_transitions * T - 1`` tokens, cropped from the front
by whole transitions so that the window starts at a transition boundary and positions restart at 0 in
each window. Whenever the crop point moves, every position in the window changes, so a key/value cache
has to be rebuilt from the new window; between moves each new token costs one incremental model step.

A goal-conditioned model's goal (``goals [N_env, G]``) stands before every window and is never
cropped: sequences and ``max_window`` count trajectory tokens only, and the model sees the goal at
window positions ``0 .. G-1`` (the layout's prefix).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

from ttrl.layout import TransitionLayout, crop_start

__all__ = ["ModelWindow", "crop_start", "distinct_histories"]
from ttrl.planning.decoder import CachedDecoder


class ModelWindow:
    """Next-token logits of every beam, as the model gives them on the cropped window.

    ``prefix [N_env, L0]`` is the part shared by all beams of an environment; ``row_env`` maps each
    beam row to its environment. With a ``decoder`` the window's keys/values are kept and each new
    token is one incremental step; a rebuild (when the window slides) runs the window's prefix part
    once per environment (kept shared by its beams) and each distinct beam history once. Without a
    decoder the whole window is run for every token (the released algorithm). ``goals [N_env, G]``
    (goal tokens, for a goal-conditioned model) go before every window, shared per environment.
    """

    def __init__(
        self,
        model: Any,
        prefix: Tensor,
        layout: TransitionLayout,
        max_window: int | None,
        decoder: CachedDecoder | None,
        goals: Tensor | None = None,
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.layout = layout
        self.transition_dim = layout.transition_dim
        self.max_window = max_window
        self.decoder = decoder
        self.goals = goals
        self.start: int | None = None  # sequence index of the window start held by the decoder
        self.end = 0  # one past the last sequence index fed to the decoder

    def next_logits(self, sequences: Tensor, length: int, row_env: Tensor) -> Tensor:
        """Logits ``[rows, V]`` for the token after ``sequences[:, :length]``."""
        start = self.layout.crop_start(length, self.max_window)
        if self.decoder is None:
            # only a goal model gets the goals keyword (other models need not know it)
            goal = {} if self.goals is None else {"goals": self.goals.index_select(0, row_env)}
            return self.model(sequences[:, start:length], **goal).logits[:, -1]
        if start != self.start:
            return self._rebuild(sequences, start, length, row_env)
        logits = self.decoder.feed(sequences[:, self.end : length])
        self.end = length
        return logits

    def expand(self, children: int) -> None:
        """Follow the tiling of every environment's beams ``children`` times."""
        if self.decoder is not None and self.start is not None:
            self.decoder.expand(children)

    def select(self, rows: Tensor) -> None:
        """Follow a repeat or reordering of the beam rows."""
        if self.decoder is not None and self.start is not None:
            self.decoder.select_rows(rows)

    def _rebuild(self, sequences: Tensor, start: int, length: int, row_env: Tensor) -> Tensor:
        """Run the new window: the goal and its prefix part once per environment, then the beams'
        own tokens."""
        decoder = self.decoder
        decoder.reset()
        self.start, self.end = start, length
        shared_end = min(self.prefix.shape[1], length)
        shared = self.prefix[:, start:shared_end] if start < shared_end else self.prefix[:, :0]
        if self.goals is not None:
            shared = torch.cat((self.goals.to(shared.device, shared.dtype), shared), dim=1)
        if shared.shape[1]:
            logits = decoder.feed(shared, logits=shared_end == length)
            decoder.share()
            if shared_end == length:
                decoder.rows = row_env.shape[0]
                return logits.index_select(0, row_env)
        return self._feed_plans(sequences, max(start, shared_end), length, row_env)

    def _feed_plans(self, sequences: Tensor, begin: int, end: int, row_env: Tensor) -> Tensor:
        """Feed the beams' tokens ``[begin, end)`` a transition at a time, cut after each
        observation (``[a, r, V, s']``), each distinct history once: beams descending from the same
        earlier plan share its keys/values, and the candidates of one beam share the observation
        they were expanded at. Rows that share an action share the observation that follows it
        (one kept candidate is one beam), so the cut loses no sharing; whole transitions make
        fewer, longer runs for the decoder's history levels (:meth:`CachedDecoder.feed_distinct`).
        """
        T, S = self.transition_dim, self.layout.observation_dim
        starts = range(begin // T * T, end, T)
        inner = [t + S for t in starts if begin < t + S < end]
        cuts = [begin, *inner, end]
        group = row_env  # each beam's history so far: only its environment's prefix
        for chunk_start, chunk_end in itertools.pairwise(cuts):
            history = sequences[:, begin:chunk_end]
            new_group, representative = distinct_histories(history, row_env, self.prefix.shape[0])
            self.decoder.select_rows(group.index_select(0, representative))
            logits = self.decoder.feed_distinct(
                sequences.index_select(0, representative)[:, chunk_start:chunk_end],
                logits=chunk_end == end,
            )
            group = new_group
        self.decoder.select_rows(group)
        return logits.index_select(0, group)


def distinct_histories(history: Tensor, row_env: Tensor, n_env: int) -> tuple[Tensor, Tensor]:
    """Group identical rows of ``history [rows, L]`` within each environment.

    Returns ``group [rows]`` and ``representative [n_env * G]``: groups are laid out environment-major
    with ``G`` slots per environment (the most any environment needs; spare slots repeat a row of their
    environment), ``representative`` names one beam row of each slot and ``group`` each row's slot.
    """
    keyed = torch.cat((row_env[:, None], history), dim=1)
    distinct, inverse = torch.unique(keyed, dim=0, return_inverse=True)  # sorted: env-major
    env_of_distinct = distinct[:, 0]
    counts = torch.bincount(env_of_distinct, minlength=n_env)
    slots_per_env = int(counts.max())
    first_of_env = torch.cumsum(counts, 0) - counts
    local = torch.arange(distinct.shape[0], device=history.device) - first_of_env[env_of_distinct]
    slot_of_distinct = env_of_distinct * slots_per_env + local
    group = slot_of_distinct.index_select(0, inverse)
    rows_per_env = history.shape[0] // n_env
    representative = torch.arange(n_env, device=history.device).repeat_interleave(slots_per_env)
    representative = representative * rows_per_env  # spare slots: the environment's first row
    representative.scatter_(0, group, torch.arange(history.shape[0], device=history.device))
    return group, representative
