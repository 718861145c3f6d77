"""Structured-config schemas for ``configs/train.yaml`` and its groups, registered in Hydra's ConfigStore.

``configs/train.yaml`` starts its defaults list with ``train_schema`` (the :class:`TrainConfig` below),
so every YAML value is merged into a typed dataclass: a misspelt key or a value of the wrong type
fails at composition with Hydra's message, which :func:`compose_error_message` turns into one line.

Each group's schema is also stored under ``ttrl_schema/<group>`` so other primary configs (e.g.
``plan.yaml``) can type their sections the same way: ``- /ttrl_schema/planner@planner``.

Importing this module also registers the resolvers ``train.yaml`` uses for its run dirs:
``ttrl.if_none`` (``run_dir=<path>`` pins the dir) and ``ttrl.slug`` (a dataset name as one folder).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ttrl.data.goals import RELABELLINGS as GOAL_RELABELLINGS
from ttrl.data.preprocess import DISCOUNT, MAX_PATH_LENGTH, TERMINATION_PENALTY
from ttrl.data.registry import SOURCES as DATASET_SOURCES
from ttrl.devices import DEVICES
from ttrl.discretization.discretizer import KINDS as DISCRETIZER_KINDS
from ttrl.naming import dataset_slug

# The planner section is typed by the planner's own settings class (one definition of its fields).
from ttrl.planning.config import (
    MIN_WINDOW_TRANSITIONS,
    ControllerConfig,
    PlannerConfig,
    moved_setting_message,
)

# The repository's configs/ folder (ttrl is installed editable from its checkout).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

# Values the code checks itself (OmegaConf has no Literal type); the others come from their stages.
LOGGER_MODES = ("online", "offline", "disabled")


@dataclass
class EnvConfig:
    """One dataset and the paper's hyperparameters for it (``configs/env/<dataset>.yaml``)."""

    name: str = MISSING  # dataset name: D4RL-style, a Minari id, or a path to a D4RL HDF5 file
    n_epochs_ref: float = 50.0  # paper: n_epochs = 1e6 / n_windows * n_epochs_ref


@dataclass
class DataConfig:
    """How transitions become training windows (released-code defaults)."""

    source: str = "auto"  # auto | ttrl | official (see ttrl.data.resolve_dataset)
    discount: float = DISCOUNT  # gamma of the value targets (0.99)
    termination_penalty: float = TERMINATION_PENALTY  # the reward of a real terminal step (-100)
    max_path_length: int = MAX_PATH_LENGTH  # episodes are padded to this length (1000)
    sequence_length: int = 10  # transitions per training window
    val_fraction: float = 0.05  # share of episodes held out for validation (0 = none)
    # observation dims replaced by one fixed token in every window (the partially observed
    # prediction ablation, ttrl.data.masking); 0 = none
    hidden_observation_fraction: float = 0.0
    # goal-conditioned training (ttrl.data.goals): null = not goal-conditioned; future | final |
    # desired = each window's goal is the achieved goal of a later step of its episode, of its
    # episode's last step, or the dataset's desired goal. Needs dict observations with
    # achieved_goal and desired_goal (PointMaze); the model gets one goal token per goal dim.
    goal: str | None = None
    # the goal in the observation (ttrl.data.goals.observe_desired_goal), for agents that learn
    # from rewards (TT by return or Q, IQL): each observation gets the goal pursued at that step,
    # and each reached goal ends its episode as a terminal success; the env's desired_goal is
    # appended in evaluation too. Needs dict observations with goals (PointMaze).
    observe_goal: bool = False


