"""What the model sees while planning: the last whole transitions of each row, optionally cached.

The model only ever attends over the last ``window_transitions * T - 1`` tokens, cropped from the front
by whole transitions so that the window starts at a transition boundary and positions restart at 0 in
each window. Whenever the crop point moves, every position in the window changes, so a key/value cache
has to be rebuilt from the new window; between moves each new token costs one incremental model step.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

PastKeyValues = tuple[tuple[Tensor, ...], ...]


def crop_start(length: int, max_window: int | None, transition_dim: int) -> int:
    """Index of the first token the model sees when the sequence holds ``length`` tokens."""
    if max_window is None or length <= max_window:
        return 0
    excess = length - max_window
    return -(-excess // transition_dim) * transition_dim  # round up to whole transitions


def select_rows(past: PastKeyValues, rows: Tensor) -> PastKeyValues:
    """The cache of the given batch rows (repeats and reorders beams)."""
    return tuple(tuple(t.index_select(0, rows) for t in layer) for layer in past)


class ModelWindow:
    """Next-token logits of every beam, as the model gives them on the cropped window.

    ``prefix [N_env, L0]`` is the part shared by all beams of an environment; ``row_env`` maps each
    beam row to its environment. With ``use_cache`` the keys/values of the window are kept and only
    new tokens are fed; a rebuild runs the shared prefix part once per environment and expands it.
    """

    def __init__(
        self,
        model: Any,
        prefix: Tensor,
        transition_dim: int,
        max_window: int | None,
        use_cache: bool,
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.transition_dim = transition_dim
        self.max_window = max_window
        self.use_cache = use_cache
        self.past: PastKeyValues | None = None
        self.start = 0  # first sequence index held in the cache
        self.end = 0  # one past the last sequence index held in the cache

    def next_logits(self, sequences: Tensor, length: int, row_env: Tensor) -> Tensor:
        """Logits ``[rows, V]`` for the token after ``sequences[:, :length]``."""
        start = crop_start(length, self.max_window, self.transition_dim)
        if not self.use_cache:
            return self.model(sequences[:, start:length]).logits[:, -1]
        if self.past is None or start != self.start:
            return self._rebuild(sequences, start, length, row_env)
        out = self.model(sequences[:, self.end : length], past_key_values=self.past, use_cache=True)
        self.past, self.end = out.past_key_values, length
        return out.logits[:, -1]

    def select(self, rows: Tensor) -> None:
        """Follow a repeat or reordering of the beam rows."""
        if self.past is not None:
            self.past = select_rows(self.past, rows)

    def _rebuild(self, sequences: Tensor, start: int, length: int, row_env: Tensor) -> Tensor:
        shared_end = min(self.prefix.shape[1], length)
        past = None
        if start < shared_end:
            # The prefix part of the window is the same for every beam of an environment.
            out = self.model(self.prefix[:, start:shared_end], use_cache=True)
            past = select_rows(out.past_key_values, row_env)
            logits = out.logits[:, -1].index_select(0, row_env)
        if shared_end < length:
            out = self.model(
                sequences[:, max(start, shared_end) : length], past_key_values=past, use_cache=True
            )
            past, logits = out.past_key_values, out.logits[:, -1]
        self.past, self.start, self.end = past, start, length
        return logits
