"""Collecting and writing datasets: exact step counts, seeding, metadata, and atomic, resumable writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import minari
import numpy as np
import pytest

from ttrl.data import load_transitions, resolve_dataset
from ttrl.errors import TtrlError
from ttrl.making import collect as collect_module
from ttrl.making import collect_dataset, collect_episodes, write_minari_dataset

REPO = Path(__file__).resolve().parents[1]


def visible_files(root: Path) -> list[str]:
    """Everything under the Minari root except hidden staging folders."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def test_collect_episodes_takes_exactly_n_steps_and_is_seeded():
    episodes = collect_episodes(
        "Hopper-v5", "random", 150, seed=3, progress=False, max_episode_steps=40
    )
    assert sum(len(e.rewards) for e in episodes) == 150
    for episode in episodes:
        assert len(episode.observations) == len(episode.actions) + 1 == len(episode.rewards) + 1
        assert episode.terminations[-1] or episode.truncations[-1]
        assert not (episode.terminations[:-1] | episode.truncations[:-1]).any()
    assert episodes[-1].truncations[-1]  # the step budget cuts the last episode
    again = collect_episodes(
        "Hopper-v5", "random", 150, seed=3, progress=False, max_episode_steps=40
    )
    np.testing.assert_array_equal(
        np.concatenate([e.actions for e in episodes]), np.concatenate([e.actions for e in again])
    )
    other = collect_episodes(
        "Hopper-v5", "random", 150, seed=4, progress=False, max_episode_steps=40
    )
    assert not np.array_equal(episodes[0].actions, other[0].actions)


def test_collect_episodes_uses_a_callable_policy():
    seen = []

    def still(obs: np.ndarray) -> np.ndarray:
        seen.append(obs)
        return np.zeros(6)

    episodes = collect_episodes(
        "HalfCheetah-v5", still, 30, seed=0, progress=False, max_episode_steps=10
    )
    assert len(episodes) == 3 and len(seen) == 30
    assert all((e.actions == 0).all() for e in episodes)
    np.testing.assert_array_equal(seen[0], episodes[0].observations[0])
    with pytest.raises(TtrlError, match="unknown policy"):
        collect_episodes("HalfCheetah-v5", "expert", 5, seed=0, progress=False)


def test_written_dataset_records_its_recipe(minari_root, tiny_dataset):
    metadata = minari.load_dataset("ttrl/halfcheetah/random-v0").storage.metadata
    recipe = metadata["ttrl"]
    assert recipe["policy"] == "random" and recipe["seed"] == 0 and recipe["n_steps"] == 400
    assert recipe["ttrl_version"] and recipe["env_id"] == "HalfCheetah-v5"
    assert (recipe["ref_min_score"], recipe["ref_max_score"]) == (-280.178953, 12135.0)
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (-280.178953, 12135.0)
    assert "ttrl/halfcheetah/random-v0" in minari.list_local_datasets()


def test_replay_buffer_style_episodes_can_be_written(minari_root):
    rng = np.random.default_rng(0)
    episodes = [
        {
            "observations": rng.normal(size=(n + 1, 11)),
            "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
            "rewards": rng.normal(size=n),
            "terminations": np.arange(n) == n - 1,
            "truncations": np.zeros(n, bool),
        }
        for n in (7, 3, 12)
    ]
    write_minari_dataset(
        "ttrl/hopper/medium-replay-v0", episodes, "Hopper-v5", -20.272305, 3234.3, {"policy": "sac"}
    )
    loaded = load_transitions("hopper-medium-replay")
    assert len(loaded) == 22 and loaded.terminals.sum() == 3 and loaded.n_episodes == 3
    np.testing.assert_array_equal(
        loaded.observations[:7], episodes[0]["observations"][:-1].astype(np.float32)
    )
    bad = [{**episodes[0], "observations": episodes[0]["observations"][:-1]}]
    with pytest.raises(TtrlError, match="one more observation"):
        write_minari_dataset("ttrl/hopper/medium-v0", bad, "Hopper-v5", None, None)
    assert not (minari_root / "ttrl/hopper/medium-v0").exists()