@dataclass
class ModelConfig:
    """Transformer size and loss weights; the data dims are filled in from the dataset."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    action_weight: float = 5.0
    reward_weight: float = 1.0
    value_weight: float = 1.0
    block_size: int | None = None  # None = sequence_length * transition_dim - 1


@dataclass
class DiscretizerConfig:
    """Per-dimension discretisation of [s, a, r, V]."""

    kind: str = "quantile"  # quantile (paper) | uniform
    n_bins: int = 100  # N, the vocabulary size; token N is the stop token


@dataclass
class TrainerConfig:
    """Optimisation, training budget and the intervals of evaluation, logging and saving.

    Budget precedence: ``max_steps`` if set, else ``epochs`` if set, else the paper's
    ``1e6 / n_windows * env.n_epochs_ref`` epochs. ``max_minutes`` (if set) additionally stops the
    run early at that wall-clock time; the LR schedule always follows the step budget.
    """

    batch_size: int = 256  # per process; under DDP the global batch is world_size times this
    learning_rate: float = 6e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1  # Linear and head weights only
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    lr_decay: bool = True  # linear warmup then cosine to min_lr_ratio; False = constant LR
    warmup_epochs: float = 1.0  # released code: one epoch of tokens
    decay_epochs: float = 20.0  # cosine ends this many epochs after step 0 (released: 20x warmup)
    min_lr_ratio: float = 0.1  # LR floor as a fraction of learning_rate
    epochs: float | None = None  # overrides the paper formula
    max_steps: int | None = None  # overrides epochs and the paper formula
    max_minutes: float | None = None  # stop (and save) after this much wall-clock time
    eval_interval: int = 2000  # steps between validations (and best.safetensors updates)
    val_batches: int = 16  # validation batches per evaluation (0 = the whole split)
    log_interval: int = 100  # steps between train/ and perf/ logs
    save_interval: int = (
        5000  # steps between last.safetensors saves (also saved at the end and on SIGTERM)
    )
    compile: bool = False  # torch.compile the model (the uncompiled state dict is saved)
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory)
    amp: bool = True  # bf16 autocast + TF32 on CUDA (ignored on CPU)
    num_threads: int | None = None  # torch CPU threads (None = torch's default)
    progress: bool = True  # tqdm progress bar on rank 0


@dataclass
class LoggerConfig:
    """Weights & Biases. ``offline`` needs no account and no network; sync later with ``wandb sync``."""

    mode: str = "offline"  # online | offline | disabled
    project: str = "ttrl"
    entity: str | None = None
    group: str | None = None  # None = env name + a hash of the config without the seed
    name: str | None = None  # None = <env>-s<seed>
    tags: list[str] = field(default_factory=list)
    log_checkpoint: bool = (
        True  # upload the final best.safetensors as an artifact (skipped offline)
    )


@dataclass
class EvaluateConfig:
    """Planner evaluation of the final checkpoint (``last.safetensors``) once training has finished.

    Results go to ``<run_dir>/plan/<name>/`` (results.json, results.csv, ...), as ``scripts/plan.py``
    writes them, with the run's own planner settings; results of the same checkpoint step and
    settings are not planned again (a requeued job).
    """

    n_episodes: int = 0  # episodes planned together after training (0 = no evaluation)
    seed: int = 0  # episode i resets its env with seed + i
    max_episode_steps: int | None = None  # None = the env's own limit (1000)
    render: bool = False  # record the first episode into episode0.mp4
    name: str = "final"  # output folder under <run_dir>/plan/


@dataclass
class TrainConfig:
    """The whole ``configs/train.yaml``."""

    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    discretizer: DiscretizerConfig = field(default_factory=DiscretizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    run_dir: str | None = None  # pin the run dir (resume in place; required under torchrun)


GROUP_SCHEMAS: dict[str, type] = {
    "env": EnvConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "discretizer": DiscretizerConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "planner": PlannerConfig,
    "controller": ControllerConfig,
}


def _if_none(value: Any, default: Any) -> Any:
    return default if value is None else value


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore and register ttrl's resolvers (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=f"ttrl_schema/{group}", name=group, node=schema)
    from ttrl.making.collect import MakeDatasetConfig  # the making stage's (no torch, no minari)

    store.store(name="make_dataset_schema", node=MakeDatasetConfig)  # configs/make_dataset.yaml
    # configs/plan.yaml's plan_schema is stored by its module on import (PlanConfig extends
    # EvaluateConfig above, so this module cannot import it by name: a cycle)
    import ttrl.evaluation.config  # noqa: F401

    if not OmegaConf.has_resolver("ttrl.if_none"):
        OmegaConf.register_new_resolver("ttrl.if_none", _if_none)
    if not OmegaConf.has_resolver("ttrl.slug"):
        OmegaConf.register_new_resolver("ttrl.slug", dataset_slug)


register_configs()


def compose_config(
    name: str = "train", overrides: Sequence[str] = (), config_dir: str | Path = CONFIG_DIR
) -> DictConfig:
    """Compose ``configs/<name>.yaml`` with command-line style ``overrides`` (no run dir is made).

    For notebooks and tests: ``train(compose_config(overrides=["env=hopper-medium"]), run_dir)``.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def choice_errors(cfg: Any) -> list[str]:
    """Problems with string-valued choices that the schema types cannot express."""
    checks = [
        ("device", cfg.device, DEVICES),
        ("data.source", cfg.data.source, DATASET_SOURCES),
        ("discretizer.kind", cfg.discretizer.kind, DISCRETIZER_KINDS),
        ("logger.mode", cfg.logger.mode, LOGGER_MODES),
    ]
    problems = [
        f"{key}={value!r} is not one of {', '.join(allowed)}"
        for key, value, allowed in checks
        if value not in allowed
    ]
    goal = cfg.data.get("goal")
    if goal is not None and goal not in GOAL_RELABELLINGS:
        problems.append(f"data.goal={goal!r} is not one of null, {', '.join(GOAL_RELABELLINGS)}")
    if goal is not None and cfg.data.get("observe_goal"):
        problems.append(
            f"data.goal={goal} and data.observe_goal=true are two ways to give the model its "
            f"goal; set data.goal=null (planning by return or Q) or data.observe_goal=false"
        )
    return problems


