"""scripts/device_check.sh runs every step and prints one JSON summary (tiny CPU mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_runs_every_step_and_summarises_them(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "QUICK": "1"}
    env["OUT_DIR"] = str(tmp_path / "check")
    proc = subprocess.run(
        ["bash", "scripts/device_check.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == json.loads((tmp_path / "check" / "summary.json").read_text())
    steps = ("bench_train", "bench_train_vs_hf", "bench_plan", "make_dataset", "train_and_plan")
    for name in steps:
        assert summary[name]["rc"] == 0, (name, summary[name])
    assert summary["bench_train"]["result"]["tokens_per_s"] > 0
    assert summary["bench_train_vs_hf"]["result"]["ttrl_over_hf"] > 0
    assert summary["bench_plan"]["result"]["n_envs"] == 2
    assert summary["train_and_plan"]["plan"]["aggregates"]["n_episodes"] == 1
    assert summary["train_and_plan"]["train_tokens_per_s_last"] > 0
