"""`make demo`: the whole pipeline at CPU size, compared with the data it learned from.

Makes the demo dataset if it is absent (from the shipped behaviour policy), trains
(``configs/experiment/demo.yaml``), plans a few episodes with the final checkpoint and prints the
planner's normalised score beside the dataset's own average score.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ttrl.io import atomic_write_json

DEMO_DATASET_STEPS = 100_000
DEMO_MINARI_ROOT = Path("data/minari")


def use_demo_minari_root(root: str | os.PathLike = DEMO_MINARI_ROOT) -> Path:
    """Keep the demo's small dataset apart from full-size ones of the same name."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    return root


def ensure_dataset(name: str, n_steps: int, seed: int) -> dict[str, Any]:
    """Make the local dataset ``name`` unless it exists; its size and average score."""
    from ttrl.data.registry import minari_dataset_exists, ttrl_minari_id
    from ttrl.making.recipes import level_dataset_summary, make_level_dataset

    if not minari_dataset_exists(ttrl_minari_id(name)):
        print(f"making {name} ({n_steps} steps) with its shipped behaviour policy")
        make_level_dataset(name, n_steps=n_steps, seed=seed)
    return level_dataset_summary(name)


def run_demo(cfg: DictConfig, run_dir: Path, dataset_steps: int = DEMO_DATASET_STEPS) -> dict:
    """Dataset, training, planning; writes ``<run_dir>/demo.json`` and returns its content."""
    from ttrl.evaluation import evaluate_training_run
    from ttrl.training import train

    dataset = ensure_dataset(cfg.env.name, dataset_steps, cfg.seed)
    metrics = train(cfg, run_dir)
    results = evaluate_training_run(
        OmegaConf.to_container(cfg, resolve=True), run_dir, step=metrics["step"]
    )
    if results is None:  # planned already for this checkpoint: read what that run wrote
        results_file = run_dir / "plan" / cfg.evaluate.name / "results.json"
        aggregates = json.loads(results_file.read_text())["aggregates"]
    else:
        aggregates = results.aggregates
    summary = {
        "dataset": dataset,
        "training": {"steps": metrics["step"], "val_loss": metrics.get("val/loss")},
        "planner": aggregates,
        "run_dir": str(run_dir),
    }
    atomic_write_json(run_dir / "demo.json", summary)
    return summary


def describe(summary: dict) -> str:
    """The demo's closing lines: the planner's score beside the dataset's."""
    planner, dataset = summary["planner"], summary["dataset"]
    return (
        f"planner : normalised score {planner['normalized_score_mean']:.1f} ± "
        f"{planner['normalized_score_se']:.1f} (mean ± se) over {planner['n_episodes']} episodes "
        f"(return {planner['return_mean']:.0f})\n"
        f"dataset : normalised score {dataset['normalized_score_mean']:.1f} on average over its "
        f"{dataset['n_whole_episodes']} episodes (return {dataset['return_mean']:.0f})\n"
        f"results : {summary['run_dir']}"
    )
