"""The token layout: where every token of a Trajectory Transformer sequence sits, in one place.

A sequence is an optional **prefix** of ``G`` tokens (a goal, for goal-conditioned planning), then
transitions ``[s (S dims), a (A dims), r, V]`` of ``T = S + A + 2`` tokens each. Each dimension is
discretised into ``N`` bins; token id ``N`` is the stop token. The model, the data windows, the
discretiser, the planner and the evaluation all take their arithmetic from :class:`TransitionLayout`:

- ``kind`` of a position: :data:`PREFIX`, :data:`OBSERVATION`, :data:`ACTION`, :data:`REWARD`,
  :data:`VALUE`; ``dim`` of a position: its dimension within its transition (``p - G mod T``);
- the value-key positions (no query ever attends to them);
- ``block_size(k)``: the positions a model needs for ``k`` transitions of inputs (``G + k T - 1``:
  inputs are windows minus their last token);
- the crop rule: a window is cut from the front by whole transitions, and the prefix is never cut.

Sequences always start at a transition boundary after the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ttrl.errors import TtrlError

# Kinds of token, as training metrics and masks name them.
OBSERVATION, ACTION, REWARD, VALUE, PREFIX = 0, 1, 2, 3, 4
KIND_NAMES = ("observation", "action", "reward", "value", "prefix")
EXTRA_DIMS = 2  # the reward and the value follow the observation and action in every transition


def crop_start(length: int, max_window: int | None, transition_dim: int) -> int:
    """First token kept of ``length`` when at most ``max_window`` fit: whole transitions cut."""
    if max_window is None or length <= max_window:
        return 0
    excess = length - max_window
    return -(-excess // transition_dim) * transition_dim  # round up to whole transitions


@dataclass(frozen=True)
class TransitionLayout:
    """Dims and positions of the tokens of one sequence (see the module docstring)."""

    observation_dim: int
    action_dim: int
    n_bins: int = 100
    prefix_length: int = 0  # G tokens before the first transition (0: none)

    def __post_init__(self) -> None:
        for name in ("observation_dim", "action_dim", "n_bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TtrlError(f"layout {name}={value!r} must be a positive integer")
        if not isinstance(self.prefix_length, int) or self.prefix_length < 0:
            raise TtrlError(f"layout prefix_length={self.prefix_length!r} must be >= 0")

    # ---------------------------------------------------------------------- one transition
    @property
    def transition_dim(self) -> int:
        """``T = S + A + 2``."""
        return self.observation_dim + self.action_dim + EXTRA_DIMS

    @property
    def observation(self) -> slice:
        """The observation dims of a transition."""
        return slice(0, self.observation_dim)

    @property
    def action(self) -> slice:
        """The action dims of a transition."""
        return slice(self.observation_dim, self.observation_dim + self.action_dim)

    @property
    def reward_dim(self) -> int:
        """The reward's dim in a transition (``S + A``)."""
        return self.observation_dim + self.action_dim

    @property
    def value_dim(self) -> int:
        """The value's dim in a transition (``T - 1``)."""
        return self.transition_dim - 1

    @property
    def stop_token(self) -> int:
        """Token id ``N``: the episode has ended."""
        return self.n_bins

    @property
    def vocab_size(self) -> int:
        """Token ids per position: ``N`` bins and the stop token."""
        return self.n_bins + 1

    def dim_kinds(self) -> Tensor:
        """``[T]`` the kind of each dim of a transition."""
        kinds = torch.full((self.transition_dim,), OBSERVATION, dtype=torch.long)
        kinds[self.action] = ACTION
        kinds[self.reward_dim] = REWARD
        kinds[self.value_dim] = VALUE
        return kinds

    # ---------------------------------------------------------------------- positions
    def dims(self, positions: Tensor) -> Tensor:
        """Each position's dim within its transition (-1 in the prefix)."""
        trajectory = positions - self.prefix_length
        return torch.where(trajectory >= 0, trajectory % self.transition_dim, -1)

    def kinds(self, positions: Tensor) -> Tensor:
        """Each position's kind (:data:`PREFIX` ... :data:`VALUE`)."""
        dims = self.dims(positions)
        kinds = self.dim_kinds().to(positions.device)[dims.clamp(min=0)]
        return torch.where(dims >= 0, kinds, PREFIX)

    def is_value(self, positions: Tensor) -> Tensor:
        """True at value tokens: keys no query may attend to."""
        return self.dims(positions) == self.value_dim

    def is_value_position(self, position: int) -> bool:
        """:meth:`is_value` for one position, on the host (no device sync)."""
        trajectory = position - self.prefix_length
        return trajectory >= 0 and trajectory % self.transition_dim == self.value_dim

    def attention_mask(self, length: int) -> Tensor:
        """``[length, length]`` allowed (query, key) pairs: causal, and no value-token key."""
        positions = torch.arange(length)
        causal = positions[:, None] >= positions[None, :]
        return causal & ~self.is_value(positions)[None, :]

    def tokens(self, n_transitions: int) -> int:
        """Tokens of ``n_transitions`` whole transitions (no prefix)."""
        return n_transitions * self.transition_dim

    def block_size(self, n_transitions: int) -> int:
        """Positions a model needs for windows of ``n_transitions``: ``G + k T - 1``."""
        if n_transitions < 1:
            raise TtrlError(f"a window needs at least one transition, got {n_transitions}")
        return self.prefix_length + self.tokens(n_transitions) - 1

    def transitions_fitting(self, block_size: int) -> int:
        """The most whole transitions whose window (``k T - 1`` tokens) fits ``block_size``."""
        return (block_size - self.prefix_length + 1) // self.transition_dim

    def crop_start(self, length: int, max_window: int | None) -> int:
        """First trajectory token a window of at most ``max_window`` trajectory tokens keeps.

        ``length`` counts trajectory tokens (after the prefix, which is never cropped); the crop
        removes whole transitions from the front, so the window starts at a boundary.
        """
        return crop_start(length, max_window, self.transition_dim)

    def with_prefix(self, prefix_length: int) -> TransitionLayout:
        """The same transitions behind a prefix of ``prefix_length`` tokens."""
        return TransitionLayout(self.observation_dim, self.action_dim, self.n_bins, prefix_length)
