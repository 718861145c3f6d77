"""The body of ``scripts/train_baseline.py``: train a baseline as ``scripts/train.py`` trains the
transformer, then evaluate it as ``scripts/plan.py`` evaluates a run.

The run dir conventions are training's: ``<run_dir>/.lock`` is held throughout (a second run
there fails at once), ``checkpoints/last.safetensors`` is written every ``save_interval`` steps, at
the end and on a stop signal, ``metrics.jsonl`` and ``curves.png`` lie beside it, ``.hydra/`` is
written once the lock and resume checks passed, and starting again in the same run dir resumes
with the optimiser, the minibatch generator and the RNGs restored, so the weights end bit for bit
as an uninterrupted run's. The checkpoint is also a plain baseline bundle: ``BCPolicy.load`` (or
``IQLModel.load``, ``GCBCPolicy.load``, ...) reads it. After training, ``evaluate.n_episodes``
episodes go to ``<run_dir>/plan/<evaluate.name>/`` (results.json with ``"agent": <algo>``,
results.csv), which ``scripts/report.py`` tabulates.

With ``data.goal`` (a goal-conditioned algorithm, ``algo=gcbc``) every minibatch's rows get
hindsight goals as the transformer's windows do: the rows are drawn from the minibatch generator
and then, for ``"future"``, their goals from the same generator
(:func:`~ttrl.baselines.data.with_hindsight_goals`), as ``GoalTokenDataset.sample`` draws both from
its one generator; that generator is checkpointed, so a resumed run draws the same goals. The
validation rows keep fixed goals. A goal-conditioned policy is evaluated toward the env's
desired goals in the episodic maze env, and results.json reports its success rate.

An algorithm that trains nothing (``algo=waypoint``, ``steps=0``) takes no step and writes no
validation loss; its run dir holds its bundle (``WaypointModel.load``) and its evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ttrl.baselines.algorithms import BaselineAlgorithm
from ttrl.baselines.config import algorithm_config, fixed_keys
from ttrl.baselines.data import (
    BaselineData,
    TransitionBatch,
    load_baseline_data,
    with_hindsight_goals,
)
from ttrl.baselines.evaluate import EpisodePolicies, evaluate_policy
from ttrl.baselines.mlp import MinibatchStepper, check_finite
from ttrl.checkpoint import CHECKPOINT_DIR, checkpoint_path, load_bundle, resume_checkpoint
from ttrl.config import save_hydra_record
from ttrl.devices import resolve_device
from ttrl.errors import TtrlError
from ttrl.evaluation.loading import evaluation_spec
from ttrl.evaluation.report import RESULTS_CSV, RESULTS_JSON, results_dict, write_csv
from ttrl.evaluation.rollout import EpisodeResults
from ttrl.evaluation.runner import PLAN_SUBDIR, VIDEO_FILE, evaluated_before
from ttrl.io import atomic_write_json, remove_stale_temp_files
from ttrl.locking import hold_plan_dir, hold_run_dir
from ttrl.naming import run_label
from ttrl.training.curves import CURVES_FILE, plot_training_curves
from ttrl.training.logger import METRICS_FILE, NullLogger, create_logger
from ttrl.training.state import (
    capture_rng,
    changed_fixed_settings,
    restore_rng,
    seed_everything,
)
from ttrl.training.trainer import stop_signals

log = logging.getLogger(__name__)

VAL_CHUNK = 4096  # validation rows per forward pass


def train_baseline(
    cfg: DictConfig, run_dir: str | Path, on_step: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Train the baseline ``cfg.algo`` as ``cfg`` says in ``run_dir`` (resuming it), then evaluate it.

    ``cfg`` is the composed ``configs/train_baseline.yaml``. ``on_step(step)`` is called after
    every optimiser step (for tests and tools). Returns the final metrics, with ``step``,
    ``signal`` (the stop signal's number if one ended training or the evaluation early, else
    None) and ``results`` (the :class:`~ttrl.evaluation.EpisodeResults`, or None when nothing was
    evaluated).
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    algorithm, algo_config = algorithm_config(config)
    run_dir = Path(run_dir)
    with hold_run_dir(run_dir):
        remove_stale_temp_files(run_dir / CHECKPOINT_DIR)
        bundle = resume_bundle(config, run_dir)
        save_hydra_record(run_dir, cfg)  # only now: a refused run rewrites nothing
        with stop_signals() as stop:
            run = BaselineRun(config, algorithm, algo_config, run_dir, stop, on_step, bundle)
            try:
                metrics = run.train()
                metrics["results"] = None
                if metrics["signal"] is None:
                    metrics["results"] = run.evaluate()
                    if metrics["results"] is not None:
                        metrics["signal"] = metrics["results"].stopped_by
            finally:
                run.logger.finish()
    return metrics


def resume_bundle(config: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint ``run_dir`` resumes from (None for a new run), checked against ``config``."""
    path = resume_checkpoint(run_dir)
    if path is None:
        return None
    bundle = load_bundle(path)
    if "baseline" not in bundle or not isinstance(bundle.get("trainer"), dict):
        raise TtrlError(
            f"{path} is not a baseline's training checkpoint (scripts/train_baseline.py writes "
            f"those); pass a new run_dir"
        )
    saved = bundle.get("config") or {}
    fixed = (*fixed_keys(config), *([saved["algo"]] if saved.get("algo") else []))
    changed = changed_fixed_settings(saved, config, fixed)
    if changed:
        raise TtrlError(
            f"cannot resume {path}: it was trained with other settings ({'; '.join(changed)}); "
            f"these cannot change in a resumed run (the budget, intervals, logging, device and "
            f"evaluation can): run again with the checkpoint's values, or pass a new run_dir"
        )
    return bundle


