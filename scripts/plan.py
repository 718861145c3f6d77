"""Plan with a trained Trajectory Transformer in MuJoCo and score it (see configs/plan.yaml).

python scripts/plan.py run_dir=outputs/train/halfcheetah-medium/<time> n_episodes=10 render=true
python scripts/plan.py checkpoint=<HuggingFace dir> env=halfcheetah-medium planner.horizon=5
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ttrl.cli import exit_on_user_error
from ttrl.config import run_hydra_main  # also registers the schemas and resolvers plan.yaml uses
from ttrl.evaluation import command_line_planner_overrides, register_resolvers, run_planning

register_resolvers()


@hydra.main(config_path="../configs", config_name="plan", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    config = OmegaConf.to_container(cfg, resolve=True)
    overrides = command_line_planner_overrides(config, hydra_cfg.overrides.task)
    run_planning(config, hydra_cfg.runtime.output_dir, planner_overrides=overrides)


if __name__ == "__main__":
    run_hydra_main(main)
