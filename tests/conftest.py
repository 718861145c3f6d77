"""Shared test fixtures: every test runs offline, on CPU, with data in temporary folders."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MUJOCO_GL", "egl")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the planner's attention kernel and the model's CPU ops once, up front (about 30 s
    each on a fresh machine), so that no test, and no subprocess a test starts, pays for a build
    inside its own time limit."""
    from ttrl.model import cpu_ops
    from ttrl.planning import cached_attention

    if cached_attention.choice() != "torch":
        cached_attention.kernel_for(torch.device("cpu"), torch.float32)
    if cpu_ops.choice() != "torch":
        cpu_ops.extension()


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """A fresh, empty Minari datasets root for one test."""
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _make_tiny_dataset(name: str, n_steps: int, max_episode_steps: int | None) -> str:
    """Collect random-policy episodes through ttrl's real writer, registered under a D4RL-style name."""
    from ttrl.making.collect import collect_dataset

    collect_dataset(
        name, n_steps=n_steps, seed=0, progress=False, max_episode_steps=max_episode_steps
    )
    return name


@pytest.fixture
def tiny_dataset(minari_root):
    """A small random HalfCheetah-v5 dataset (4 episodes of 100 steps, timeouts only).

    ``resolve_dataset("halfcheetah-random")`` / ``load_transitions`` find it; returns that name.
    """
    return _make_tiny_dataset("halfcheetah-random", n_steps=400, max_episode_steps=100)


@pytest.fixture
def tiny_hopper(minari_root):
    """A small random Hopper-v5 dataset (400 steps; most episodes end in a real termination).

    Registered as ``hopper-random``; returns that name.
    """
    return _make_tiny_dataset("hopper-random", n_steps=400, max_episode_steps=100)
