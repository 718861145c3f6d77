"""The body of ``scripts/plan.py``: load a model, roll it out, write and log the results.

Each episode's result is written as it ends (:mod:`ttrl.evaluation.store`). SIGTERM or Ctrl-C
stops the rollout after its current step: the finished episodes are kept, results files are
written for them, and running the same evaluation again plans only the others. A second Ctrl-C
stops at once (the finished episodes are on disk already).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ttrl.checkpoint import resume_checkpoint
from ttrl.data.pipeline import preprocessing_settings
from ttrl.devices import resolve_device
from ttrl.errors import TtrlError
from ttrl.evaluation.config import validate_plan_config
from ttrl.evaluation.loading import (
    PLANNING_SECTIONS,
    PlanningInputs,
    evaluation_spec,
    load_checkpoint_with_dataset,
    load_run,
    planning_settings,
)
from ttrl.evaluation.report import PREDICTIONS_PLOT, RESULTS_JSON, write_results
from ttrl.evaluation.rollout import EpisodeResults, evaluate
from ttrl.evaluation.store import EpisodeStore
from ttrl.evaluation.wandb_logging import log_to_wandb, wandb_settings
from ttrl.locking import hold_plan_dir
from ttrl.planning.config import migrate_controller_settings
from ttrl.signals import recorded_stop_signals, stop_exit_code

VIDEO_FILE = "episode0.mp4"
PLAN_SUBDIR = "plan"  # evaluations of a training run live in <run_dir>/plan/<name>/
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


TRAINING_RUNS = ("outputs/train/*/*", "multirun/train/*/*")  # where scripts/train.py puts runs


def newest_training_run(cwd: str | os.PathLike = ".") -> Path | None:
    """The training run under ``outputs/`` (or ``multirun/``) whose last checkpoint is newest."""
    found = []
    for pattern in TRAINING_RUNS:
        for run_dir in Path(cwd).glob(pattern):
            checkpoint = resume_checkpoint(run_dir)
            if checkpoint is not None:
                found.append((checkpoint.stat().st_mtime, run_dir))
    return max(found)[1] if found else None


def plan_output_dir(run_dir: str | None, checkpoint: str | None, name: str) -> str:
    """``<run_dir>/plan/<name>`` for an existing run dir, else ``outputs/plan/<name>``.

    With neither ``run_dir`` nor ``checkpoint``, the newest training run's. A mistyped run dir is
    reported as missing instead of being created by Hydra.
    """
    return run_output_dir(run_dir, checkpoint, name, PLAN_SUBDIR)


def run_output_dir(run_dir: str | None, checkpoint: str | None, name: str, subdir: str) -> str:
    """``<run_dir>/<subdir>/<name>`` (the newest training run's when neither is named), else
    ``outputs/<subdir>/<name>``."""
    if not run_dir and not checkpoint:
        newest = newest_training_run()
        run_dir = str(newest) if newest is not None else None
    root = run_dir if run_dir and Path(run_dir).is_dir() else "outputs"
    return f"{root}/{subdir}/{name}"


def choose_run_dir(
    cfg: dict[str, Any], out_dir: str | os.PathLike, doing: str = "planning"
) -> dict[str, Any]:
    """``cfg`` with ``run_dir`` set to the newest training run when nothing to plan was named.

    That run was found once, when Hydra resolved the output folder (:func:`run_output_dir`),
    and the folder ``<run_dir>/<subdir>/<name>`` names it.
    """
    if cfg.get("run_dir") or cfg.get("checkpoint"):
        return cfg
    run_dir = Path(os.path.relpath(Path(out_dir).parent.parent))
    if resume_checkpoint(run_dir) is None:
        raise TtrlError(
            "nothing to plan with: no training run under outputs/train/ or multirun/train/; train "
            "one with `python scripts/train.py`, or pass run_dir=<training run dir> or "
            "checkpoint=<HuggingFace dir> env=<dataset>"
        )
    print(f"{doing} the newest training run, {run_dir} (pass run_dir=<dir> for another)")
    return {**cfg, "run_dir": str(run_dir)}


def register_resolvers() -> None:
    """Register ``ttrl.plan_dir`` (used by configs/plan.yaml for Hydra's run dir); idempotent."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("ttrl.plan_dir"):
        OmegaConf.register_new_resolver("ttrl.plan_dir", plan_output_dir)


def command_line_overrides(
    cfg: Mapping[str, Any], task_overrides: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per planning section (``planner``, ``controller``), the settings the command line named,
    with their composed values: what replaces a run's own settings.

    ``task_overrides`` are the job's overrides as Hydra records them, read with Hydra's own
    override parser. Choosing a whole section (``planner=<preset>``) names all of its keys.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    named: dict[str, set[str] | None] = {section: set() for section in PLANNING_SECTIONS}
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        section, _, key = override.key_or_group.partition(".")
        if section not in named:
            continue
        keys = named[section]
        if not key:
            named[section] = None  # the whole section was chosen
        elif keys is not None:
            keys.add(key.split(".", 1)[0])
    result = {}
    for section, keys in named.items():
        values = dict(cfg.get(section) or {})
        result[section] = values if keys is None else {k: values[k] for k in keys if k in values}
    return result


def command_line_planner_overrides(
    cfg: Mapping[str, Any], task_overrides: Sequence[str]
) -> dict[str, Any]:
    """The planner section of :func:`command_line_overrides` (the name earlier versions gave)."""
    return command_line_overrides(cfg, task_overrides)["planner"]


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
        hidden = ((inputs.train_config.get("data") or {}).get("hidden_observation_fraction")) or 0
        if hidden > 0:
            raise TtrlError(
                f"run {run_dir} was trained with data.hidden_observation_fraction={hidden} (some "
                f"observation dims hidden) for the prediction ablation; it cannot act in the env: "
                f"evaluate it with scripts/predict.py"
            )
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


stopped_exit_code = stop_exit_code  # the name scripts/plan.py uses


def stop_requests() -> AbstractContextManager[dict[str, int | None]]:
    """Record SIGTERM/SIGINT in ``state["signum"]`` so the rollout can stop after its step."""
    return recorded_stop_signals(STOP_SIGNALS)


def resume_command(argv: Sequence[str], name: str, run_dir: str | None = None) -> str:
    """The command that continues an evaluation: ``argv`` with ``name=<name>`` (its folder), and
    ``run_dir=`` when the run was the newest one rather than named."""
    script = os.path.relpath(argv[0]) if argv else "scripts/plan.py"
    args = [a for a in argv[1:] if not a.startswith("name=")]
    named = any(a.startswith(("run_dir=", "checkpoint=")) for a in args)
    pinned = [f"run_dir={run_dir}"] if run_dir and not named else []
    return shlex.join(["python", script, *args, *pinned, f"name={name}"])


def evaluation_settings(
    cfg: Mapping[str, Any],
    inputs: PlanningInputs,
    planner_config: Any,
    device: Any,
    data: Mapping[str, Any],
    controller_config: Any = None,
) -> dict[str, Any]:
    """Everything that decides the episodes' results: two runs with equal settings plan the same.

    ``controller_config`` defaults to the paper's (:class:`~ttrl.planning.ControllerConfig`).

    The checkpoint is named relative to ``run_dir`` when it lies inside it (the run dir may move)
    and by its absolute path otherwise, with the optimiser step it was saved at.
    """
    from ttrl import __version__
    from ttrl.planning import ControllerConfig

    controller_config = controller_config or ControllerConfig()
    source = Path(inputs.source) if inputs.source is not None else None
    run_dir = cfg.get("run_dir")
    checkpoint = None
    if source is not None:
        checkpoint = str(source.resolve())
        if run_dir and source.resolve().is_relative_to(Path(run_dir).resolve()):
            checkpoint = str(source.resolve().relative_to(Path(run_dir).resolve()))
    return {
        "checkpoint": checkpoint,
        "checkpoint_step": inputs.trainer.get("step"),
        "dataset": inputs.dataset,
        "n_episodes": cfg["n_episodes"],
        "seed": cfg["seed"],
        "max_episode_steps": cfg.get("max_episode_steps"),
        "render": bool(cfg.get("render")),
        "planner": dataclasses.asdict(planner_config),
        "controller": dataclasses.asdict(controller_config),
        "data": dict(data),
        "device": device.type,
        "ttrl_version": __version__,
    }


def run_planning(
    cfg: Mapping[str, Any],
    out_dir: str | os.PathLike,
    planner_overrides: Mapping[str, Any] | None = None,
    resume_hint: str | None = None,
    on_checked: Callable[[dict[str, Any]], None] | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> EpisodeResults:
    """Load, plan ``n_episodes`` episodes, write results into ``out_dir``, log to W&B, print a summary.

    Episodes that an earlier run with the same settings finished in ``out_dir`` are read back,
    not planned again; results of other settings are refused unless ``cfg.overwrite``. Stopped
    by SIGTERM/SIGINT, it writes the results of the finished episodes, prints one line saying what
    was kept and how to go on, and returns them with ``stopped_by`` set (the caller exits with
    :func:`stopped_exit_code`).

    Args:
        cfg: the plan config (``configs/plan.yaml``) as a plain mapping.
        out_dir: the output folder (Hydra's run dir, ``<run_dir>/plan/<name>``).
        planner_overrides: planner settings that replace the run's (``overrides["planner"]``;
            controller settings among them, as older callers passed them, go to the controller).
        resume_hint: how to go on after a stop (default: run the same command with ``name=``).
        on_checked: called once the folder's settings check passed, before planning, with the
            ``planner`` and ``controller`` sections planned with (plan.py records them) when it
            takes an argument.
        overrides: per section (``planner``, ``controller``) the settings that replace the
            run's own (see :func:`command_line_overrides`); for a checkpoint without a run
            config, ``cfg``'s whole ``planner`` and ``controller`` sections apply.
    """
    unknown = sorted(set(overrides or {}) - set(PLANNING_SECTIONS))
    if unknown:
        raise TtrlError(
            f"overrides has section(s) {', '.join(unknown)}; it maps "
            f"{' and '.join(PLANNING_SECTIONS)} to their settings (planner_overrides= takes "
            f"planner settings alone)"
        )
    validate_plan_config(cfg)
    overrides = {**(overrides or {})}
    if planner_overrides:  # the older form, which may still hold the controller's settings
        legacy = migrate_controller_settings({"planner": planner_overrides})
        for section, values in legacy.items():
            overrides[section] = {**overrides.get(section, {}), **values}
    with stop_requests() as stop, hold_plan_dir(out_dir):
        return _run_planning(cfg, Path(out_dir), overrides, resume_hint, on_checked, stop)


def _run_planning(
    cfg: Mapping[str, Any],
    out_dir: Path,
    overrides: Mapping[str, Mapping[str, Any]],
    resume_hint: str | None,
    on_checked: Callable[[dict[str, Any]], None] | None,
    stop: dict[str, int | None],
) -> EpisodeResults:
    inputs = load_inputs(cfg)
    # a run's own settings are the base; without a run (a checkpoint) the plan config's are
    base = inputs.train_config if "planner" in inputs.train_config else cfg
    planner_config, controller_config = planning_settings(base, overrides)
    planning = {
        "planner": dataclasses.asdict(planner_config),
        "controller": dataclasses.asdict(controller_config),
    }
    if planner_config.objective == "q" and planner_config.q_run:  # learned on the planned data?
        from ttrl.planning.q_guided import check_q_run_dataset

        check_q_run_dataset(planner_config.q_run or "", inputs.dataset)
    device = resolve_device(cfg.get("device", "auto"))
    data = inputs.train_config.get("data") or cfg.get("data") or {}
    preprocessing = preprocessing_settings(data)  # the value targets' settings, for realised values
    spec = evaluation_spec(inputs.dataset, data.get("source", "auto"))
    n_episodes = int(cfg["n_episodes"])
    settings = evaluation_settings(cfg, inputs, planner_config, device, data, controller_config)
    store = EpisodeStore(out_dir)
    done = store.open(settings, overwrite=bool(cfg.get("overwrite")))
    if on_checked is not None:
        # older callbacks take nothing; plan.py's records the settings planned with
        takes_settings = bool(inspect.signature(on_checked).parameters)
        on_checked(*([planning] if takes_settings else []))
    config = {
        "plan": {k: v for k, v in cfg.items() if k not in planning},  # those used are below
        **planning,
        "checkpoint": str(inputs.source),
        "train_config": inputs.train_config,
        "evaluation": settings,
    }
    video = out_dir / VIDEO_FILE if cfg.get("render") else None

    def collected() -> EpisodeResults:  # every finished episode of these settings, from disk
        return EpisodeResults(
            episodes=[e for _, e in sorted(store.finished().items())],
            env_id=str(spec.env_id),
            dataset=spec.name,
            reference={
                "min": spec.ref_min_score,
                "max": spec.ref_max_score,
                "source": spec.ref_source,
            },
            timing=store.timing(),
            video_path=video if video is not None and video.is_file() else None,
            n_episodes=n_episodes,
        )

    remaining = [i for i in range(n_episodes) if i not in done]
    if not remaining:
        results = collected()
        if not _complete_results_file(out_dir, store.digest):
            write_results(results, out_dir, config)  # a run stopped after its last episode
        print(
            f"nothing planned: {out_dir} already holds all {n_episodes} episodes of these "
            f"settings ({results.summary()}); pass name=<new> to plan them again"
        )
        return results
    if stop["signum"] is None:
        try:
            planned = evaluate(
                inputs.model.to(device),
                inputs.discretizer,
                planner_config,
                spec,
                n_episodes=n_episodes,
                seed=int(cfg["seed"]),
                max_episode_steps=cfg.get("max_episode_steps"),
                video_path=video,
                value_discount=preprocessing["discount"],
                termination_penalty=preprocessing["termination_penalty"],
                progress=bool(cfg.get("progress", True)),
                episodes=remaining,
                on_episode_end=store.save,
                should_stop=lambda: stop["signum"] is not None,
                goal_discretizer=inputs.goal_discretizer,
                observe_goal=bool(preprocessing["observe_goal"]),
                controller_config=controller_config,
            )
            store.add_run(planned.timing)
        except KeyboardInterrupt:  # a second Ctrl-C: stopped mid-step; finished episodes are saved
            stop["signum"] = signal.SIGINT
    results = collected()
    if results.episodes:
        write_results(results, out_dir, config)
    if not results.complete:
        results.stopped_by = stop["signum"]
        hint = (
            resume_hint or f"run `{resume_command(sys.argv, str(cfg['name']), cfg.get('run_dir'))}`"
        )
        print(stop_message(results, out_dir, hint), file=sys.stderr)
        return results
    settings_wandb = wandb_settings(cfg.get("logger") or {}, inputs.train_config, inputs.trainer)
    log_to_wandb(
        results,
        settings_wandb,
        config,
        str(out_dir),
        name=f"plan-{out_dir.name}",
        plot_path=str(out_dir / PREDICTIONS_PLOT),
    )
    print(results.summary())
    return results


def stop_message(results: EpisodeResults, out_dir: Path, hint: str) -> str:
    """The one line after a stop: what was kept, and how to plan the rest."""
    what = "incomplete"  # without a signal: an episode file could not be read back
    if results.stopped_by is not None:
        what = f"stopped by {signal.Signals(results.stopped_by).name}"
    kept, total = len(results.episodes), results.n_episodes or 0
    if not kept:
        return f"{what} before any episode finished: nothing kept; {hint} to plan all {total}"
    return (
        f"{what}: kept {kept} of {total} episodes in {out_dir} (partial results.json); "
        f"{hint} to plan the other {total - kept}"
    )


def _complete_results_file(out_dir: Path, digest: str) -> bool:
    """True when ``out_dir``'s results.json holds the complete results of the settings ``digest``."""
    from ttrl.evaluation.store import settings_digest

    try:
        results = json.loads((out_dir / RESULTS_JSON).read_text())
        recorded = results["config"]["evaluation"]
        return bool(results.get("complete")) and settings_digest(recorded) == digest
    except (OSError, ValueError, KeyError, TypeError):
        return False


def evaluate_training_run(
    train_config: Mapping[str, Any], run_dir: str | os.PathLike, step: int | None = None
) -> EpisodeResults | None:
    """Plan with a finished run's ``last`` checkpoint as its ``evaluate`` section says (``scripts/train.py``).

    Writes ``<run_dir>/plan/<evaluate.name>/`` exactly as ``scripts/plan.py run_dir=<run_dir>``
    would, with the run's own planner and controller settings and W&B project/group, and records
    ``step`` (the checkpoint's optimiser step) with the evaluate, planner and controller settings. Returns None without
    planning when ``evaluate.n_episodes`` is 0 or the folder already holds the complete results of
    the same step and settings (a requeued or re-run job does not plan twice; one that trained on
    plans again, replacing them). An evaluation stopped by SIGTERM/SIGINT keeps its finished
    episodes, which the next start of the run does not plan again, and exits with ``128 + signum``
    as training does.
    """
    evaluate_cfg = train_config["evaluate"]
    out_dir = Path(run_dir) / PLAN_SUBDIR / evaluate_cfg["name"]
    train_config = migrate_controller_settings(train_config)
    evaluated = {
        "step": step,
        "evaluate": evaluate_cfg,
        **{section: train_config.get(section) or {} for section in PLANNING_SECTIONS},
    }
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
        "overwrite": True,  # the run trained on (or its settings changed): the old results go
        "logger": {"mode": None, "project": None, "entity": None, "group": None},
        "after_training": evaluated,
    }
    hint = f"start the training again with run_dir={run_dir} (it is trained: it only plans)"
    results = run_planning(plan_config, out_dir, resume_hint=hint)
    if results.stopped_by is not None:
        sys.exit(stopped_exit_code(results.stopped_by))
    return results


def evaluated_before(out_dir: Path) -> dict[str, Any] | None:
    """What an earlier, complete :func:`evaluate_training_run` in ``out_dir`` recorded (or None)."""
    try:
        results = json.loads((out_dir / RESULTS_JSON).read_text())
        if results.get("complete", True) is not True:  # older results.json were always complete
            return None
        return migrate_controller_settings(results["config"]["plan"]["after_training"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
