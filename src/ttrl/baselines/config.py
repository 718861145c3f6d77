"""The schema of ``configs/train_baseline.yaml`` (``train_baseline_schema``) and its checks.

The dataset is chosen with the training config's own ``env/`` group (``env=hopper-medium`` picks
the same file, hence the same dataset, as ``scripts/train.py env=hopper-medium``; ``env.name=``
takes a Minari id or an HDF5 path as there). Those files may also set the transformer's
``planner.*`` settings, which a baseline does not use: the ``planner`` section takes any keys.

Each registered algorithm has a section named after it (``bc.lr=1e-3``), typed by its config
dataclass less the fields the runner sets from the top level (``steps`` and ``seed``), with the
dataclass's defaults: the algorithm's settings are declared once, in its config class.

``data.goal`` is ``configs/train.yaml``'s: the hindsight relabelling (future, final, desired) of
a goal-conditioned run on a dataset with goals (the maze env files set ``future``). Only a
goal-conditioned algorithm takes it (``algo=gcbc`` needs it; the plain ``bc`` and ``iql`` refuse it,
rather than silently ignoring the goals the env file asked for).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

import ttrl.config  # noqa: F401 (registers the ttrl.if_none and ttrl.slug resolvers)
from ttrl.baselines.algorithms import ALGORITHMS, BaselineAlgorithm, get_algorithm
from ttrl.config import LOGGER_MODES, EnvConfig, EvaluateConfig, LoggerConfig
from ttrl.data.goals import RELABELLINGS
from ttrl.data.registry import SOURCES as DATASET_SOURCES
from ttrl.devices import DEVICES
from ttrl.errors import TtrlError

# An algorithm config's fields that the runner fills from the top level of the config.
RUNNER_FIELDS = ("steps", "seed")


@dataclass
class BaselineDataConfig:
    """Which dataset file, and the validation split (``configs/train.yaml``'s keys of the same name)."""

    source: str = "auto"  # auto | ttrl | official (see ttrl.data.resolve_dataset)
    val_fraction: float = (
        0.05  # share of episodes held out, the same ones the transformer holds out
    )
    goal: str | None = None  # null | future | final | desired: hindsight goals (ttrl.data.goals)
    # the pursued goal appended to each observation, each reached goal a terminal success
    # (ttrl.data.goals.observe_desired_goal): for bc and iql on goal datasets (PointMaze)
    observe_goal: bool = False


@dataclass
class BaselineRunConfig:
    """The settings every baseline shares; :data:`TrainBaselineConfig` adds one section per algorithm."""

    algo: str = "bc"  # a key of ttrl.baselines.algorithms.ALGORITHMS
    env: EnvConfig = field(default_factory=EnvConfig)
    data: BaselineDataConfig = field(default_factory=BaselineDataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    planner: dict[str, Any] = field(default_factory=dict)  # the env files' TT settings: unused
    steps: int | None = (
        None  # optimiser steps; None = the algorithm's own (bc: BCConfig.steps; 0 for waypoint)
    )
    seed: int = 0  # initial weights, minibatch order and validation episodes
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    run_dir: str | None = None  # pin the run dir (resume in place)
    log_interval: int = 100  # steps between train/ and perf/ logs
    eval_interval: int = 1000  # steps between validation losses
    save_interval: int = 5000  # steps between last.safetensors saves (also at the end, on a stop)
    progress: bool = True  # tqdm progress bar
    num_threads: int | None = None  # torch CPU threads (None = torch's default)


def settings_schema(config_class: type) -> type:
    """A dataclass of ``config_class``'s fields but :data:`RUNNER_FIELDS`, same types and defaults."""
    hints = typing.get_type_hints(config_class)
    specs = []
    for f in dataclasses.fields(config_class):
        if f.name in RUNNER_FIELDS:
            continue
        default = (
            field(default_factory=f.default_factory)
            if f.default_factory is not dataclasses.MISSING
            else field(default=f.default)
        )
        specs.append((f.name, hints[f.name], default))
    return dataclasses.make_dataclass(f"{config_class.__name__}Settings", specs)


# One typed section per algorithm, named after it; the whole configs/train_baseline.yaml is the
# shared settings plus those sections.
SETTINGS_SCHEMAS = {name: settings_schema(a.config_class) for name, a in ALGORITHMS.items()}
TrainBaselineConfig = dataclasses.make_dataclass(
    "TrainBaselineConfig",
    [(name, schema, field(default_factory=schema)) for name, schema in SETTINGS_SCHEMAS.items()],
    bases=(BaselineRunConfig,),
)

ConfigStore.instance().store(name="train_baseline_schema", node=TrainBaselineConfig)

# Settings that give a checkpoint's weights and optimiser state their meaning; the chosen
# algorithm's section is fixed too (the budget, intervals, logging, device and evaluation may change).
FIXED_ON_RESUME = ("algo", "env.name", "data", "seed")


def algorithm_config(config: dict[str, Any]) -> tuple[type[BaselineAlgorithm], Any]:
    """The chosen algorithm and its config object, after checking every value the types let through.

    ``config`` is the composed ``train_baseline.yaml`` as a plain dict; raises a one-line
    :class:`~ttrl.errors.TtrlError` naming what is wrong.
    """
    algorithm = get_algorithm(config["algo"])
    checks = [
        ("device", config["device"], DEVICES),
        ("data.source", config["data"]["source"], DATASET_SOURCES),
        ("logger.mode", config["logger"]["mode"], LOGGER_MODES),
    ]
    problems = [
        f"{key}={value!r} is not one of {', '.join(allowed)}"
        for key, value, allowed in checks
        if value not in allowed
    ]
    positive = {k: config[k] for k in ("log_interval", "eval_interval", "save_interval")}
    budget = config["steps"]
    if budget is not None and algorithm.trains:
        positive["steps"] = budget
    if budget not in (None, 0) and not algorithm.trains:
        problems.append(f"steps={budget}: {algorithm.name} trains nothing (steps=0 or null)")
    problems += [f"{key}={value} must be > 0" for key, value in positive.items() if value <= 0]
    val_fraction = config["data"]["val_fraction"]
    if not 0.0 <= val_fraction < 1.0:
        problems.append(f"data.val_fraction={val_fraction} must be in [0, 1)")
    goal = config["data"]["goal"]
    if goal is not None and goal not in RELABELLINGS:
        problems.append(f"data.goal={goal!r} is not one of {', '.join(RELABELLINGS)} (or null)")
    if goal is not None and config["data"]["observe_goal"]:
        problems.append(
            f"data.goal={goal} and data.observe_goal=true are two ways to give the agent its "
            f"goal; set data.goal=null (bc, iql) or data.observe_goal=false (gcbc)"
        )
    evaluate = config["evaluate"]
    if evaluate["n_episodes"] < 0:
        problems.append(f"evaluate.n_episodes={evaluate['n_episodes']} must be >= 0")
    steps = evaluate["max_episode_steps"]
    if steps is not None and steps < 1:
        problems.append(f"evaluate.max_episode_steps={steps} must be >= 1 (or null: the env's)")
    if problems:
        raise TtrlError("bad config: " + "; ".join(problems))
    if goal is not None and not algorithm.goal_conditioned:
        raise TtrlError(
            f"{algorithm.name} is not goal-conditioned: use algo=gcbc or data.goal=null"
        )
    if goal is None and algorithm.goal_conditioned and algorithm.trains:
        raise TtrlError(
            f"algo={algorithm.name} trains on hindsight goals: set data.goal "
            f"({', '.join(RELABELLINGS)}) on a dataset with goals, e.g. env=pointmaze-umaze"
        )
    settings = dict(config[algorithm.name])
    if config["steps"] is not None:
        settings["steps"] = config["steps"]
    return algorithm, algorithm.config_class(**settings, seed=config["seed"])


def fixed_keys(config: dict[str, Any]) -> tuple[str, ...]:
    """The keys a resumed run must keep: :data:`FIXED_ON_RESUME` and the algorithm's section."""
    return (*FIXED_ON_RESUME, config["algo"])
