#!/usr/bin/env python
"""Train a Trajectory Transformer on an offline RL dataset.

    python scripts/train.py env=hopper-medium seed=1             # the paper's budget and settings
    python scripts/train.py env=hopper-medium trainer.max_steps=20000 logger=disabled
    python scripts/train.py run_dir=outputs/my-run               # (re)start in a fixed dir: resumes
    python scripts/train.py -m env=hopper-medium,walker2d-medium seed=0,1,2
    python scripts/train.py -m experiment=paper/hopper-medium seed=0,1,2 hydra/launcher=slurm
    torchrun --nproc_per_node=2 scripts/train.py run_dir=outputs/ddp-run

Configs live in configs/ (see configs/train.yaml). Checkpoints: <run_dir>/checkpoints/{last,best}.safetensors.
With evaluate.n_episodes > 0 the final checkpoint is then planned with in MuJoCo, results in
<run_dir>/plan/final/. On Ctrl-C, SIGTERM, SIGUSR1 or SIGUSR2 (e.g. Slurm preemption) the run saves
last.safetensors and exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), after
letting a launcher's handler act (submitit requeues the job on SIGUSR2); starting it again in the
same run dir resumes it, unless a setting that fixes what was trained has changed. A run holds its
run dir's lock: a second one there fails at once. The task function returns the final validation
loss, so a Hydra sweeper (e.g. Optuna) can minimise it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from ttrl.cli import exit_on_user_error
from ttrl.config import run_hydra_main
from ttrl.evaluation import evaluate_training_run
from ttrl.training import hand_over_stop_signal, run_dir_from_hydra, train
from ttrl.training.distributed import is_main_process


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    run_dir = run_dir_from_hydra(cfg)
    metrics = train(cfg, run_dir)
    if metrics["signal"] is not None:
        hand_over_stop_signal(metrics["signal"])
    if is_main_process():
        config = OmegaConf.to_container(cfg, resolve=True)
        evaluate_training_run(config, run_dir, step=metrics["step"])
    return metrics.get("val/loss")


if __name__ == "__main__":
    run_hydra_main(main)
