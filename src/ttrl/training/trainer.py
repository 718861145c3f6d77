"""The training loop: data -> model -> AdamW steps, with validation, checkpoints, resume and DDP.

A run dir holds ``checkpoints/last.safetensors`` (written every ``save_interval`` steps, at the end and on
SIGTERM/SIGUSR1) and ``checkpoints/best.safetensors`` (lowest validation loss). Starting again in the same run
dir continues from ``last.safetensors`` with the optimiser, scheduler and every RNG restored, so the result is
the same as an uninterrupted run.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, NoReturn

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ttrl.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_path,
    load_bundle,
    resume_checkpoint,
    save_bundle,
)
from ttrl.config import save_hydra_record, validate_train_config
from ttrl.errors import TtrlError
from ttrl.io import remove_stale_temp_files
from ttrl.locking import hold_run_dir
from ttrl.model import TrajectoryTransformer
from ttrl.model.pretrained import cpu_state_dict
from ttrl.naming import run_label
from ttrl.signals import recorded_stop_signals, stop_exit_code
from ttrl.training.curves import CURVES_FILE, plot_training_curves
from ttrl.training.distributed import (
    DistributedContext,
    any_rank,
    gather_to_all,
    init_distributed,
    launched_by_torchrun,
    shutdown_distributed,
)
from ttrl.training.logger import METRICS_FILE, create_logger
from ttrl.training.metrics import evaluate, goal_kwargs
from ttrl.training.optim import build_optimizer, build_scheduler, schedule_from_epochs
from ttrl.training.pipeline import (
    TrainingData,
    build_model_config,
    describe_reconstruction_error,
    fit_data,
    tokenize,
)
from ttrl.training.state import (
    capture_rng,
    check_resumable,
    check_resume_config,
    restore_rng,
    seed_everything,
    stream_seeds,
)

log = logging.getLogger(__name__)

# Slurm sends SIGTERM on preemption, --signal (often SIGUSR1) before the time limit; submitit's
# Slurm launcher asks for SIGUSR2 and requeues the job from its own handler (see hand_over_stop_signal).
# Ctrl-C (SIGINT) saves too; a second Ctrl-C stops at once.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
DDP_STOP_CHECK_STEPS = 10  # under DDP, ranks agree on a stop signal / time limit this often
PAPER_SAMPLES = 1e6  # n_epochs = 1e6 / n_windows * n_epochs_ref


preempted_exit_code = stop_exit_code  # 128 + signum, as a killed job would report


def hand_over_stop_signal(signum: int) -> NoReturn:
    """Exit after training stopped on ``signum`` (last.safetensors is saved), letting a launcher act first.

    Training catches the stop signals itself so it can save; the handler that was installed before
    (submitit's, which requeues the job on SIGUSR2) is then called as if the signal had just
    arrived. Without such a handler, or when it returns, exit with ``128 + signum``.
    """
    handler = signal.getsignal(signum)
    # Python's own SIGINT handler would raise KeyboardInterrupt: a traceback after a clean save.
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signum, None)
    sys.exit(preempted_exit_code(signum))


def run_dir_from_hydra(cfg: DictConfig) -> Path:
    """The run dir of a Hydra job; under torchrun it must be pinned with ``run_dir=``."""
    from hydra.core.hydra_config import HydraConfig

    if launched_by_torchrun() and cfg.run_dir is None:
        raise TtrlError(
            "under torchrun every rank would pick its own timestamped run dir; "
            "pass run_dir=<path> (the same for all ranks)"
        )
    return Path(HydraConfig.get().runtime.output_dir)


def stop_signals() -> AbstractContextManager[dict[str, int | None]]:
    """Record the stop signals in ``state["signum"]`` instead of dying, so the step can finish."""
    return recorded_stop_signals(
        STOP_SIGNALS,
        on_interrupt="interrupted: saving the checkpoint (Ctrl-C again to stop at once)",
    )


def step_budget(cfg: DictConfig, n_windows: int, global_batch: int) -> tuple[int, float]:
    """(total optimiser steps, steps per epoch): max_steps > epochs > the paper's formula."""
    steps_per_epoch = n_windows / global_batch
    trainer = cfg.trainer
    if trainer.max_steps is not None:
        return int(trainer.max_steps), steps_per_epoch
    epochs = trainer.epochs
    if epochs is None:
        epochs = PAPER_SAMPLES / n_windows * cfg.env.n_epochs_ref
    return max(1, math.ceil(epochs * steps_per_epoch)), steps_per_epoch


def autocast_context(device: torch.device, amp: bool) -> AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; nothing on CPU."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def train(
    cfg: DictConfig, run_dir: str | os.PathLike, on_step: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Train a Trajectory Transformer as ``cfg`` says, writing checkpoints under ``run_dir``.

    Resumes from ``<run_dir>/checkpoints/last.safetensors`` when it exists, after checking that
    the settings which give it its meaning are unchanged. The run holds ``<run_dir>/.lock``
    throughout, so a second run in the same dir fails at once. Inside Hydra, the composed config
    goes to ``<run_dir>/.hydra/`` only once those checks passed. ``on_step(step)`` is called after
    every optimiser step (for tests and tools). Returns the final metrics, including ``val/loss``,
    ``step`` and ``signal`` (the stop signal's number if one ended the run early, else None).
    """
    validate_train_config(cfg)
    run_dir = Path(run_dir)
    ctx = init_distributed(cfg.device)
    try:
        with hold_run_dir(run_dir) if ctx.is_main else nullcontext():
            if ctx.is_main:
                remove_stale_temp_files(run_dir / CHECKPOINT_DIR)
            bundle = load_resume_bundle(cfg, run_dir)
            if ctx.is_main:
                save_hydra_record(run_dir, cfg)
            with stop_signals() as stop:
                return Trainer(cfg, run_dir, ctx, stop, on_step, bundle).run()
    finally:
        shutdown_distributed(ctx)


def load_resume_bundle(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint ``run_dir`` resumes from (None for a new run), checked against ``cfg``."""
    path = resume_checkpoint(run_dir)
    if path is None:
        return None
    bundle = load_bundle(path)
    check_resume_config(bundle, OmegaConf.to_container(cfg, resolve=True), path)
    return bundle


class Trainer:
    """One training run; build it with :func:`train`."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        ctx: DistributedContext,
        stop: dict[str, int | None],
        on_step: Callable[[int], None] | None,
        bundle: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.ctx, self.stop, self.on_step = cfg, run_dir, ctx, stop, on_step
        self.config = OmegaConf.to_container(cfg, resolve=True)
        self.device = ctx.device
        tcfg = cfg.trainer
        if tcfg.num_threads:
            torch.set_num_threads(tcfg.num_threads)
        if tcfg.amp and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.autocast = autocast_context(self.device, tcfg.amp)

        # a resumed run rebuilds its saved discretisers instead of fitting them
        saved = bundle if bundle is not None else {}
        data = fit_data(
            cfg,
            discretizer_state=saved.get("discretizer"),
            goal_discretizer_state=saved.get("goal_discretizer"),
        )
        trajectories = data.trajectories
        self.model_config = build_model_config(
            cfg.model,
            trajectories.observation_dim,
            trajectories.action_dim,
            cfg.discretizer.n_bins,
            cfg.data.sequence_length,
            goal_dim=0 if data.goal_discretizer is None else data.goal_discretizer.transition_dim,
        )
        if bundle is not None:
            check_resumable(bundle, self.model_config.to_dict(), resume_checkpoint(run_dir))
        self.data: TrainingData = tokenize(cfg, data, seed=cfg.seed)

        dropout_seed, sampling_seed = stream_seeds(cfg.seed, ctx.rank)
        seed_everything(cfg.seed)  # the same initial weights on every rank
        self.model = TrajectoryTransformer(self.model_config).to(self.device)
        if tcfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        seed_everything(dropout_seed)
        self.train_set = self.data.train.to(self.device)
        self.val_set = self.data.val.to(self.device) if self.data.val is not None else None
        self.sampler = torch.Generator(device=self.device).manual_seed(sampling_seed)

        self.optimizer = build_optimizer(
            self.model,
            tcfg.learning_rate,
            tuple(tcfg.betas),
            tcfg.weight_decay,
            fused=self.device.type == "cuda",
        )
        global_batch = tcfg.batch_size * ctx.world_size
        self.total_steps, self.steps_per_epoch = step_budget(cfg, len(self.train_set), global_batch)
        schedule = schedule_from_epochs(
            self.steps_per_epoch,
            tcfg.warmup_epochs,
            tcfg.decay_epochs,
            tcfg.min_lr_ratio,
            enabled=tcfg.lr_decay,
        )
        self.scheduler = build_scheduler(self.optimizer, schedule)
        self.step, self.best_val_loss, wandb_id = 0, math.inf, None
        if bundle is not None:
            wandb_id = self.restore(bundle)
        self.forward_model = self.wrap_model()
        self.logger = create_logger(self.config, run_dir, wandb_id, ctx.is_main, self.step)

    # ------------------------------------------------------------------------------ set-up
    def restore(self, bundle: dict[str, Any]) -> str | None:
        """Load weights, optimiser, scheduler, step and RNG states; returns the W&B run id."""
        state = bundle["trainer"]
        self.model.load_state_dict(bundle["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])  # also the saved LRSchedule's fields
        self.step = int(state["step"])
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        rng = state.get("rng") or []
        if len(rng) == self.ctx.world_size:
            restore_rng(rng[self.ctx.rank], self.sampler)
        else:
            warnings.warn(
                f"checkpoint holds RNG states of {len(rng)} processes but {self.ctx.world_size} run "
                "now; batches and dropout will differ from an uninterrupted run",
                stacklevel=2,
            )
        if self.ctx.is_main:
            log.info("resumed from step %d of %s", self.step, self.run_dir)
        return state.get("wandb_run_id")

    def wrap_model(self) -> torch.nn.Module:
        """DDP when several processes run, then torch.compile if asked (weights stay in self.model)."""
        module: torch.nn.Module = self.model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=device_ids)
        if self.cfg.trainer.compile:
            module = torch.compile(module)
        return module

    # ------------------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train until the step budget, the time limit or a stop signal; returns final metrics."""
        try:
            self.announce()
            metrics = self.loop()
            if self.ctx.is_main:
                self.plot_curves()
            if metrics["signal"] is None and self.ctx.is_main:
                self.upload_final_checkpoint()
            return metrics
        finally:
            self.logger.finish()

    def plot_curves(self) -> None:
        """Draw ``curves.png`` from the run's ``metrics.jsonl`` (rank 0)."""
        title = f"{self.data.dataset_name} seed {self.cfg.seed}: step {self.step}"
        plot_training_curves(self.run_dir / METRICS_FILE, self.run_dir / CURVES_FILE, title)

    def announce(self) -> None:
        """Log what is about to be trained (rank 0)."""
        if not self.ctx.is_main:
            return
        data = self.data
        if data.reconstruction_error is not None:
            line = describe_reconstruction_error(
                data.reconstruction_error, data.observation_dim, data.action_dim
            )
            log.info(line)
            errors = {
                f"data/reconstruction_error_dim{i}": float(e)
                for i, e in enumerate(data.reconstruction_error)
            }
            self.logger.log(errors, self.step)
        if data.goal_dim:
            log.info(
                "goal-conditioned: data.goal=%s, %d goal tokens before every window",
                self.cfg.data.goal,
                data.goal_dim,
            )
        log.info(
            "training %s: %d train windows, %s val windows, %d parameters, %d steps of batch %d x %d "
            "processes on %s, run dir %s",
            data.dataset_name,
            len(self.train_set),
            len(self.val_set) if self.val_set is not None else 0,
            self.model.num_parameters(),
            self.total_steps,
            self.cfg.trainer.batch_size,
            self.ctx.world_size,
            self.device,
            self.run_dir,
        )

    def loop(self) -> dict[str, Any]:
        tcfg = self.cfg.trainer
        started = time.monotonic()
        last_log_time, last_log_step = started, self.step
        metrics: dict[str, Any] = {}
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.ctx.is_main and tcfg.progress),
        )
        stopped_by: int | None = None
        time_up = False
        while self.step < self.total_steps:
            step_stats = self.train_step()
            self.step += 1
            bar.update(1)
            if self.step % tcfg.log_interval == 0:
                now = time.monotonic()
                tokens = step_stats.pop("tokens") * (self.step - last_log_step)
                logged = {f"train/{k}": float(v) for k, v in step_stats.items()}  # syncs the GPU
                logged["train/epoch"] = self.step / self.steps_per_epoch
                logged["perf/tokens_per_s"] = tokens / max(now - last_log_time, 1e-9)
                last_log_time, last_log_step = now, self.step
                self.logger.log(logged, self.step)
                metrics.update(logged)
                bar.set_postfix(
                    loss=f"{logged['train/loss']:.3f}", tok_s=f"{logged['perf/tokens_per_s']:,.0f}"
                )
            if self.step % tcfg.eval_interval == 0 or self.step == self.total_steps:
                metrics.update(self.validate())
                self.report(metrics)
            if self.step % tcfg.save_interval == 0:
                self.save("last")
            if self.on_step is not None:
                self.on_step(self.step)
            time_up = tcfg.max_minutes is not None and time.monotonic() - started > (
                60 * tcfg.max_minutes
            )
            # Under DDP agreeing on stopping is a collective that syncs the GPU: do it every few steps.
            agree_now = not self.ctx.enabled or self.step % DDP_STOP_CHECK_STEPS == 0
            if agree_now and any_rank(self.stop["signum"] is not None or time_up, self.ctx):
                stopped_by = self.stop["signum"]
                break
        bar.close()
        evaluated_now = self.step % tcfg.eval_interval == 0 or self.step == self.total_steps
        # After a stop signal time is short: save at once (validating would also change best.safetensors).
        if stopped_by is None and (not evaluated_now or "val/loss" not in metrics):
            metrics.update(self.validate())
        self.save("last")
        if self.val_set is None:
            self.save("best")  # nothing to select by: the final weights are the best we know
        if stopped_by is not None and self.ctx.is_main:
            log.warning(
                "received %s at step %d: saved %s; run again with run_dir=%s to resume",
                signal.Signals(stopped_by).name,
                self.step,
                checkpoint_path(self.run_dir, "last"),
                self.run_dir,
            )
        elif time_up and self.ctx.is_main:
            log.warning("time limit of %s minutes reached at step %d", tcfg.max_minutes, self.step)
        if self.ctx.is_main:
            log.info(
                "step %d: val/loss %s, best %s; checkpoints in %s",
                self.step,
                f"{metrics['val/loss']:.4f}" if "val/loss" in metrics else "n/a",
                f"{self.best_val_loss:.4f}" if math.isfinite(self.best_val_loss) else "n/a",
                checkpoint_path(self.run_dir, "last").parent,
            )
        return {
            **metrics,
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "signal": stopped_by,
            "run_dir": str(self.run_dir),
        }

    def report(self, metrics: dict[str, Any]) -> None:
        """One log line with the latest losses and throughput (rank 0), for logs without a bar."""
        if self.ctx.is_main:
            keys = ("train/loss", "val/loss", "train/lr", "perf/tokens_per_s")
            shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
            log.info("step %d/%d: %s", self.step, self.total_steps, shown)

    def train_step(self) -> dict[str, Any]:
        """One optimiser step on a fresh batch; returns loss, grad norm, LR and tokens, unsynced."""
        tcfg = self.cfg.trainer
        # goal windows come as (x, y, mask, goals), the goals drawn after the windows
        x, y, mask, *goals = self.train_set.sample(tcfg.batch_size, generator=self.sampler)
        with self.autocast:
            loss = self.forward_model(x, targets=y, attention_mask=mask, **goal_kwargs(goals)).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tcfg.grad_clip)
        else:
            grad_norm = torch.zeros(())
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        return {
            "loss": loss.detach(),
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": x.numel() * self.ctx.world_size,
        }

    def validate(self) -> dict[str, float]:
        """Validation metrics on rank 0 (logged); saves best.safetensors when the loss improves."""
        if self.val_set is None or not self.ctx.is_main:
            return {}
        n_batches = self.cfg.trainer.val_batches
        batches = self.val_set.iter_windows(self.cfg.trainer.batch_size)
        limited = itertools.islice(batches, n_batches or None)
        metrics = evaluate(
            self.model,
            limited,
            self.data.observation_dim,
            self.data.action_dim,
            autocast=self.autocast,
        )
        if metrics and metrics["val/loss"] < self.best_val_loss:
            self.best_val_loss = metrics["val/loss"]
            self.save("best", gather=False)
        self.logger.log(metrics, self.step)
        return metrics

    # ------------------------------------------------------------------------------ checkpoints
    def save(self, which: str, gather: bool = True) -> None:
        """Write ``checkpoints/<which>.safetensors`` from rank 0, with every rank's RNG states if ``gather``.

        With ``gather`` every rank must call this (it is a collective); best.safetensors is saved by rank 0
        alone and holds only its RNG state (resuming always starts from last.safetensors).
        """
        rng = capture_rng(self.sampler)
        rng_states = gather_to_all(rng, self.ctx) if gather else [rng]
        if not self.ctx.is_main:
            return
        save_bundle(
            checkpoint_path(self.run_dir, which),
            model_config=self.model_config.to_dict(),
            model=cpu_state_dict(self.model),
            discretizer=self.data.discretizer.state_dict(),
            **self.goal_parts(),
            config=self.config,
            trainer={
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "total_steps": self.total_steps,
                "rng": rng_states,
                "wandb_run_id": self.logger.run_id,
                "best_val_loss": self.best_val_loss,
                "world_size": self.ctx.world_size,
            },
        )

    def goal_parts(self) -> dict[str, Any]:
        """``{"goal_discretizer": state}`` for a goal-conditioned run; {} (the bundle as before) else."""
        if self.data.goal_discretizer is None:
            return {}
        return {"goal_discretizer": self.data.goal_discretizer.state_dict()}

    def upload_final_checkpoint(self) -> None:
        """Attach the best checkpoint to the W&B run (online runs only)."""
        best = checkpoint_path(self.run_dir, "best")
        name = f"{run_label(self.data.dataset_name)}-s{self.cfg.seed}"
        self.logger.log_artifact(best, name=name)


__all__ = [
    "Trainer",
    "hand_over_stop_signal",
    "preempted_exit_code",
    "run_dir_from_hydra",
    "train",
]
