"""The CPU-scale experiments (configs/experiment/cpu/) and their sweep compose, validate and run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ttrl.config import compose_config, validate_train_config
from ttrl.evaluation import evaluate_training_run
from ttrl.training import train

REPO = Path(__file__).resolve().parents[1]
CPU_EXPERIMENTS = sorted(
    p.stem for p in (REPO / "configs" / "experiment" / "cpu").glob("*.yaml") if p.stem != "base"
)
# goal reaching, scored by success rather than return: not in the CPU table's sweep
GOAL_EXPERIMENTS = {e for e in CPU_EXPERIMENTS if e.startswith("pointmaze-")}


def test_the_sweep_names_every_cpu_dataset_experiment():
    sweep = OmegaConf.load(REPO / "configs" / "hydra" / "sweeper" / "cpu.yaml")
    swept = {e.removeprefix("cpu/") for e in sweep.params.experiment.split(",")}
    assert swept == {
        e for e in CPU_EXPERIMENTS if not e.endswith("-paper-planner") and e not in GOAL_EXPERIMENTS
    }
    assert sweep.params.seed == "0,1"


@pytest.mark.parametrize("experiment", CPU_EXPERIMENTS)
def test_cpu_experiment_composes_and_validates(experiment):
    cfg = compose_config(overrides=[f"experiment=cpu/{experiment}", "run_dir=unused"])
    validate_train_config(cfg)
    assert cfg.env.name == experiment.removesuffix("-paper-planner").removesuffix("-observed-goal")
    if experiment.endswith("-observed-goal"):  # planned by reward, the goal in the observation
        assert cfg.data.observe_goal and cfg.data.goal is None
        assert cfg.planner.objective == "return"
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.data.sequence_length) == (2, 64, 4)
    assert cfg.trainer.max_steps == 8000 and "cpu" in cfg.logger.tags
    paper_planner = experiment.endswith("-paper-planner")
    assert (cfg.planner.horizon, cfg.planner.beam_width) == (
        (15, 128) if paper_planner else (5, 32)
    )
    assert cfg.planner.window_transitions == 4  # fits the 4-transition windows it trains on


def test_a_cpu_experiment_trains_and_plans_with_tiny_overrides(tiny_hopper, tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_config(
        overrides=[
            "experiment=cpu/hopper-medium",
            f"env.name={tiny_hopper}",
            f"run_dir={run_dir}",
            "trainer.max_steps=3",
            "trainer.batch_size=8",
            "trainer.progress=false",
            "logger=disabled",
            "device=cpu",
            "data.val_fraction=0.25",
            "evaluate.n_episodes=2",
            "evaluate.max_episode_steps=4",
            "planner.beam_width=2",
            "planner.horizon=2",
        ]
    )
    metrics = train(cfg, run_dir)
    assert metrics["step"] == 3
    evaluate_training_run(OmegaConf.to_container(cfg, resolve=True), run_dir, step=3)
    results = json.loads((run_dir / "plan" / "final" / "results.json").read_text())
    assert results["aggregates"]["n_episodes"] == 2
    assert results["config"]["planner"]["window_transitions"] == 4


@pytest.mark.parametrize("sweeper", ["cpu_baselines", "cpu_iql"])
def test_the_baseline_sweeps_cover_the_cpu_table_and_each_job_validates(sweeper):
    import itertools

    from hydra import compose, initialize_config_dir

    import ttrl.baselines.runner  # noqa: F401  (registers train_baseline_schema)
    from ttrl.baselines.config import algorithm_config

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        hydra_cfg = compose(
            "train_baseline", overrides=[f"hydra/sweeper={sweeper}"], return_hydra_config=True
        )
    params = {k: str(v).split(",") for k, v in hydra_cfg.hydra.sweeper.params.items()}
    tt_sweep = OmegaConf.load(REPO / "configs" / "hydra" / "sweeper" / "cpu.yaml").params
    assert {f"cpu/{e}" for e in params["env"]} == set(tt_sweep.experiment.split(","))
    assert params["seed"] == ["0", "1"] and params["steps"] == ["20000"]
    for job in itertools.product(*[[f"{k}={v}" for v in values] for k, values in params.items()]):
        cfg = compose_config("train_baseline", [*job, "run_dir=unused"])
        _, settings = algorithm_config(OmegaConf.to_container(cfg, resolve=True))
        assert cfg.steps == 20000 and cfg.evaluate.n_episodes == 5
        if sweeper == "cpu_iql":  # the IQL paper's MuJoCo settings
            assert (settings.expectile, settings.temperature) == (0.7, 3.0)
            assert settings.normalize_returns
