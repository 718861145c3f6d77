#!/usr/bin/env python
"""`make demo`: make a small halfcheetah-medium dataset, train, plan, and compare the scores.

    python scripts/demo.py                               # configs/experiment/demo.yaml
    python scripts/demo.py trainer.max_minutes=3 evaluate.n_episodes=1
    python scripts/demo.py --dataset-steps 50000 --run-dir outputs/demo/mine

Extra arguments are training config overrides. The dataset goes to data/minari (apart from
full-size datasets of the same name); results to <run dir>/plan/final/ and <run dir>/demo.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ttrl.cli import exit_on_user_error
from ttrl.config import compose_config
from ttrl.demo import DEMO_DATASET_STEPS, describe, run_demo, use_demo_minari_root


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-steps", type=int, default=DEMO_DATASET_STEPS)
    parser.add_argument("--run-dir", type=Path, default=None)
    args, overrides = parser.parse_known_args()
    run_dir = args.run_dir or Path("outputs/demo") / time.strftime("%Y-%m-%d_%H-%M-%S")
    use_demo_minari_root()
    cfg = compose_config(overrides=["experiment=demo", f"run_dir={run_dir}", *overrides])
    started = time.perf_counter()
    summary = run_demo(cfg, run_dir, args.dataset_steps)
    print(describe(summary))
    print(f"took {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
