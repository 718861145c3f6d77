"""Train a SAC behaviour policy for the D4RL-recipe datasets; re-running the same command resumes it.

python scripts/train_behavior.py env=hopper total_steps=200000 stop_at_medium=true export_dir=policies
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ttrl.cli import exit_on_user_error
from ttrl.making.behavior import BehaviorTrainingConfig, train_behavior

# configs/env/ is the training config group (one file per dataset), so this script reads its own YAML
# through the ConfigStore: here `env=hopper` is a plain value, not a group choice.
CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "train_behavior.yaml"
ConfigStore.instance().store(name="train_behavior", node=OmegaConf.load(CONFIG_FILE))


@hydra.main(config_path=None, config_name="train_behavior", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True)
    config = BehaviorTrainingConfig(**options)
    state = train_behavior(config, HydraConfig.get().runtime.output_dir)
    print(f"done: {state['steps']} steps, medium point at step {state['medium_step']}")


if __name__ == "__main__":
    main()
