#!/usr/bin/env python
"""Train a Trajectory Transformer on an offline RL dataset.

    python scripts/train.py env=hopper-medium seed=1             # the paper's budget and settings
    python scripts/train.py env=hopper-medium trainer.max_steps=20000 logger=disabled
    python scripts/train.py run_dir=outputs/my-run               # (re)start in a fixed dir: resumes
    python scripts/train.py -m env=hopper-medium,walker2d-medium seed=0,1,2
    torchrun --nproc_per_node=2 scripts/train.py run_dir=outputs/ddp-run

Configs live in configs/ (see configs/train.yaml). Checkpoints: <run_dir>/checkpoints/{last,best}.pt.
On SIGTERM/SIGUSR1 (e.g. Slurm preemption) the run saves last.pt and exits with 128 + the signal
number (143 for SIGTERM); starting it again in the same run dir resumes it. The task function returns
the final validation loss, so a Hydra sweeper (e.g. Optuna) can minimise it.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ttrl.cli import exit_on_user_error
from ttrl.config import run_hydra_main
from ttrl.training import preempted_exit_code, run_dir_from_hydra, train


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg, run_dir_from_hydra(cfg))
    if metrics["signal"] is not None:
        sys.exit(preempted_exit_code(metrics["signal"]))
    return metrics.get("val/loss")


if __name__ == "__main__":
    run_hydra_main(main)