def validate_train_config(cfg: Any) -> None:
    """Raise :class:`~ttrl.errors.TtrlError` for values the schema types let through."""
    from ttrl.errors import TtrlError

    problems = choice_errors(cfg)
    trainer, data = cfg.trainer, cfg.data
    positive = {
        "trainer.batch_size": trainer.batch_size,
        "trainer.learning_rate": trainer.learning_rate,
        "trainer.eval_interval": trainer.eval_interval,
        "trainer.log_interval": trainer.log_interval,
        "trainer.save_interval": trainer.save_interval,
        "data.sequence_length": data.sequence_length,
        "data.max_path_length": data.max_path_length,
        "discretizer.n_bins": cfg.discretizer.n_bins,
    }
    problems += [f"{key}={value} must be > 0" for key, value in positive.items() if value <= 0]
    not_negative = {
        "trainer.weight_decay": trainer.weight_decay,
        "trainer.grad_clip": trainer.grad_clip,
        "trainer.warmup_epochs": trainer.warmup_epochs,
        "trainer.val_batches": trainer.val_batches,
        "trainer.max_steps": trainer.max_steps,
        "trainer.max_minutes": trainer.max_minutes,
        "evaluate.n_episodes": cfg.evaluate.n_episodes,
    }
    problems += [
        f"{key}={value} must be >= 0"
        for key, value in not_negative.items()
        if value is not None and value < 0
    ]
    steps = cfg.evaluate.max_episode_steps
    if steps is not None and steps < 1:
        problems.append(f"evaluate.max_episode_steps={steps} must be >= 1 (or null: the env's)")
    if trainer.epochs is not None and trainer.epochs <= 0:
        problems.append(f"trainer.epochs={trainer.epochs} must be > 0 (or null for the paper's)")
    if trainer.decay_epochs < trainer.warmup_epochs:
        problems.append(
            f"trainer.decay_epochs={trainer.decay_epochs} must be >= "
            f"trainer.warmup_epochs={trainer.warmup_epochs} (both count from step 0)"
        )
    if not 0.0 <= trainer.min_lr_ratio <= 1.0:
        problems.append(f"trainer.min_lr_ratio={trainer.min_lr_ratio} must be in [0, 1]")
    if len(trainer.betas) != 2 or not all(0.0 <= b < 1.0 for b in trainer.betas):
        problems.append(f"trainer.betas={list(trainer.betas)} must be two numbers in [0, 1)")
    if 0 < data.sequence_length < MIN_WINDOW_TRANSITIONS:
        problems.append(
            f"data.sequence_length={data.sequence_length} must be >= {MIN_WINDOW_TRANSITIONS}: "
            f"the planner needs a model that sees a transition and the next one"
        )
    if not 0.0 <= data.val_fraction < 1.0:
        problems.append(f"data.val_fraction={data.val_fraction} must be in [0, 1)")
    if cfg.model.n_embd % cfg.model.n_head:
        problems.append(
            f"model.n_embd={cfg.model.n_embd} must be divisible by model.n_head={cfg.model.n_head}"
        )
    if problems:
        raise TtrlError("bad config: " + "; ".join(problems))
    # each raises its own TtrlError
    PlannerConfig(**OmegaConf.to_container(cfg.planner, resolve=True))
    ControllerConfig(**OmegaConf.to_container(cfg.controller, resolve=True))


