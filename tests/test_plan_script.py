"""scripts/plan.py: a tiny training run planned end to end, HF checkpoints, and one-line user errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import ttrl.config  # noqa: F401  (the schemas and resolvers plan.yaml uses)
from test_evaluation import N_BINS, fit_discretizer, save_tiny_run, tiny_model
from ttrl.data import load_transitions, resolve_dataset
from ttrl.data.preprocess import preprocess
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.evaluation import (
    command_line_overrides,
    load_checkpoint_with_dataset,
    run_planning,
)
from ttrl.planning import ControllerConfig, PlannerConfig

ROOT = Path(__file__).resolve().parents[1]
D4RL_HALFCHEETAH = (-280.178953, 12135.0)


def plan_config(*overrides: str) -> dict:
    """configs/plan.yaml composed with ``overrides``, as plan.py sees it."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("plan", overrides=[*overrides, "logger.mode=disabled", "progress=false"])
    return OmegaConf.to_container(cfg, resolve=True)


def plan_in_process(out_dir: Path, *overrides: str):
    cfg = plan_config(*overrides)
    return run_planning(cfg, out_dir, overrides=command_line_overrides(cfg, overrides))


def run_plan_script(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plan.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tiny_run(tmp_path, tiny_dataset):
    """A training run of a tiny random model on the tiny halfcheetah dataset (n_expand=3 in its planner)."""
    run_dir = tmp_path / "run"
    save_tiny_run(
        run_dir, tiny_dataset, tiny_model(), fit_discretizer(tiny_dataset), {"n_expand": 3}
    )
    return run_dir


def test_plan_script_end_to_end(tiny_run, tmp_path):
    proc = run_plan_script(
        tmp_path,
        f"run_dir={tiny_run}",
        "planner.horizon=2",
        "planner.beam_width=4",
        "n_episodes=2",
        "max_episode_steps=20",
        "seed=3",
        "device=cpu",
        "progress=false",
        "logger.mode=disabled",
        "name=e2e",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out_dir = tiny_run / "plan" / "e2e"
    results = json.loads((out_dir / "results.json").read_text())
    with open(out_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == ["3", "4"]
    assert [e["length"] for e in results["episodes"]] == [20, 20]
    ref_min, ref_max = D4RL_HALFCHEETAH
    for row, episode in zip(rows, results["episodes"], strict=True):
        expected = 100 * (episode["return"] - ref_min) / (ref_max - ref_min)
        assert episode["normalized_score"] == pytest.approx(expected)
        assert float(row["normalized_score"]) == pytest.approx(expected)
        assert float(row["return"]) == pytest.approx(episode["return"])
    assert results["reference_scores"] == {"min": ref_min, "max": ref_max, "source": "D4RL"}
    scores = [e["normalized_score"] for e in results["episodes"]]
    assert results["aggregates"]["normalized_score_mean"] == pytest.approx(sum(scores) / 2)
    assert results["aggregates"]["normalized_score_se"] == pytest.approx(
        abs(scores[0] - scores[1]) / 2
    )
    # the command line replaced horizon and beam; the run's other planner settings were kept
    planner = results["config"]["planner"]
    assert (planner["horizon"], planner["beam_width"], planner["n_expand"]) == (2, 4, 3)
    assert results["timing"]["decisions"] == 40 and results["timing"]["decisions_per_second"] > 0
    # the record of the job holds the settings planned with (the run's, merged with the command
    # line's), not plan.yaml's defaults
    recorded = OmegaConf.load(out_dir / ".hydra" / "config.yaml")
    assert OmegaConf.to_container(recorded.planner) == planner
    assert OmegaConf.to_container(recorded.controller) == results["config"]["controller"]
    assert (out_dir / "predictions.png").stat().st_size > 0
    with open(out_dir / "predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == 40
    summary = proc.stdout.strip().splitlines()[-1]
    assert "halfcheetah-random" in summary and "2 episodes" in summary and "decisions/s" in summary


def test_plan_script_without_checkpoint_prints_one_line(tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    proc = run_plan_script(tmp_path, f"run_dir={empty}", "logger.mode=disabled")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "checkpoints/last.safetensors" in lines[0] and "scripts/train.py" in lines[0]


def test_hf_checkpoint_refits_the_discretizer_on_the_dataset(tmp_path, tiny_dataset):
    model = tiny_model()
    hf_dir = tmp_path / "hf"
    model.save_pretrained(hf_dir, hf_format=True)
    results = plan_in_process(
        tmp_path / "out",
        f"checkpoint={hf_dir}",
        f"env={tiny_dataset}",
        "planner.horizon=2",
        "planner.beam_width=2",
        "n_episodes=1",
        "max_episode_steps=3",
    )
    assert [e.length for e in results.episodes] == [3]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["dataset"] == tiny_dataset and saved["config"]["checkpoint"] == str(hf_dir)
    # the refit discretiser is the released code's: quantiles of its preprocessing of the dataset
    refit = load_checkpoint_with_dataset(hf_dir, tiny_dataset, {}).discretizer
    released = preprocess(load_transitions(resolve_dataset(tiny_dataset)), released_compat=True)
    expected = Discretizer.fit(released.joined, N_BINS).thresholds
    np.testing.assert_array_equal(refit.thresholds, expected)
    assert not np.array_equal(refit.thresholds, fit_discretizer(tiny_dataset).thresholds)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("planner.horizon=10", "planner.window_transitions=null"), "block_size"),
        (("planner.beam_width=0",), "beam_width"),
    ],
)
def test_bad_planner_settings_are_one_line_errors(tiny_run, tmp_path, overrides, message):
    with pytest.raises(TtrlError, match=message) as err:
        plan_in_process(tmp_path / "out", f"run_dir={tiny_run}", *overrides)
    assert "\n" not in str(err.value)


def test_command_line_overrides_name_the_keys_typed_with_their_composed_values():
    cfg = {
        "planner": {"horizon": 5, "k_act": None, "beam_width": 32},
        "controller": {"context_transitions": 5, "plan_freq": 2},
        "n_episodes": 3,
    }
    typed = ["planner.horizon=5", "planner.k_act=null", "+controller.plan_freq=2", "n_episodes=3"]
    assert command_line_overrides(cfg, typed) == {
        "planner": {"horizon": 5, "k_act": None},  # null is a value, not "keep the run's"
        "controller": {"plan_freq": 2},
    }
    # a whole preset chosen names every key of its section
    assert command_line_overrides(cfg, ["planner=default"]) == {
        "planner": cfg["planner"],
        "controller": {},
    }
    assert command_line_overrides(cfg, []) == {"planner": {}, "controller": {}}


def test_a_run_saved_with_the_controller_settings_under_planner_plans_with_them(
    tmp_path, tiny_dataset
):
    """Runs trained before the controller had its own section keep their context and plan_freq."""
    run_dir = tmp_path / "old_run"
    older = {"context_transitions": 1, "plan_freq": 2, "horizon": 3, "beam_width": 2}
    save_tiny_run(run_dir, tiny_dataset, tiny_model(), fit_discretizer(tiny_dataset), older)
    out = tmp_path / "out"
    results = plan_in_process(out, f"run_dir={run_dir}", "n_episodes=1", "max_episode_steps=5")
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["controller"] == {"context_transitions": 1, "plan_freq": 2}
    assert "plan_freq" not in saved["config"]["planner"]
    assert saved["config"]["planner"]["horizon"] == 3
    assert results.timing["planner_calls"] == 3  # steps 0, 2, 4: every second step
    # the command line replaces the run's controller setting like any other
    again = plan_in_process(
        tmp_path / "out2",
        f"run_dir={run_dir}",
        "n_episodes=1",
        "max_episode_steps=5",
        "controller.plan_freq=1",
    )
    assert again.timing["planner_calls"] == 5


def test_an_evaluation_folder_of_an_older_ttrl_keeps_its_episodes(tiny_run, tmp_path):
    """A folder whose settings hold the controller's keys under ``planner`` (as ttrl wrote them
    before the controller section) is the same evaluation: its finished episodes are kept."""
    from ttrl.evaluation.store import settings_digest

    out = tmp_path / "out"
    args = (f"run_dir={tiny_run}", "n_episodes=2", "max_episode_steps=3", "planner.horizon=2")
    first = plan_in_process(out, *args)
    settings_file = out / "episodes" / "settings.json"
    record = json.loads(settings_file.read_text())
    legacy = dict(record["settings"])
    legacy["planner"] = {**legacy["planner"], **legacy.pop("controller")}
    legacy_digest = settings_digest(legacy)
    settings_file.write_text(json.dumps({**record, "settings": legacy, "digest": legacy_digest}))
    for path in (out / "episodes").glob("episode*.json"):
        path.write_text(
            json.dumps({**json.loads(path.read_text()), "settings_digest": legacy_digest})
        )
    again = plan_in_process(out, *args)
    assert again.timing["runs"] == 1  # nothing planned again
    assert [e.normalized_score for e in again.episodes] == [
        e.normalized_score for e in first.episodes
    ]
    assert json.loads(settings_file.read_text())["settings"] == record["settings"]


def test_a_controller_setting_given_to_the_planner_says_its_new_name(tiny_run, tmp_path):
    proc = run_plan_script(
        tmp_path, f"run_dir={tiny_run}", "planner.plan_freq=2", "logger.mode=disabled"
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "planner.plan_freq is now controller.plan_freq" in lines[0]
    with pytest.raises(TtrlError, match=r"planner.context_transitions is now controller"):
        PlannerConfig(context_transitions=3)
    with pytest.raises(TtrlError, match=r"unknown controller setting\(s\) horizon"):
        ControllerConfig(horizon=3)


def test_model_and_env_of_different_sizes_is_an_error(tmp_path, tiny_dataset):
    from ttrl.discretization import Discretizer

    hopper_sized = tiny_model(observation_dim=11, action_dim=3)
    data = np.random.default_rng(0).normal(size=(200, 16))
    run_dir = tmp_path / "run"
    save_tiny_run(run_dir, tiny_dataset, hopper_sized, Discretizer.fit(data, n_bins=20))
    with pytest.raises(TtrlError) as err:
        plan_in_process(tmp_path / "out", f"run_dir={run_dir}", "n_episodes=1")
    message = str(err.value)
    assert "observation dim 17" in message and "action dim 6" in message
    assert "observation dim 11" in message and "action dim 3" in message
    assert "\n" not in message


def test_a_second_plan_into_the_same_folder_fails_naming_the_first(tiny_run, tmp_path):
    out_dir = tiny_run / "plan" / "busy"
    code = (
        "import time; from ttrl.locking import hold_plan_dir\n"
        f"with hold_plan_dir({str(out_dir)!r}):\n"
        "    print('held', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_plan_script(
            tmp_path, f"run_dir={tiny_run}", "name=busy", "logger.mode=disabled", "device=cpu"
        )
    finally:
        holder.kill()
        holder.wait()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert f"in use by process {holder.pid}" in lines[0] and "name=" in lines[0]
    assert not (out_dir / "results.json").exists()


def test_plan_without_run_dir_plans_the_newest_training_run(tiny_run, tmp_path):
    import shutil

    work = tmp_path / "work"
    older = work / "outputs" / "train" / "halfcheetah-random" / "2026-01-01_00-00-00"
    newer = work / "outputs" / "train" / "halfcheetah-random" / "2026-01-02_00-00-00"
    for run in (older, newer):
        shutil.copytree(tiny_run, run)
    checkpoint = newer / "checkpoints" / "last.safetensors"
    os.utime(older / "checkpoints" / "last.safetensors", (1, 1))  # older's checkpoint is old
    assert checkpoint.is_file()
    proc = run_plan_script(
        work,
        "n_episodes=1",
        "max_episode_steps=2",
        "planner.horizon=1",
        "planner.beam_width=2",
        "logger.mode=disabled",
        "progress=false",
        "name=newest",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        f"planning the newest training run, {Path('outputs/train/halfcheetah-random/2026-01-02_00-00-00')}"
        in proc.stdout
    )
    assert (newer / "plan" / "newest" / "results.json").is_file()
    assert not (older / "plan").exists()


def test_plan_without_any_run_says_how_to_make_one(tmp_path):
    proc = run_plan_script(tmp_path, "logger.mode=disabled")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "no training run under outputs/train/" in lines[0] and "scripts/train.py" in lines[0]
