"""The body of ``scripts/plan.py``: load a model, roll it out, write and log the results."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ttrl.errors import TtrlError
from ttrl.evaluation.loading import (
    PlanningInputs,
    evaluation_spec,
    load_checkpoint_with_dataset,
    load_run,
    planner_config_from,
)
from ttrl.evaluation.report import PREDICTIONS_PLOT, RESULTS_JSON, write_results
from ttrl.evaluation.rollout import EpisodeResults, evaluate
from ttrl.evaluation.wandb_logging import log_to_wandb, wandb_settings

VIDEO_FILE = "episode0.mp4"
PLAN_SUBDIR = "plan"  # evaluations of a training run live in <run_dir>/plan/<name>/


def plan_output_dir(run_dir: str | None, name: str) -> str:
    """``<run_dir>/plan/<name>`` for an existing run dir, else ``outputs/plan/<name>``.

    A mistyped run dir is then reported as missing instead of being created by Hydra.
    """
    root = run_dir if run_dir and Path(run_dir).is_dir() else "outputs"
    return f"{root}/{PLAN_SUBDIR}/{name}"


def register_resolvers() -> None:
    """Register ``ttrl.plan_dir`` (used by configs/plan.yaml for Hydra's run dir); idempotent."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("ttrl.plan_dir"):
        OmegaConf.register_new_resolver("ttrl.plan_dir", plan_output_dir)


def command_line_planner_overrides(
    cfg: Mapping[str, Any], task_overrides: Sequence[str]
) -> dict[str, Any]:
    """The planner settings the user named on the command line, with their composed values.

    A run's own planner settings are the starting point; only what the user wrote
    (``planner.horizon=5``) replaces them. Choosing a whole planner preset (``planner=<name>``)
    replaces them all.
    """
    planner = dict(cfg.get("planner") or {})
    keys = [o.split("=", 1)[0].lstrip("+~") for o in task_overrides]
    if "planner" in keys:
        return planner
    named = {k.removeprefix("planner.") for k in keys if k.startswith("planner.")}
    return {k: planner[k] for k in named if k in planner}


def load_inputs(cfg: Mapping[str, Any]) -> PlanningInputs:
    """The model to plan with: a training run (``run_dir``) or a checkpoint plus a dataset."""
    run_dir, checkpoint = cfg.get("run_dir"), cfg.get("checkpoint")
    env = (cfg.get("env") or {}).get("name")
    if run_dir and checkpoint:
        raise TtrlError(
            "pass either run_dir=<training run> or checkpoint=<dir> env=<dataset>, not both"
        )
    if run_dir:
        inputs = load_run(run_dir, which=cfg.get("which", "last"))
        if env:  # evaluating a model on another dataset's env is allowed, if the sizes fit
            inputs.dataset = env
        return inputs
    if checkpoint:
        if not env:
            raise TtrlError(
                f"checkpoint={checkpoint} needs env=<dataset> (e.g. env=halfcheetah-medium) to refit its discretiser"
            )
        data = cfg.get("data") or {}
        return load_checkpoint_with_dataset(
            checkpoint, env, data, source=data.get("source", "auto")
        )
    raise TtrlError(
        "nothing to plan with; pass run_dir=<training run dir> or checkpoint=<HuggingFace dir> env=<dataset>"
    )


def run_planning(
    cfg: Mapping[str, Any],
    out_dir: str | os.PathLike,
    planner_overrides: Mapping[str, Any] | None = None,
) -> EpisodeResults:
    """Load, plan ``n_episodes`` episodes, write results into ``out_dir``, log to W&B, print a summary.

    Args:
        cfg: the plan config (``configs/plan.yaml``) as a plain mapping.
        out_dir: the output folder (Hydra's run dir, ``<run_dir>/plan/<name>``).
        planner_overrides: planner settings that replace the run's (see
            :func:`command_line_planner_overrides`); for a checkpoint without a run config, the
            whole ``cfg.planner`` section applies.
    """
    import torch

    from ttrl.training.distributed import resolve_device

    out_dir = Path(out_dir)
    inputs = load_inputs(cfg)
    run_planner = inputs.train_config.get("planner")
    if run_planner is None:  # no training run: the plan config's planner section is the setting
        planner_config = planner_config_from(cfg.get("planner"), planner_overrides)
    else:
        planner_config = planner_config_from(run_planner, planner_overrides)
    device = resolve_device(cfg.get("device", "auto"))
    data = inputs.train_config.get("data") or cfg.get("data") or {}
    spec = evaluation_spec(inputs.dataset, data.get("source", "auto"))
    torch.manual_seed(int(cfg.get("seed", 0)))
    results = evaluate(
        inputs.model.to(device),
        inputs.discretizer,
        planner_config,
        spec,
        n_episodes=int(cfg.get("n_episodes", 10)),
        seed=int(cfg.get("seed", 0)),
        max_episode_steps=cfg.get("max_episode_steps"),
        video_path=out_dir / VIDEO_FILE if cfg.get("render") else None,
        value_discount=data.get("discount", 0.99),
        termination_penalty=data.get("termination_penalty", -100.0),
        progress=bool(cfg.get("progress", True)),
    )
    config = {
        "plan": {k: v for k, v in cfg.items() if k != "planner"},  # the planner used is below
        "planner": dataclasses.asdict(planner_config),
        "checkpoint": str(inputs.source),
        "train_config": inputs.train_config,
    }
    write_results(results, out_dir, config)
    settings = wandb_settings(cfg.get("logger") or {}, inputs.train_config, inputs.trainer)
    log_to_wandb(
        results,
        settings,
        config,
        str(out_dir),
        name=f"plan-{out_dir.name}",
        plot_path=str(out_dir / PREDICTIONS_PLOT),
    )
    print(results.summary())
    return results


def evaluate_training_run(
    train_config: Mapping[str, Any], run_dir: str | os.PathLike, step: int | None = None
) -> EpisodeResults | None:
    """Plan with a finished run's ``last.pt`` as its ``evaluate`` section says (``scripts/train.py``).

    Writes ``<run_dir>/plan/<evaluate.name>/`` exactly as ``scripts/plan.py run_dir=<run_dir>``
    would, with the run's own planner settings and W&B project/group, and records ``step`` (the
    checkpoint's optimiser step) with the evaluate and planner settings. Returns None without
    planning when ``evaluate.n_episodes`` is 0 or the folder already holds the results of the same
    step and settings (a requeued or re-run job does not plan twice; one that trained on does).
    """
    evaluate_cfg = train_config["evaluate"]
    out_dir = Path(run_dir) / PLAN_SUBDIR / evaluate_cfg["name"]
    evaluated = {"step": step, "evaluate": evaluate_cfg, "planner": train_config["planner"]}
    if evaluate_cfg["n_episodes"] <= 0 or evaluated_before(out_dir) == evaluated:
        return None
    plan_config = {
        "run_dir": str(run_dir),
        "which": "last",
        "checkpoint": None,
        "n_episodes": evaluate_cfg["n_episodes"],
        "seed": evaluate_cfg["seed"],
        "max_episode_steps": evaluate_cfg["max_episode_steps"],
        "render": evaluate_cfg["render"],
        "device": train_config["device"],
        "progress": train_config["trainer"]["progress"],
        "name": evaluate_cfg["name"],
        "logger": {"mode": None, "project": None, "entity": None, "group": None},
        "after_training": evaluated,
    }
    return run_planning(plan_config, out_dir)


def evaluated_before(out_dir: Path) -> dict[str, Any] | None:
    """What an earlier :func:`evaluate_training_run` in ``out_dir`` recorded (None if nothing)."""
    try:
        results = json.loads((out_dir / RESULTS_JSON).read_text())
        return results["config"]["plan"]["after_training"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
