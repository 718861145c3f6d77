"""`make demo`: the whole pipeline at CPU size, compared with the data it learned from.

Makes the demo dataset if it is absent (from the shipped behaviour policy), trains
(``configs/experiment/demo.yaml``), plans a few episodes with the final checkpoint and prints the
planner's normalised score beside the dataset's own average score.
"""

from __future__ import annotations

import json
import os
import time
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


def estimate_demo_minutes(cfg: DictConfig, train_steps: int = 6, decisions: int = 2) -> dict:
    """Minutes the demo's training and planning will take on this machine, from a few timed
    steps of each on a random model of the same sizes (their cost does not depend on weights)."""
    import torch

    from ttrl.data.registry import ENVS, split_dataset_name
    from ttrl.evaluation.loading import planning_settings
    from ttrl.model import TrajectoryTransformer
    from ttrl.model.bench import make_train_step, random_batch
    from ttrl.planning import BeamPlanner
    from ttrl.planning.bench import random_discretizer_and_prefix
    from ttrl.planning.bench_worker import time_plan_calls
    from ttrl.training.pipeline import build_model_config

    threads = cfg.trainer.get("num_threads")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        info = ENVS[split_dataset_name(cfg.env.name)[0]]
        S, A = info.observation_dim, info.action_dim
        config = build_model_config(
            cfg.model, S, A, cfg.discretizer.n_bins, cfg.data.sequence_length
        )
        model = TrajectoryTransformer(config)
        step = make_train_step(
            model,
            model,
            random_batch(config, cfg.trainer.batch_size, torch.device("cpu"), 0),
            False,
        )
        step()  # the optimiser's first step allocates its state
        started = time.perf_counter()
        for _ in range(train_steps):
            step()
        seconds_per_step = (time.perf_counter() - started) / train_steps
        model.eval()
        planner_cfg, controller_cfg = planning_settings(OmegaConf.to_container(cfg, resolve=True))
        n_envs = max(int(cfg.evaluate.n_episodes), 1)
        discretizer, prefix = random_discretizer_and_prefix(
            config, controller_cfg.context_transitions, n_envs
        )
        planner = BeamPlanner(model, discretizer, planner_cfg)
        time_plan_calls(planner, prefix, 1, 0)  # warm-up
        ms = time_plan_calls(planner, prefix, decisions, 1)["wall_ms"]
    finally:
        torch.set_num_threads(previous)
    episode_steps = cfg.evaluate.max_episode_steps or 1000
    training = seconds_per_step * cfg.trainer.max_steps / 60
    planning = (sum(ms) / len(ms) / 1000) * episode_steps / 60 if cfg.evaluate.n_episodes else 0.0
    return {"training_min": training, "planning_min": planning, "total_min": training + planning}


def run_demo(cfg: DictConfig, run_dir: Path, dataset_steps: int = DEMO_DATASET_STEPS) -> dict:
    """Dataset, training, planning; writes ``<run_dir>/demo.json`` and returns its content."""
    from ttrl.evaluation import evaluate_training_run
    from ttrl.training import train

    dataset = ensure_dataset(cfg.env.name, dataset_steps, cfg.seed)
    estimate = estimate_demo_minutes(cfg)
    print(describe_estimate(estimate, cfg))
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
        "estimate_s": {k.replace("_min", "_s"): round(60 * v, 2) for k, v in estimate.items()},
        "run_dir": str(run_dir),
    }
    atomic_write_json(run_dir / "demo.json", summary)
    return summary


def describe_estimate(estimate: dict, cfg: DictConfig) -> str:
    """The line printed before training: how long the demo will take here, and until when."""
    import datetime

    done = datetime.datetime.now() + datetime.timedelta(minutes=estimate["total_min"])
    return (
        f"estimate: about {estimate['total_min']:.0f} min on this machine, done around "
        f"{done:%H:%M} (training {estimate['training_min']:.1f} min for {cfg.trainer.max_steps} "
        f"steps, planning {estimate['planning_min']:.1f} min for {cfg.evaluate.n_episodes} "
        f"episodes together; timed on a few steps of each, so a busier machine takes longer)"
    )


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
