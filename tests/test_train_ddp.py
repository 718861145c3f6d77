"""DDP training under torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ttrl.checkpoint import load_bundle

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model=tiny",
    "logger=disabled",
    "device=cpu",
    "env=halfcheetah-random",
    "trainer.batch_size=8",
    "trainer.eval_interval=3",
    "trainer.progress=false",
    "data.val_fraction=0.25",
]


def torchrun(*overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "scripts/train.py",
        *TINY,
        *overrides,
    ]
    return subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_two_process_run_finishes_with_a_checkpoint(tiny_dataset, tmp_path):
    result = torchrun("trainer.max_steps=4", f"run_dir={tmp_path}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trainer = load_bundle(tmp_path)["trainer"]
    assert trainer["step"] == 4 and trainer["world_size"] == 2
    # each rank samples its own batches: the two sampler streams differ
    samplers = [state["sampler"] for state in trainer["rng"]]
    assert len(samplers) == 2 and not torch.equal(samplers[0], samplers[1])
    assert (tmp_path / "checkpoints" / "best.safetensors").is_file()


@pytest.mark.slow
def test_two_process_resume_equals_an_uninterrupted_run(tiny_dataset, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert torchrun("trainer.max_steps=6", f"run_dir={whole}").returncode == 0
    assert torchrun("trainer.max_steps=3", f"run_dir={split}").returncode == 0
    assert torchrun("trainer.max_steps=6", f"run_dir={split}").returncode == 0
    expected, resumed = load_bundle(whole)["model"], load_bundle(split)["model"]
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, msg=key)