def test_existing_dataset_needs_overwrite(minari_root, tiny_dataset):
    before = load_transitions(tiny_dataset)
    with pytest.raises(TtrlError, match="already exists"):
        collect_dataset(tiny_dataset, n_steps=50, progress=False)
    path = collect_dataset(tiny_dataset, n_steps=50, seed=1, progress=False, overwrite=True)
    assert path == minari_root / "ttrl/halfcheetah/random-v0"
    after = load_transitions(tiny_dataset)
    assert len(before) == 400 and len(after) == 50
    assert [p.name for p in minari_root.iterdir() if p.name.startswith(".")] == [".ttrl-locks"]


def test_levels_without_a_behaviour_policy_are_refused(minari_root):
    with pytest.raises(TtrlError, match="needs a behaviour policy"):
        collect_dataset("walker2d-medium", n_steps=10, progress=False)
    assert list(minari_root.iterdir()) == []


class Interrupted(Exception):
    """A run stopped part-way (defined here, not in the test: the writer process pickles it)."""


@pytest.mark.parametrize("where", ["collecting", "writing"])
def test_interrupted_run_leaves_nothing_and_the_next_run_succeeds(minari_root, monkeypatch, where):
    if where == "collecting":

        def failing_policy(_obs):
            raise Interrupted

        with pytest.raises(Interrupted):
            collect_dataset("hopper-random", n_steps=50, policy=failing_policy, progress=False)
    else:
        real_create = collect_module._create_in_staging

        def create_then_fail(*args, **kwargs):
            real_create(
                *args, **kwargs
            )  # the dataset's files are fully written in the staging folder...
            raise Interrupted  # ...when the run dies before moving it into place

        with monkeypatch.context() as patched, pytest.raises(Interrupted):
            patched.setattr(collect_module, "_create_in_staging", create_then_fail)
            collect_dataset("hopper-random", n_steps=50, progress=False)

    assert visible_files(minari_root) == []
    assert list(minari_root.glob(".ttrl-staging-*")) == []
    assert minari.list_local_datasets() == {}
    with pytest.raises(TtrlError, match=r"make_dataset\.py env=hopper-random"):
        resolve_dataset("hopper-random")
    collect_dataset("hopper-random", n_steps=50, progress=False)
    assert len(load_transitions("hopper-random")) == 50


def test_a_killed_run_leaves_only_a_hidden_folder_that_blocks_nothing(minari_root):
    # a SIGKILL mid-write leaves the staging folder behind, possibly holding a complete dataset
    stale = minari_root / ".ttrl-staging-killed"
    (stale / "ttrl/hopper/random-v0/data").mkdir(parents=True)
    (stale / "ttrl/hopper/random-v0/data/metadata.json").write_text("{}")
    assert minari.list_local_datasets() == {}
    with pytest.raises(TtrlError, match="not in"):
        resolve_dataset("hopper-random")
    collect_dataset("hopper-random", n_steps=20, progress=False)
    assert len(load_transitions("hopper-random")) == 20
    old = 2 * 3600
    os.utime(stale, (stale.stat().st_atime - old, stale.stat().st_mtime - old))
    collect_dataset("hopper-random", n_steps=20, progress=False, overwrite=True)
    assert not stale.exists()  # stale staging folders are cleaned up by the next write


def run_script(minari_root: Path, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(minari_root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/make_dataset.py"),
            *overrides,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_dataset_script(minari_root, tmp_path):
    done = run_script(
        minari_root, tmp_path, "env=hopper-random", "n_steps=60", "seed=2", "progress=false"
    )
    assert done.returncode == 0, done.stderr
    assert str(minari_root / "ttrl/hopper/random-v0") in done.stdout
    assert len(load_transitions("hopper-random")) == 60
    refused = run_script(minari_root, tmp_path, "env=hopper-expert", "n_steps=60")
    assert refused.returncode == 2
    last_line = refused.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "behaviour policy" in last_line
