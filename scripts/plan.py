"""Plan with a trained Trajectory Transformer in MuJoCo and score it (see configs/plan.yaml).

python scripts/plan.py run_dir=outputs/train/halfcheetah-medium/<time> n_episodes=10 render=true
python scripts/plan.py checkpoint=<HuggingFace dir> env=halfcheetah-medium planner.horizon=5

Each episode's result is saved as it ends. On SIGTERM or Ctrl-C the finished episodes are kept
(with partial results files), one line says how to go on, and the exit status is 128 + the signal
number; the same command with the same name= then plans only the other episodes.
"""

from __future__ import annotations

import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ttrl.cli import exit_on_user_error
from ttrl.config import run_hydra_main  # also registers the schemas and resolvers plan.yaml uses
from ttrl.evaluation import command_line_overrides, register_resolvers, run_planning
from ttrl.evaluation.runner import choose_run_dir, stopped_exit_code

register_resolvers()


@hydra.main(config_path="../configs", config_name="plan", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from ttrl.config import save_hydra_record

    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    config = choose_run_dir(OmegaConf.to_container(cfg, resolve=True), out_dir)
    overrides = command_line_overrides(config, hydra_cfg.overrides.task)
    results = run_planning(
        config,
        out_dir,
        overrides=overrides,
        # recorded once the folder's check passed (not for a refused run), with the settings
        # planned with: the run's own, merged with the command line's
        on_checked=lambda planning: save_hydra_record(out_dir, OmegaConf.merge(cfg, planning)),
    )
    if results.stopped_by is not None:
        sys.exit(stopped_exit_code(results.stopped_by))


if __name__ == "__main__":
    try:
        run_hydra_main(main)
    except KeyboardInterrupt:  # Ctrl-C outside the rollout (which stops cleanly on its own)
        print(
            "error: interrupted; finished episodes are kept: the same command goes on",
            file=sys.stderr,
        )
        sys.exit(stopped_exit_code(signal.SIGINT))
