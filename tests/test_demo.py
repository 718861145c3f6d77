"""`make demo` end to end at toy size: dataset from the shipped policy, training, planning, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttrl.making.recipes import POLICIES_DIR

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


@pytest.mark.skipif(
    not (POLICIES_DIR / "halfcheetah" / "medium.pt").is_file(),
    reason="the halfcheetah medium behaviour policy is not shipped",
)
def test_demo_makes_its_dataset_trains_plans_and_compares(tmp_path):
    command = [
        sys.executable, str(SCRIPT), "--dataset-steps", "1500", "--run-dir", str(tmp_path / "run"),
        "trainer.max_steps=3", "trainer.progress=false", "evaluate.n_episodes=2",
        "evaluate.max_episode_steps=6", "evaluate.render=false", "planner.beam_width=4",
        "planner.horizon=2",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "data" / "minari" / "ttrl" / "halfcheetah" / "medium-v0").is_dir()
    summary = json.loads((tmp_path / "run" / "demo.json").read_text())
    assert summary["dataset"]["n_steps"] == 1500
    assert summary["training"]["steps"] == 3
    planner = summary["planner"]
    assert planner["n_episodes"] == 2
    results = json.loads((tmp_path / "run" / "plan" / "final" / "results.json").read_text())
    returns = [row["return"] for row in results["episodes"]]
    reference = results["reference_scores"]
    expected = [
        100 * (r - reference["min"]) / (reference["max"] - reference["min"]) for r in returns
    ]
    assert planner["normalized_score_mean"] == pytest.approx(sum(expected) / len(expected))
    assert (
        "planner : normalised score" in done.stdout and "dataset : normalised score" in done.stdout
    )
    # the estimate printed before training, from a few timed steps of each stage
    assert "estimate: about" in done.stdout and "for 3 steps" in done.stdout
    estimate = summary["estimate_s"]
    assert estimate["training_s"] > 0 and estimate["planning_s"] > 0
    assert estimate["total_s"] == pytest.approx(
        estimate["training_s"] + estimate["planning_s"], abs=0.02
    )
