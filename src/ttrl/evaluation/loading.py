"""What planning needs, from a training run dir or from a HuggingFace-format checkpoint."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttrl.checkpoint import find_bundle, load_bundle
from ttrl.data import DatasetSpec, resolve_dataset
from ttrl.data.pipeline import load_and_fit, preprocessing_settings
from ttrl.data.registry import (
    ENVS,
    MAZES,
    dataset_names,
    is_maze_name,
    split_dataset_name,
    split_maze_name,
)
from ttrl.errors import TtrlError


@dataclass
class PlanningInputs:
    """A trained model with its discretiser and where they came from.

    Attributes:
        model: the :class:`~ttrl.model.TrajectoryTransformer`.
        discretizer: the :class:`~ttrl.discretization.Discretizer` its tokens were made with.
        dataset: the dataset name the model was trained on (``cfg.env.name`` of the run).
        train_config: the run's resolved training config ({} for a HuggingFace checkpoint).
        trainer: the run's trainer state (W&B run id, step, ...; {} when there is none).
        source: the checkpoint file or directory that was loaded.
        goal_discretizer: the :class:`~ttrl.discretization.Discretizer` of the goal dims for a
            goal-conditioned model (it encodes the env's desired goal); None for a plain one.
    """

    model: Any
    discretizer: Any
    dataset: str
    train_config: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    goal_discretizer: Any | None = None


def load_run(
    run_dir: str | os.PathLike, which: str = "last", map_location: Any = "cpu"
) -> PlanningInputs:
    """Model, discretiser(s) and config of a training run (``<run_dir>/checkpoints/<which>.safetensors``).

    A goal-conditioned run's bundle also holds its goal discretiser (``goal_discretizer``).

    Raises:
        TtrlError: a baseline's bundle, one without a discretiser or dataset, or a goal-conditioned
            model whose bundle lacks its goal discretiser (one line each).
    """
    from ttrl.discretization import Discretizer
    from ttrl.model import TrajectoryTransformer

    file = find_bundle(run_dir, which)
    bundle = load_bundle(file, map_location=map_location)
    if bundle.get("baseline"):
        raise TtrlError(
            f"{file} is a {bundle['baseline']} baseline, not a Trajectory Transformer; "
            f"scripts/train_baseline.py evaluates it (evaluate.n_episodes=N)"
        )
    if not bundle.get("discretizer"):
        raise TtrlError(
            f"checkpoint {file} holds no discretiser; plan a HuggingFace checkpoint with "
            f"`checkpoint=<dir> env=<dataset>` instead, which refits it on the dataset"
        )
    from ttrl.planning.config import migrate_controller_settings

    config = migrate_controller_settings(bundle.get("config") or {})
    dataset = (config.get("env") or {}).get("name")
    if not dataset:
        raise TtrlError(
            f"checkpoint {file} does not record its dataset (config env.name); pass env=<dataset>"
        )
    model = TrajectoryTransformer.from_pretrained(file)
    goal_state = bundle.get("goal_discretizer")
    if model.config.goal_dim and not goal_state:
        raise TtrlError(
            f"checkpoint {file} holds a goal-conditioned model (goal_dim={model.config.goal_dim}) "
            f"but no goal discretiser; plan with a bundle that scripts/train.py wrote with data.goal set"
        )
    return PlanningInputs(
        model=model,
        discretizer=Discretizer.from_state_dict(bundle["discretizer"]),
        dataset=dataset,
        train_config=config,
        trainer=bundle.get("trainer") or {},
        source=file,
        goal_discretizer=Discretizer.from_state_dict(goal_state) if goal_state else None,
    )


def load_checkpoint_with_dataset(
    checkpoint: str | os.PathLike,
    dataset: str,
    data_config: Mapping[str, Any],
    source: str = "auto",
) -> PlanningInputs:
    """A HuggingFace-format (or weights-only) checkpoint, its discretiser refit on ``dataset``.

    Such checkpoints hold weights only; the quantile discretiser is refit on the dataset as the
    released code preprocessed it (``released_compat``: the last step dropped, float64 values;
    ``data_config`` gives discount, termination_penalty and max_path_length, defaulting to the data
    stage's), which reproduces the tokens those checkpoints were trained on.
    """
    from ttrl.model import TrajectoryTransformer

    model = TrajectoryTransformer.from_pretrained(checkpoint)
    if model.config.goal_dim:  # its goal discretiser is in its training run's bundle only
        raise TtrlError(
            f"checkpoint {checkpoint} holds a goal-conditioned model (goal_dim="
            f"{model.config.goal_dim}); plan it with run_dir=<its training run>, whose bundle "
            f"holds the goal discretiser"
        )
    fitted = load_and_fit(
        dataset,
        n_bins=model.config.vocab_size,
        kind="quantile",
        source=source,
        released_compat=True,  # HF checkpoints were trained on the released code's tokens
        **preprocessing_settings(data_config),
    )
    trajectories = fitted.trajectories
    if trajectories.transition_dim != model.config.transition_dim:
        raise TtrlError(
            f"dataset {dataset!r} has transition dim {trajectories.transition_dim} "
            f"(observation {trajectories.observation_dim}, action {trajectories.action_dim}) but "
            f"checkpoint {checkpoint} expects {model.config.transition_dim} (observation "
            f"{model.config.observation_dim}, action {model.config.action_dim}); pass the dataset it was trained on"
        )
    return PlanningInputs(
        model=model, discretizer=fitted.discretizer, dataset=dataset, source=Path(checkpoint)
    )


def evaluation_spec(dataset: str, source: str = "auto") -> DatasetSpec:
    """The env and reference scores of ``dataset``; D4RL-style and maze names need no data on disk.

    Planning only needs the environment id and the reference returns, so a model can be evaluated
    on a machine that does not hold its training data.
    """
    try:
        return resolve_dataset(dataset, source)
    except TtrlError:
        if is_maze_name(dataset):  # goal reaching: scored by success, no reference returns
            maze, reward_type = split_maze_name(dataset)
            env_id = MAZES[maze].env_id_for(reward_type)
            return DatasetSpec(
                name=dataset,
                env_id=env_id,
                minari_id=None,
                hdf5_path=None,
                ref_min_score=None,
                ref_max_score=None,
                ref_source="none",
            )
        if dataset not in dataset_names():
            raise
        info = ENVS[split_dataset_name(dataset)[0]]
        return DatasetSpec(
            name=dataset,
            env_id=info.env_id,
            minari_id=None,
            hdf5_path=None,
            ref_min_score=info.ref_min_score,
            ref_max_score=info.ref_max_score,
            ref_source="D4RL",
        )


# The sections of a run's (or a plan config's) settings that decide how it plans.
PLANNING_SECTIONS = ("planner", "controller")


def planner_config_from(
    base: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
) -> Any:
    """A :class:`~ttrl.planning.PlannerConfig` from ``base`` (the run's settings) updated by ``overrides``."""
    from ttrl.planning import PlannerConfig

    return _section_config(PlannerConfig, base, overrides)


def planning_settings(
    base: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[Any, Any]:
    """The planner and controller to plan with, built (and so validated) once.

    ``base`` is a run's config (or a plan config) holding ``planner`` and ``controller`` sections;
    a run saved before the controller had its own section is read as if it had one.
    ``overrides`` maps a section to the settings that replace the base's (the command line's);
    a controller setting among the planner's gets one line naming its new place.
    Returns ``(PlannerConfig, ControllerConfig)``.
    """
    from ttrl.planning import ControllerConfig, PlannerConfig
    from ttrl.planning.config import migrate_controller_settings

    base = migrate_controller_settings(base)
    overrides = overrides or {}
    return (
        _section_config(PlannerConfig, base.get("planner"), overrides.get("planner")),
        _section_config(ControllerConfig, base.get("controller"), overrides.get("controller")),
    )


def _section_config(
    schema: type, base: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None
) -> Any:
    """``schema`` built from ``base`` updated by ``overrides`` (an unknown override: one line)."""
    known = {f.name for f in dataclasses.fields(schema)}
    # The run's section may carry keys of its own (e.g. a schema name); only known ones apply.
    settings = {k: v for k, v in (base or {}).items() if k in known}
    return schema(**{**settings, **(overrides or {})})