HYDRA_RECORD_DIR = ".hydra"


def save_hydra_record(run_dir: str | os.PathLike, cfg: Any) -> None:
    """Write ``<run_dir>/.hydra/{config,hydra,overrides}.yaml`` as Hydra does, inside a Hydra job.

    ``train.yaml`` turns Hydra's own writing off (``hydra.output_subdir: null``), so that a run
    refused before it starts (a locked run dir, a resume with changed settings) rewrites nothing;
    training calls this once those checks passed. ``cfg`` is the job's task config.
    """
    from hydra.core.hydra_config import HydraConfig

    from ttrl.io import atomic_write_text

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    record = Path(run_dir) / HYDRA_RECORD_DIR
    atomic_write_text(record / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(record / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra}))
    atomic_write_text(record / "overrides.yaml", OmegaConf.to_yaml(list(hydra.overrides.task)))


def compose_error_message(err: BaseException, script: str = "scripts/train.py") -> str:
    """One line from a Hydra/OmegaConf composition error and its causes, plus how to check."""
    parts: list[str] = []
    while err is not None:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        # skip OmegaConf's unformatted message templates ("Value '$VALUE' ...")
        if lines and "$" not in lines[0] and lines[0] not in parts:
            parts.append(lines[0].rstrip("."))
        err = err.__cause__ or err.__context__
    message = ": ".join(parts) or "invalid config"
    moved = re.search(r"Key '(\w+)' not in 'PlannerConfig'", message)
    if moved and moved_setting_message(moved.group(1)):
        return f"{moved_setting_message(moved.group(1))} ({message})"
    if "hydra/launcher/submitit" in message:
        return (
            f"{message}; the Slurm/local launchers need the slurm extra: pip install -e '.[slurm]'"
        )
    if "hydra/sweeper/optuna" in message:
        return f"{message}; the Optuna sweeper needs the optuna extra: pip install -e '.[optuna]'"
    return (
        f"{message}; check the key's spelling and type in configs/ "
        f"(`python {script} --cfg job` prints the composed config)"
    )


def run_hydra_main(main: Callable[[], Any]) -> Any:
    """Call a ``@hydra.main`` function, turning config errors into one ``error:`` line (exit 2).

    Hydra prints config errors over several lines; here it is told to raise them instead
    (``HYDRA_FULL_ERROR``) and this prints what was wrong, where, and how to check it. A multirun
    whose jobs failed with a :class:`~ttrl.errors.TtrlError` also ends with one line and status 2.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ttrl.errors import TtrlError

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        return main()
    except (HydraException, OmegaConfBaseException) as err:
        script = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0] else "scripts/train.py"
        print(f"error: {compose_error_message(err, script)}", file=sys.stderr)
        sys.exit(2)
    except TtrlError as err:  # the first failed job of a multirun (each job printed its own)
        print(f"error: a multirun job failed: {err}", file=sys.stderr)
        sys.exit(2)
