#!/usr/bin/env python
"""Train the Q-function Q-guided planning uses: IQL's twin critics and V, on the transformer's dataset.

    python scripts/train_q.py env=hopper-medium seed=1
    python scripts/train_q.py env.name=<antmaze dataset> iql=antmaze       # AntMaze: rewards - 1
    python scripts/train_q.py env=hopper-medium steps=20000 iql.expectile=0.7 logger=disabled

scripts/train_baseline.py algo=iql, with configs/train_q.yaml (train_baseline.yaml with algo: iql):
the same run dir, lock, bit-exact resume, metrics and W&B conventions, no evaluation in the env
unless evaluate.n_episodes > 0. <run_dir>/checkpoints/last.safetensors loads with
ttrl.baselines.iql.IQLModel.load, whose q_value(observations, actions) (min of the twin critics)
and value(observations) the planner calls. The task function returns the final validation loss.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ttrl.cli import exit_on_user_error  # first: before torch loads (see ttrl.cli)

# isort: split
from ttrl.baselines.runner import train_baseline  # also registers train_baseline_schema
from ttrl.config import run_hydra_main
from ttrl.errors import TtrlError
from ttrl.training import hand_over_stop_signal, run_dir_from_hydra


@hydra.main(config_path="../configs", config_name="train_q", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    if cfg.algo != "iql":
        raise TtrlError(
            f"scripts/train_q.py trains IQL's Q-function, not algo={cfg.algo}; "
            f"use scripts/train_baseline.py algo={cfg.algo}"
        )
    metrics = train_baseline(cfg, run_dir_from_hydra(cfg))
    if metrics["signal"] is not None:
        hand_over_stop_signal(metrics["signal"])
    return metrics.get("val/loss")


if __name__ == "__main__":
    run_hydra_main(main)
