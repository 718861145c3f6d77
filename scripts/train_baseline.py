#!/usr/bin/env python
"""Train an offline-RL baseline on the transformer's dataset, then evaluate it like a TT run.

    python scripts/train_baseline.py algo=bc env=hopper-medium seed=1 evaluate.n_episodes=10
    python scripts/train_baseline.py algo=bc env=hopper-medium steps=20000 bc.lr=1e-3 logger=disabled
    python scripts/train_baseline.py run_dir=outputs/my-bc                # (re)start in a fixed dir: resumes
    python scripts/train_baseline.py -m algo=bc env=hopper-medium,walker2d-medium seed=0,1,2

Configs: configs/train_baseline.yaml. Run dirs, resume, stop signals (Ctrl-C saves last.safetensors and
exits 130), the run dir's lock, metrics.jsonl and curves.png are those of scripts/train.py; with
evaluate.n_episodes > 0 the final policy is rolled out into <run_dir>/plan/<evaluate.name>/ (results.json
with "agent": <algo>, results.csv), which scripts/report.py tabulates beside the transformer's.
The task function returns the final validation loss, for a Hydra sweeper.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ttrl.cli import exit_on_user_error  # first: before torch loads (see ttrl.cli)

# isort: split
from ttrl.baselines.runner import train_baseline  # also registers train_baseline_schema
from ttrl.config import run_hydra_main
from ttrl.training import hand_over_stop_signal, run_dir_from_hydra


@hydra.main(config_path="../configs", config_name="train_baseline", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train_baseline(cfg, run_dir_from_hydra(cfg))
    if metrics["signal"] is not None:
        hand_over_stop_signal(metrics["signal"])
    return metrics.get("val/loss")


if __name__ == "__main__":
    run_hydra_main(main)
