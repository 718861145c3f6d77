"""The Trajectory Transformer's hyperparameters, with the field names of the HuggingFace format.

``goal_dim`` (ttrl's own field, 0 by default) makes the model goal-conditioned: ``goal_dim`` goal
tokens precede every sequence (see :mod:`ttrl.model.transformer`). A model without a goal writes
exactly the fields it wrote before (``goal_dim`` is left out of :meth:`to_dict`), so its bundles
and HuggingFace directories are unchanged; HuggingFace's format has no goal, so a goal model has
no HuggingFace config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout

# Fields the HuggingFace config.json stores but the model never reads; written for compatibility.
HF_UNUSED_FIELDS: dict[str, Any] = {
    "learning_rate": 0.0006,
    "max_position_embeddings": 512,
    "initializer_range": 0.02,
    "kaiming_initializer_range": 1,
    "layer_norm_eps": 1e-12,
    "use_cache": True,
    "pad_token_id": 1,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
}
HF_MODEL_TYPE = "trajectory_transformer"


@dataclass
class TrajectoryTransformerConfig:
    """Sizes and loss weights of a :class:`~ttrl.model.TrajectoryTransformer`.

    Defaults are the paper's halfcheetah model (17 observation dims + 6 action dims + reward + value,
    100 bins, 10 transitions per training sequence). Field names match the HuggingFace config.
    """

    vocab_size: int = 100  # bins per dimension (N); token id N is the stop token
    observation_dim: int = 17
    action_dim: int = 6
    transition_dim: int = 25  # T = observation_dim + action_dim + 2 (reward, value)
    block_size: int = 249  # longest sequence the model attends over (10 transitions - 1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    action_weight: float = 5.0  # loss weight of action tokens (observation tokens weigh 1)
    reward_weight: float = 1.0
    value_weight: float = 1.0
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    # goal tokens before every sequence (0: not goal-conditioned); block_size counts them too
    goal_dim: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TtrlError` naming the first inconsistent field."""
        for name in (
            "vocab_size",
            "observation_dim",
            "action_dim",
            "block_size",
            "n_layer",
            "n_head",
            "n_embd",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TtrlError(f"model config {name}={value!r} must be a positive integer")
        check_goal_dim(self.goal_dim)
        if self.block_size <= self.goal_dim:
            raise TtrlError(
                f"model config block_size={self.block_size} leaves no trajectory token after the "
                f"goal_dim={self.goal_dim} goal tokens; build it with for_dims(..., goal_dim=...)"
            )
        expected_transition_dim = self.layout.transition_dim
        if self.transition_dim != expected_transition_dim:
            raise TtrlError(
                f"model config transition_dim={self.transition_dim} must equal observation_dim + "
                f"action_dim + 2 = {expected_transition_dim}; fix transition_dim or the dims"
            )
        if self.n_embd % self.n_head:
            raise TtrlError(
                f"model config n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                f"choose n_head dividing n_embd"
            )
        for name in ("embd_pdrop", "resid_pdrop", "attn_pdrop"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise TtrlError(f"model config {name}={value!r} must be a dropout rate in [0, 1)")

    @classmethod
    def for_dims(
        cls, observation_dim: int, action_dim: int, sequence_length: int = 10, **overrides: Any
    ) -> TrajectoryTransformerConfig:
        """Config for an environment's sizes, with a block of ``sequence_length`` transitions - 1 token
        (after the goal's ``goal_dim`` tokens, when ``overrides`` set it)."""
        n_bins = overrides.get("vocab_size", cls.vocab_size)
        goal_dim = check_goal_dim(overrides.get("goal_dim", cls.goal_dim))
        layout = TransitionLayout(observation_dim, action_dim, n_bins, prefix_length=goal_dim)
        return cls(
            observation_dim=observation_dim,
            action_dim=action_dim,
            transition_dim=layout.transition_dim,
            block_size=layout.block_size(sequence_length),
            **overrides,
        )

    @property
    def layout(self) -> TransitionLayout:
        """Where each token of this model's sequences sits (the goal is the layout's prefix)."""
        return TransitionLayout(
            self.observation_dim, self.action_dim, self.vocab_size, prefix_length=self.goal_dim
        )

    @property
    def stop_token(self) -> int:
        """Token id of the stop token (one past the last bin)."""
        return self.layout.stop_token

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (what checkpoint bundles store as ``model_config``).

        ``goal_dim`` appears only when it is set, so models without a goal keep their old format.
        """
        fields = dataclasses.asdict(self)
        if not self.goal_dim:
            del fields["goal_dim"]
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> TrajectoryTransformerConfig:
        """Build a config from a dict, ignoring keys that are not fields (e.g. HF's extras)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in fields.items() if key in known})

    def to_hf_dict(self, torch_dtype: str = "float32") -> dict[str, Any]:
        """The config.json content that transformers' TrajectoryTransformerModel reads.

        Raises:
            TtrlError: a goal-conditioned config (HuggingFace's model has no goal).
        """
        if self.goal_dim:
            raise TtrlError(
                f"a goal-conditioned model (goal_dim={self.goal_dim}) has no HuggingFace format "
                f"(transformers' TrajectoryTransformerModel has no goal); save it with "
                f"save_pretrained(directory) as a ttrl bundle"
            )
        return {
            "architectures": ["TrajectoryTransformerModel"],
            "model_type": HF_MODEL_TYPE,
            **self.to_dict(),
            **HF_UNUSED_FIELDS,
            "torch_dtype": torch_dtype,
            "transformers_version": "4.30.0",
        }


def check_goal_dim(goal_dim: object) -> int:
    """``goal_dim`` if it is an integer >= 0, else one :class:`TtrlError` line."""
    if isinstance(goal_dim, bool) or not isinstance(goal_dim, int) or goal_dim < 0:
        raise TtrlError(f"model config goal_dim={goal_dim!r} must be an integer >= 0 (0: no goal)")
    return goal_dim