def logger_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the W&B run named ``<algo>-<dataset>-s<seed>`` unless ``logger.name`` is set."""
    name = config["logger"]["name"]
    if name is None:
        name = f"{config['algo']}-{run_label(config['env']['name'])}-s{config['seed']}"
    return {**config, "logger": {**config["logger"], "name": name}}


class BaselineRun:
    """One baseline training run and its evaluation; build it with :func:`train_baseline`."""

    def __init__(
        self,
        config: dict[str, Any],
        algorithm: type[BaselineAlgorithm],
        algo_config: Any,
        run_dir: Path,
        stop: dict[str, int | None],
        on_step: Callable[[int], None] | None = None,
        bundle: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.algo_config, self.run_dir = config, algo_config, run_dir
        self.algorithm = algorithm
        self.stop, self.on_step = stop, on_step
        self.logger: NullLogger = NullLogger()  # replaced below; finish() is safe before that
        if config["num_threads"]:
            torch.set_num_threads(config["num_threads"])
        self.device = resolve_device(config["device"])
        seed_everything(config["seed"])
        data_cfg = config["data"]
        self.data: BaselineData = load_baseline_data(
            config["env"]["name"],
            data_cfg["source"],
            data_cfg["val_fraction"],
            config["seed"],
            data_cfg["goal"],
            data_cfg["observe_goal"],
        )
        self.agent = algorithm.build(self.data, algo_config)
        self.model = self.agent.model.to(self.device)
        self.train_set = self.data.train.to(self.device)
        self.val_set = self.data.val.to(self.device) if self.data.val is not None else None
        # None for an algorithm that trains nothing (waypoint): no steps, no validation loss
        self.stepper: MinibatchStepper | None = None
        if algorithm.trains:
            self.stepper = MinibatchStepper(
                lambda indices: self.agent.loss(self.minibatch(indices)),
                [p for p in self.model.parameters() if p.requires_grad],  # not IQL's targets
                n_samples=len(self.train_set),
                batch_size=algo_config.batch_size,
                lr=algo_config.lr,
                weight_decay=algo_config.weight_decay,
                seed=config["seed"],
            )
        # e.g. IQL's target update; what it changes is in the model's state dict (resume)
        self.after_step: Callable[[], None] | None = getattr(self.agent, "after_step", None)
        self.total_steps = int(algo_config.steps)
        # the train/loss mean since the last log, kept in the checkpoint so a resumed run logs it
        self.running, self.count = torch.zeros((), device=self.device), 0
        wandb_id = self.restore(bundle) if bundle is not None else None
        self.logger = create_logger(
            logger_config(config), run_dir, wandb_id, is_main=True, resume_step=self.step
        )

    @property
    def step(self) -> int:
        """Optimiser steps taken so far."""
        return self.stepper.steps if self.stepper is not None else 0

    def minibatch(self, indices: torch.Tensor) -> TransitionBatch:
        """The training rows ``indices``; with ``data.goal``, each with a hindsight goal, drawn
        (``"future"``) from the minibatch generator right after the rows (see the module docstring)."""
        batch = self.train_set.take(indices)
        if self.data.goal is None:
            return batch
        assert self.stepper is not None  # only a training algorithm draws minibatches
        return with_hindsight_goals(batch, self.train_set, self.data.goal, self.stepper.generator)

    @property
    def name(self) -> str:
        return self.config["algo"]

    # ------------------------------------------------------------------------------ resume
    def restore(self, bundle: dict[str, Any]) -> str | None:
        """Load weights, optimiser, generator, RNGs and the running loss; returns the W&B run id."""
        state = bundle["trainer"]
        try:
            self.model.load_state_dict(bundle["model"])
        except RuntimeError as err:
            raise TtrlError(
                f"{resume_checkpoint(self.run_dir)} does not fit this dataset's dims "
                f"({str(err).splitlines()[0][:120]}); use the dataset it was trained on or a "
                f"new run_dir"
            ) from err
        if self.stepper is not None:
            self.stepper.load_state_dict(state["stepper"])
            restore_rng(state["rng"], self.stepper.generator)
        self.running = state["running_loss"].to(self.device)
        self.count = int(state["running_count"])
        log.info("resumed from step %d of %s", self.step, self.run_dir)
        return state.get("wandb_run_id")

    def save(self) -> Path:
        """Write ``checkpoints/last.safetensors``: the model bundle plus config and trainer state."""
        return self.model.save(
            checkpoint_path(self.run_dir, "last"),
            config=self.config,
            trainer={
                "algo": self.name,
                "step": self.step,
                "total_steps": self.total_steps,
                "stepper": self.stepper.state_dict() if self.stepper is not None else None,
                "rng": capture_rng(self.stepper.generator) if self.stepper is not None else None,
                "running_loss": self.running,
                "running_count": self.count,
                "wandb_run_id": self.logger.run_id,
            },
        )

    # ------------------------------------------------------------------------------ training
    def announce(self) -> None:
        """Log what is about to be trained."""
        data = self.data
        if self.stepper is None:
            log.info(
                "%s trains nothing: evaluating it on %s, run dir %s",
                self.name,
                data.dataset,
                self.run_dir,
            )
            return
        n_val = len(self.val_set) if self.val_set is not None else 0
        log.info(
            "training %s on %s: %d train and %d validation transitions (%d episodes held out), "
            "%d parameters, %d steps of batch %d on %s, run dir %s",
            self.name,
            data.dataset,
            len(self.train_set),
            n_val,
            len(data.val_episodes),
            sum(p.numel() for p in self.model.parameters()),
            self.total_steps,
            self.algo_config.batch_size,
            self.device,
            self.run_dir,
        )

    def train(self) -> dict[str, Any]:
        """Train until the step budget or a stop signal; returns the final metrics."""
        config = self.config
        self.announce()
        metrics: dict[str, Any] = {}
        started_at = self.step
        last_time, last_step = time.monotonic(), self.step
        stopped_by: int | None = None
        bar = tqdm(
            total=self.total_steps,
            initial=min(self.step, self.total_steps),
            unit="step",
            dynamic_ncols=True,
            disable=not config["progress"],
        )
        while self.step < self.total_steps:
            self.running += self.stepper.step()
            if self.after_step is not None:
                self.after_step()
            self.count += 1
            step = self.step
            bar.update(1)
            if step % config["log_interval"] == 0 or step == self.total_steps:
                now = time.monotonic()
                logged = {
                    "train/loss": self.running.item() / self.count,  # syncs the GPU
                    "perf/steps_per_s": (step - last_step) / max(now - last_time, 1e-9),
                }
                check_finite(logged["train/loss"], self.name, step, self.algo_config.lr)
                self.running, self.count = torch.zeros((), device=self.device), 0
                last_time, last_step = now, step
                self.logger.log(logged, step)
                metrics.update(logged)
                bar.set_postfix(loss=f"{logged['train/loss']:.4g}")
            if step % config["eval_interval"] == 0 or step == self.total_steps:
                metrics.update(self.validate())
            if step % config["save_interval"] == 0:
                self.save()
            if self.on_step is not None:
                self.on_step(step)
            if self.stop["signum"] is not None:
                stopped_by = self.stop["signum"]
                break
        bar.close()
        if stopped_by is None and "val/loss" not in metrics:
            # nothing left to train (a finished run started again): report, do not log twice
            metrics.update(self.validate(record=self.step > started_at))
        self.save()
        plot_training_curves(
            self.run_dir / METRICS_FILE,
            self.run_dir / CURVES_FILE,
            f"{self.name} {self.data.dataset} seed {config['seed']}: step {self.step}",
        )
        if stopped_by is not None:
            log.warning(
                "received %s at step %d: saved %s; run again with run_dir=%s to resume",
                signal.Signals(stopped_by).name,
                self.step,
                checkpoint_path(self.run_dir, "last"),
                self.run_dir,
            )
        return {**metrics, "step": self.step, "signal": stopped_by, "run_dir": str(self.run_dir)}

    @torch.no_grad()
    def validate(self, record: bool = True) -> dict[str, float]:
        """The mean loss over every held-out transition (``{}`` without a validation split, or for
        an algorithm that trains nothing)."""
        if self.val_set is None or self.stepper is None:
            return {}
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for chunk in self.val_set.chunks(VAL_CHUNK):
            total += self.agent.loss(chunk).double() * len(chunk)
        self.model.train()
        metrics = {"val/loss": total.item() / len(self.val_set)}
        if record:
            self.logger.log(metrics, self.step)
        return metrics

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> EpisodeResults | None:
        """Roll the trained policy out as ``evaluate`` says, into ``<run_dir>/plan/<name>/``.

        None without evaluating when ``evaluate.n_episodes`` is 0, or when the folder holds the
        complete results of this step and these settings (a finished run started again). Stopped
        by a signal, it keeps nothing, says so in one line, and returns the partial results with
        ``stopped_by`` set.
        """
        settings = self.config["evaluate"]
        out_dir = self.run_dir / PLAN_SUBDIR / settings["name"]
        evaluated = {"step": self.step, "evaluate": settings}
        if settings["n_episodes"] <= 0 or evaluated_before(out_dir) == evaluated:
            return None
        with hold_plan_dir(out_dir):
            spec = evaluation_spec(self.data.dataset, self.config["data"]["source"])
            results = evaluate_policy(
                self.policy(),
                spec,
                self.data.observation_dim,
                self.data.action_dim,
                goal_dim=self.model.goal_dim if self.algorithm.goal_conditioned else 0,
                n_episodes=settings["n_episodes"],
                seed=settings["seed"],
                max_episode_steps=settings["max_episode_steps"],
                video_path=out_dir / VIDEO_FILE if settings["render"] else None,
                progress=self.config["progress"],
                should_stop=lambda: self.stop["signum"] is not None,
                observe_goal=self.config["data"]["observe_goal"],
            )
            if not results.complete:
                results.stopped_by = self.stop["signum"]
                print(
                    f"evaluation stopped by {signal.Signals(results.stopped_by).name} after "
                    f"{len(results.episodes)} of {settings['n_episodes']} episodes: nothing kept; "
                    f"start the training again with run_dir={self.run_dir} (it is trained: it "
                    f"only evaluates)",
                    file=sys.stderr,
                )
                return results
            self.write_results(results, out_dir, evaluated)
        aggregates = results.aggregates
        self.logger.log(
            {f"eval/{k}": v for k, v in aggregates.items() if isinstance(v, (int, float))},
            self.step,
        )
        print(f"{self.name}: {results.summary()}")
        return results

    def policy(self) -> Callable[..., Any] | EpisodePolicies:
        """What the evaluation steps: the agent's batched ``act``, or one policy per episode for an
        agent with state through an episode (``episode_policy``, the waypoint controller)."""
        episode_policy = getattr(self.agent, "episode_policy", None)
        return EpisodePolicies(episode_policy) if episode_policy is not None else self.agent.act

    def write_results(
        self, results: EpisodeResults, out_dir: Path, evaluated: dict[str, Any]
    ) -> None:
        """results.json and results.csv in ``plan.py``'s layout, with ``"agent": <algo>``."""
        from ttrl import __version__

        config = {
            "plan": {**self.config["evaluate"], "after_training": evaluated},
            "checkpoint": str(checkpoint_path(self.run_dir, "last")),
            "train_config": self.config,
            "evaluation": {
                "agent": self.name,
                "checkpoint_step": self.step,
                "dataset": self.data.dataset,
                "algo_config": dataclasses.asdict(self.algo_config),
                "device": self.device.type,
                "ttrl_version": __version__,
            },
        }
        atomic_write_json(
            out_dir / RESULTS_JSON, {"agent": self.name, **results_dict(results, config)}
        )
        write_csv(out_dir / RESULTS_CSV, [e.row() for e in results.episodes])
