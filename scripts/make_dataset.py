"""Make a dataset locally and write it as the Minari dataset ``ttrl/<env>/<level>-v0``.

python scripts/make_dataset.py env=halfcheetah-random n_steps=100000 seed=0
python scripts/make_dataset.py env=pointmaze-umaze n_steps=1000000   # Minari's D4RL/pointmaze recipe
python scripts/make_dataset.py env=antmaze-umaze n_steps=5000        # AntMaze test data (structure only)

D4RL-style names go to :func:`ttrl.making.recipes.make_level_dataset`, ``pointmaze-<maze>[-dense]``
names to :func:`ttrl.making.maze.make_maze_dataset`, ``antmaze-<dataset>`` names to
:func:`ttrl.making.antmaze.make_antmaze_dataset` (random actions: a structural test dataset, whose
scores mean nothing; real AntMaze data is ``minari download D4RL/antmaze/<dataset>-v1``).

A second run of the same dataset while one is making it fails at once and names the first; a disk
too small for the dataset is refused before collecting. Errors are one ``error:`` line, exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ttrl.cli import exit_on_user_error
from ttrl.config import run_hydra_main
from ttrl.data.registry import is_antmaze_name, is_maze_name

# configs/env/ is the training config group, so this script reads its own YAML through the
# ConfigStore: here `env=halfcheetah-random` is a plain value, not a group choice. The YAML's
# defaults list merges it onto the `make_dataset_schema` dataclass (ttrl.config.register_configs).
CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "make_dataset.yaml"
ConfigStore.instance().store(name="make_dataset", node=OmegaConf.load(CONFIG_FILE))


@hydra.main(config_path=None, config_name="make_dataset", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if is_maze_name(cfg.env):
        from ttrl.making.maze import make_maze_dataset as make
    elif is_antmaze_name(cfg.env):
        from ttrl.making.antmaze import make_antmaze_dataset as make
    else:
        from ttrl.making.recipes import make_level_dataset as make
    path = make(
        cfg.env,
        n_steps=cfg.n_steps,
        seed=cfg.seed,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
        max_episode_steps=cfg.max_episode_steps,
    )
    print(f"wrote {cfg.env} ({cfg.n_steps} steps) to {path}")


if __name__ == "__main__":
    run_hydra_main(main)
