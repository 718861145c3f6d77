"""From a training config to training windows, and the model's config.

The data stage loads, preprocesses and fits the discretiser (:mod:`ttrl.data.pipeline`, which
planning uses too); training then tokenises and splits the windows by episode.

With ``data.goal`` set (future, final or desired) the run is goal-conditioned
(:mod:`ttrl.data.goals`): the goal fields get a discretiser of their own, the windows carry a goal
each (batches ``(x, y, mask, goals)``) and the model reads ``G`` goal tokens before every window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ttrl.data.goals import ACHIEVED_GOAL, DESIRED_GOAL, GoalTokenDataset, fit_goal_discretizer
from ttrl.data.loading import Transitions
from ttrl.data.masking import hidden_observation_dims
from ttrl.data.pipeline import FittedData, load_and_fit, load_preprocessed, preprocessing_settings
from ttrl.data.preprocess import Trajectories
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout
from ttrl.model import TrajectoryTransformerConfig


@dataclass
class TrainingData:
    """Everything training needs from the data stage."""

    dataset_name: str
    discretizer: Any  # ttrl.discretization.Discretizer
    train: Any  # ttrl.data.TokenDataset
    val: Any | None  # None when data.val_fraction is 0 or no episode was held out
    observation_dim: int
    action_dim: int
    reconstruction_error: (
        np.ndarray | None
    )  # per transition dim; None when the discretiser is reused
    goal_discretizer: Any | None = None  # the goal dims' Discretizer (goal runs); else None

    @property
    def goal_dim(self) -> int:
        """Goal tokens per window (the model's ``goal_dim``); 0 for a run without goals."""
        return 0 if self.goal_discretizer is None else self.goal_discretizer.transition_dim


def load_trajectories(cfg: Any, released_compat: bool = False) -> Trajectories:
    """The rows of ``cfg.env.name`` preprocessed with ``cfg.data`` (see :func:`load_preprocessed`).

    ttrl's own training keeps the dataset's last step and float32 rows; ``released_compat=True``
    gives the released code's rows instead (last step dropped, float64), whose quantile edges and
    tokens are the ones checkpoints trained by that code expect (see :mod:`ttrl.data.preprocess`).
    """
    return load_preprocessed(cfg.env.name, released_compat=released_compat, **_preprocessing(cfg))


def fit_data(
    cfg: Any, discretizer_state: dict | None = None, goal_discretizer_state: dict | None = None
) -> FittedData:
    """``cfg``'s dataset, preprocessed, with the ``cfg.discretizer`` fitted on it.

    With ``discretizer_state`` (resuming) that discretiser is rebuilt instead, so a resumed run
    tokenises exactly as before. A goal-conditioned run (``data.goal`` set) keeps the transitions
    and fits the goal discretiser on their goal fields (same kind and bins), or rebuilds it from
    ``goal_discretizer_state``.

    Raises:
        TtrlError: ``data.goal`` set on a dataset without goal fields (one line).
    """
    goal = goal_setting(cfg)
    data = load_and_fit(
        cfg.env.name,
        n_bins=cfg.discretizer.n_bins,
        kind=cfg.discretizer.kind,
        discretizer_state=discretizer_state,
        keep_transitions=goal is not None,
        **_preprocessing(cfg),
    )
    if goal is None:
        return data
    require_goal_fields(data.transitions, goal)
    if goal_discretizer_state is not None:
        data.goal_discretizer = Discretizer.from_state_dict(goal_discretizer_state)
    else:
        data.goal_discretizer = fit_goal_discretizer(
            data.transitions, cfg.discretizer.n_bins, cfg.discretizer.kind
        )
    return data


def goal_setting(cfg: Any) -> str | None:
    """``cfg.data.goal``: the hindsight relabelling of a goal-conditioned run, or None."""
    return cfg.data.get("goal")


def require_goal_fields(transitions: Transitions | None, goal: str) -> None:
    """One :class:`TtrlError` line, naming ``data.goal``, if ``transitions`` lack a goal field."""
    if transitions is None:
        raise TtrlError(f"data.goal={goal} needs the dataset's transitions (keep_transitions=True)")
    try:
        for key in (ACHIEVED_GOAL, DESIRED_GOAL):
            transitions.goal(key)
    except TtrlError as err:
        raise TtrlError(
            f"data.goal={goal} trains a goal-conditioned model, but {err} (or train without goals: "
            f"data.goal=null)"
        ) from err


def _preprocessing(cfg: Any) -> dict[str, Any]:
    return {"source": cfg.data.source, **preprocessing_settings(cfg.data)}


def tokenize(cfg: Any, data: FittedData, seed: int) -> TrainingData:
    """Cut ``data``'s trajectories into train/val token windows of its discretiser (with a
    relabelled goal each, :class:`~ttrl.data.goals.GoalTokenDataset`, for a goal-conditioned run)."""
    from ttrl.data import TokenDataset

    data_cfg = cfg.data
    trajectories, discretizer = data.trajectories, data.discretizer
    error = (
        np.asarray(discretizer.reconstruction_error(trajectories.joined)) if data.fitted else None
    )
    windows = {
        "sequence_length": data_cfg.sequence_length,
        "max_path_length": data_cfg.max_path_length,
        "hidden_observation_dims": hidden_observation_dims(
            trajectories.observation_dim, data_cfg.hidden_observation_fraction
        ),
    }
    if data.goal_discretizer is None:
        tokens = TokenDataset.build(trajectories, discretizer, **windows)
    else:
        tokens = GoalTokenDataset.build(
            trajectories,
            data.transitions,
            discretizer,
            data.goal_discretizer,
            relabel=goal_setting(cfg),
            **windows,
        )
    if len(tokens) == 0:
        raise TtrlError(
            f"dataset {cfg.env.name} yields no training window of {data_cfg.sequence_length} "
            "transitions; use a larger dataset or a smaller data.sequence_length"
        )
    train, val = split_windows(tokens, data_cfg.val_fraction, seed)
    return TrainingData(
        dataset_name=cfg.env.name,
        discretizer=discretizer,
        train=train,
        val=val,
        observation_dim=trajectories.observation_dim,
        action_dim=trajectories.action_dim,
        reconstruction_error=error,
        goal_discretizer=data.goal_discretizer,
    )


def split_windows(tokens: Any, val_fraction: float, seed: int) -> tuple[Any, Any | None]:
    """Hold out ``val_fraction`` of the episodes; the validation part is None when it is empty."""
    if val_fraction <= 0:
        return tokens, None
    train, val = tokens.split(val_fraction, seed)
    if len(train) == 0:
        raise TtrlError(
            f"data.val_fraction={val_fraction} leaves no training window; lower it or use more data"
        )
    return train, (val if len(val) > 0 else None)


def build_model_config(
    model_cfg: Any,
    observation_dim: int,
    action_dim: int,
    n_bins: int,
    sequence_length: int,
    goal_dim: int = 0,
) -> TrajectoryTransformerConfig:
    """The transformer's config: sizes from ``model_cfg``, dims from the data.

    ``block_size`` defaults to ``goal_dim + sequence_length * T - 1`` (inputs are windows minus
    their last token, after the goal's ``goal_dim`` tokens; 0 without a goal).
    """
    layout = TransitionLayout(observation_dim, action_dim, n_bins, prefix_length=goal_dim)
    transition_dim = layout.transition_dim
    needed = layout.block_size(sequence_length)
    block_size = model_cfg.block_size or needed
    if block_size < needed:
        raise TtrlError(
            f"model.block_size={block_size} is too small for data.sequence_length={sequence_length} "
            f"windows of {transition_dim} tokens (needs {needed}); set model.block_size=null"
        )
    return TrajectoryTransformerConfig(
        vocab_size=n_bins,
        observation_dim=observation_dim,
        action_dim=action_dim,
        transition_dim=transition_dim,
        block_size=block_size,
        n_layer=model_cfg.n_layer,
        n_head=model_cfg.n_head,
        n_embd=model_cfg.n_embd,
        action_weight=model_cfg.action_weight,
        reward_weight=model_cfg.reward_weight,
        value_weight=model_cfg.value_weight,
        embd_pdrop=model_cfg.embd_pdrop,
        resid_pdrop=model_cfg.resid_pdrop,
        attn_pdrop=model_cfg.attn_pdrop,
        goal_dim=goal_dim,
    )


def describe_reconstruction_error(error: np.ndarray, observation_dim: int, action_dim: int) -> str:
    """One line summarising the discretiser's mean absolute reconstruction error per token type."""
    groups = {
        "obs": error[:observation_dim],
        "act": error[observation_dim : observation_dim + action_dim],
        "rew": error[-2:-1],
        "val": error[-1:],
    }
    parts = [
        f"{name} mean {part.mean():.3g} max {part.max():.3g}"
        for name, part in groups.items()
        if part.size
    ]
    return "discretizer reconstruction error (mean |x - decode(encode(x))|): " + "; ".join(parts)
