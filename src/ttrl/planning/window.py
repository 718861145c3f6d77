"""What the model sees while planning: the last whole transitions of each row, optionally cached.

The model only ever attends over the last ``window_transitions * T - 1`` tokens, cropped from the front
by whole transitions so that the window starts at a transition boundary and positions restart at 0 in
each window. Whenever the crop point moves, every position in the window changes, so a key/value cache
has to be rebuilt from the new window; between moves each new token costs one incremental model step.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ttrl.planning.decoder import CachedDecoder


def crop_start(length: int, max_window: int | None, transition_dim: int) -> int:
    """Index of the first token the model sees when the sequence holds ``length`` tokens."""
    if max_window is None or length <= max_window:
        return 0
    excess = length - max_window
    return -(-excess // transition_dim) * transition_dim  # round up to whole transitions


class ModelWindow:
    """Next-token logits of every beam, as the model gives them on the cropped window.

    ``prefix [N_env, L0]`` is the part shared by all beams of an environment; ``row_env`` maps each
    beam row to its environment. With a ``decoder`` the window's keys/values are kept and each new
    token is one incremental step; a rebuild runs the shared prefix part once per environment,
    expands it to the beams and runs the beams' own tokens on top. Without one, the whole window is
    run for every token (the released algorithm).
    """

    def __init__(
        self,
        model: Any,
        prefix: Tensor,
        transition_dim: int,
        max_window: int | None,
        decoder: CachedDecoder | None,
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.transition_dim = transition_dim
        self.max_window = max_window
        self.decoder = decoder
        self.start: int | None = None  # sequence index of the window start held by the decoder
        self.end = 0  # one past the last sequence index fed to the decoder

    def next_logits(self, sequences: Tensor, length: int, row_env: Tensor) -> Tensor:
        """Logits ``[rows, V]`` for the token after ``sequences[:, :length]``."""
        start = crop_start(length, self.max_window, self.transition_dim)
        if self.decoder is None:
            return self.model(sequences[:, start:length]).logits[:, -1]
        if start != self.start:
            return self._rebuild(sequences, start, length, row_env)
        logits = self.decoder.feed(sequences[:, self.end : length])
        self.end = length
        return logits

    def select(self, rows: Tensor) -> None:
        """Follow a repeat or reordering of the beam rows."""
        if self.decoder is not None and self.start is not None:
            self.decoder.select_rows(rows)

    def _rebuild(self, sequences: Tensor, start: int, length: int, row_env: Tensor) -> Tensor:
        """Run the new window: its prefix part once per environment, then the beams' own tokens."""
        decoder = self.decoder
        decoder.reset()
        self.start, self.end = start, length
        shared_end = min(self.prefix.shape[1], length)
        if start < shared_end:
            logits = decoder.feed(self.prefix[:, start:shared_end])
            decoder.share()
            if shared_end == length:
                decoder.rows = row_env.shape[0]
                return logits.index_select(0, row_env)
        return decoder.feed(sequences[:, max(start, shared_end) : length])
