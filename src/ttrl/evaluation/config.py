"""The schema of ``configs/plan.yaml`` (``plan_schema`` in Hydra's ConfigStore) and its checks.

``plan.yaml`` starts its defaults list with ``plan_schema`` (:class:`PlanConfig`), so a misspelt
key or a value of the wrong type (``seed=abc``) fails at composition with one line (see
:func:`ttrl.config.run_hydra_main`); :func:`validate_plan_config` checks the values the types let
through (``n_episodes=0``, ``which=worst``) before anything is loaded. The episode settings shared
with the evaluation after training are :class:`ttrl.config.EvaluateConfig`'s own fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from ttrl.config import DEVICES, LOGGER_MODES, DataConfig, EnvConfig, EvaluateConfig
from ttrl.errors import TtrlError
from ttrl.planning.config import ControllerConfig, PlannerConfig

CHECKPOINTS = ("last", "best")


@dataclass
class PlanLoggerConfig:
    """W&B settings of an evaluation; None takes the training run's."""

    mode: str | None = None  # online | offline | disabled; None = the training run's mode
    project: str | None = None
    entity: str | None = None
    group: str | None = None


@dataclass
class PlanEnvConfig(EnvConfig):
    """The dataset to evaluate on; unset (None) plans on the training run's own dataset."""

    name: str | None = None  # a configs/env/ file sets it; or env.name=<Minari id or HDF5 path>


@dataclass
class PlanConfig(EvaluateConfig):
    """The whole ``configs/plan.yaml``: what to plan with, the episodes, and where results go.

    ``n_episodes``, ``seed``, ``max_episode_steps``, ``render`` and ``name`` are
    :class:`~ttrl.config.EvaluateConfig`'s; only the defaults of ``n_episodes`` and ``name`` differ.
    """

    n_episodes: int = 10  # episodes planned together; episode i uses seed + i
    name: str = "${now:%Y-%m-%d_%H-%M-%S}"  # output folder under <run_dir>/plan/
    run_dir: str | None = None  # a training run dir (holds checkpoints/)
    which: str = "last"  # last | best: the run's checkpoint to plan with
    checkpoint: str | None = None  # instead of run_dir: a HuggingFace-format or saved-model dir
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True  # tqdm bars over steps and episodes
    overwrite: bool = False  # replace results of other settings in the same output folder
    logger: PlanLoggerConfig = field(default_factory=PlanLoggerConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: PlanEnvConfig = field(default_factory=PlanEnvConfig)


def validate_plan_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`~ttrl.errors.TtrlError` (one line) for plan settings that cannot work.

    ``cfg`` is the composed ``plan.yaml`` as a plain mapping (or what
    :func:`~ttrl.evaluation.evaluate_training_run` builds); planner settings are checked by
    :class:`~ttrl.planning.PlannerConfig` when the planner is made.
    """
    problems = []
    n_episodes, seed, steps = cfg.get("n_episodes"), cfg.get("seed"), cfg.get("max_episode_steps")
    if not _is_int(n_episodes) or n_episodes < 1:
        problems.append(f"n_episodes={n_episodes!r} must be an integer >= 1")
    if not _is_int(seed) or seed < 0:
        problems.append(f"seed={seed!r} must be an integer >= 0 (episode i resets with seed + i)")
    if steps is not None and (not _is_int(steps) or steps < 1):
        problems.append(
            f"max_episode_steps={steps!r} must be an integer >= 1, or null for the env's limit"
        )
    choices = [
        ("which", cfg.get("which", "last"), CHECKPOINTS),
        ("device", cfg.get("device", "auto"), DEVICES),
        ("logger.mode", (cfg.get("logger") or {}).get("mode"), (None, *LOGGER_MODES)),
    ]
    problems += [
        f"{key}={value!r} is not one of {', '.join('null' if a is None else a for a in allowed)}"
        for key, value, allowed in choices
        if value not in allowed
    ]
    name = cfg.get("name")
    if not isinstance(name, str) or not name.strip() or name.strip("/.") == "":
        problems.append(f"name={name!r} must name a folder (e.g. name=eval1)")
    if problems:
        raise TtrlError("bad plan config: " + "; ".join(problems))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Stored on import: ttrl.config.register_configs imports this module (PlanConfig builds on its
# EvaluateConfig, so it cannot live there without an import cycle).
ConfigStore.instance().store(name="plan_schema", node=PlanConfig)
