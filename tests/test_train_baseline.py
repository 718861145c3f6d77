"""scripts/train_baseline.py and ttrl.baselines.runner on tiny local datasets: the run dir, exact
resume, refusals, the transformer's validation episodes, policy rollouts and the report table."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

from ttrl.baselines import BCPolicy
from ttrl.baselines.data import load_baseline_data
from ttrl.baselines.evaluate import evaluate_policy
from ttrl.baselines.runner import resume_bundle, train_baseline
from ttrl.checkpoint import load_bundle
from ttrl.config import compose_config
from ttrl.data import TokenDataset, load_and_fit, load_transitions, resolve_dataset
from ttrl.data.loading import Transitions, write_d4rl_hdf5
from ttrl.errors import TtrlError
from ttrl.evaluation import make_env
from ttrl.evaluation.loading import evaluation_spec
from ttrl.evaluation.table import load_evaluation, summarize, to_markdown
from ttrl.training.logger import read_metrics

REPO = Path(__file__).resolve().parents[1]
# A tiny budget: well under a second of training on one CPU core.
TINY = [
    "logger=disabled",
    "device=cpu",
    "progress=false",
    "num_threads=1",
    "bc.hidden=16",
    "bc.batch_size=8",
    "log_interval=3",
    "eval_interval=5",
    "data.val_fraction=0.25",
]


def tiny_cfg(dataset: str, *overrides: str):
    return compose_config("train_baseline", [*TINY, f"env.name={dataset}", *overrides])


def logged(run_dir: Path) -> list[tuple[int, str, float]]:
    """Every logged loss (not the timing, which differs between runs)."""
    return [
        (r["step"], key, value)
        for r in read_metrics(run_dir / "metrics.jsonl")
        for key, value in r.items()
        if key.startswith(("train/loss", "val/", "eval/"))
    ]


def test_validation_episodes_are_the_transformers(tiny_hopper):
    data = load_baseline_data(tiny_hopper, val_fraction=0.25, seed=3)
    fitted = load_and_fit(tiny_hopper, n_bins=10)
    _, val = TokenDataset.build(fitted.trajectories, fitted.discretizer, 2).split(0.25, seed=3)
    held_out = torch.unique(val.window_episodes).numpy()
    np.testing.assert_array_equal(data.val_episodes, held_out)
    # the validation rows are exactly those episodes' steps, the training rows all the others
    trajectories = fitted.trajectories
    rows = np.concatenate(
        [
            np.arange(s, s + n)
            for s, n in zip(
                trajectories.episode_starts[held_out],
                trajectories.episode_lengths[held_out],
                strict=True,
            )
        ]
    )
    obs = trajectories.joined[:, : trajectories.observation_dim]
    np.testing.assert_array_equal(data.val.observations.numpy(), obs[rows])
    assert len(data.train) + len(data.val) == len(trajectories)
    # successors stay within an episode; the last step of each is marked and is its own successor
    ends = data.train.episode_ends.numpy()
    next_obs, obs_train = data.train.next_observations.numpy(), data.train.observations.numpy()
    np.testing.assert_array_equal(next_obs[ends], obs_train[ends])
    inside = np.flatnonzero(~ends)  # whole episodes are kept, so the next row is the successor
    np.testing.assert_array_equal(next_obs[inside], obs_train[inside + 1])


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_hopper, tmp_path):
    cfg = tiny_cfg(tiny_hopper, "steps=16", "save_interval=1000")
    whole = train_baseline(cfg, tmp_path / "whole")
    assert whole["step"] == 16 and whole["signal"] is None and whole["results"] is None

    def sigterm_at_step_7(step: int) -> None:
        if step == 7:  # mid log interval: the running loss is carried over too
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_baseline(cfg, tmp_path / "split", on_step=sigterm_at_step_7)
    assert first["signal"] == signal.SIGTERM and first["step"] == 7
    assert load_bundle(tmp_path / "split")["trainer"]["step"] == 7
    second = train_baseline(cfg, tmp_path / "split")
    assert second["step"] == 16 and second["signal"] is None
    assert second["val/loss"] == whole["val/loss"]
    assert logged(tmp_path / "split") == logged(tmp_path / "whole")
    expected, resumed = load_bundle(tmp_path / "whole"), load_bundle(tmp_path / "split")
    assert expected["model"].keys() == resumed["model"].keys()
    for key, value in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    # training did move the weights, and the checkpoint is a plain BC policy bundle too
    start = train_baseline(tiny_cfg(tiny_hopper, "steps=1"), tmp_path / "start")
    assert start["step"] == 1
    assert not torch.equal(load_bundle(tmp_path / "start")["model"]["net.0.weight"], value)
    policy = BCPolicy.load(tmp_path / "whole" / "checkpoints" / "last.safetensors")
    assert policy.config.hidden == 16 and policy.config.steps == 16
    records = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == [3, 6, 9, 12, 15, 16]
    assert [r["step"] for r in records if "val/loss" in r] == [5, 10, 15, 16]
    assert (tmp_path / "whole" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # started again once finished: nothing trained, nothing logged twice
    again = train_baseline(cfg, tmp_path / "whole")
    assert again["step"] == 16 and again["val/loss"] == whole["val/loss"]
    assert read_metrics(tmp_path / "whole" / "metrics.jsonl") == records


def test_one_run_per_run_dir_and_a_changed_resume_is_refused(tiny_hopper, tmp_path):
    seen = []

    def start_a_second_run(step: int) -> None:
        with pytest.raises(TtrlError, match="in use by process") as err:
            train_baseline(tiny_cfg(tiny_hopper, "steps=2"), tmp_path)
        assert "\n" not in str(err.value)
        seen.append(step)

    train_baseline(tiny_cfg(tiny_hopper, "steps=1"), tmp_path, on_step=start_a_second_run)
    assert seen == [1]
    for change, key in (
        ("seed=1", "seed 0 -> 1"),
        ("bc.lr=0.001", "bc.lr 0.0003 -> 0.001"),
        ("data.val_fraction=0.5", "data.val_fraction 0.25 -> 0.5"),
        (f"env.name={tmp_path / 'other.hdf5'}", "env.name"),
    ):
        with pytest.raises(TtrlError, match="cannot resume") as err:
            train_baseline(tiny_cfg(tiny_hopper, "steps=2", change), tmp_path)
        assert key in str(err.value) and "\n" not in str(err.value)
    config = {**load_bundle(tmp_path)["config"], "algo": "iql", "iql": {}}  # a second algorithm
    with pytest.raises(TtrlError, match="algo 'bc' -> 'iql'"):
        resume_bundle(config, tmp_path)
    # a longer budget, other intervals and evaluation settings are fine
    assert train_baseline(tiny_cfg(tiny_hopper, "steps=3", "log_interval=1"), tmp_path)["step"] == 3


def constant_action_dataset(name: str, path: Path, action: np.ndarray) -> str:
    """``name``'s transitions with every action replaced by ``action``, as a D4RL HDF5 file."""
    transitions = load_transitions(resolve_dataset(name))
    fields = {f.name: getattr(transitions, f.name) for f in dataclasses.fields(transitions)}
    fields["actions"] = np.tile(action, (len(transitions), 1)).astype(np.float32)
    return str(write_d4rl_hdf5(path, Transitions(**fields)))


def test_bc_on_one_repeated_action_evaluates_acting_with_it(tiny_hopper, tmp_path):
    target = np.array([0.3, -0.5, 0.9], dtype=np.float32)
    dataset = constant_action_dataset(tiny_hopper, tmp_path / "hopper_constant.hdf5", target)
    run_dir = tmp_path / "run"
    cfg = tiny_cfg(dataset, "steps=5", "evaluate.n_episodes=2", "evaluate.max_episode_steps=6")
    results = train_baseline(cfg, run_dir)["results"]
    assert results.complete and [e.seed for e in results.episodes] == [0, 1]
    written = json.loads((run_dir / "plan" / "final" / "results.json").read_text())
    assert written["agent"] == "bc" and written["dataset"] == dataset
    # the same episodes again, watching what the policy sends to the env
    policy = BCPolicy.load(run_dir / "checkpoints" / "last.safetensors")
    sent = []

    def recording_env(env_id, max_episode_steps, render):
        env = make_env(env_id, max_episode_steps, render)
        step = env.step
        env.step = lambda action: sent.append(np.array(action)) or step(action)
        return env

    again = evaluate_policy(
        policy.act,
        evaluation_spec(dataset),
        11,
        3,
        n_episodes=2,
        max_episode_steps=6,
        env_factory=recording_env,
        progress=False,
    )
    assert len(sent) == sum(e.length for e in again.episodes) > 0
    np.testing.assert_allclose(np.stack(sent), np.tile(target, (len(sent), 1)), atol=1e-6)
    assert [e["return"] for e in written["episodes"]] == [e.total_return for e in again.episodes]


class SolidFrames(gymnasium.Wrapper):
    """Renders black frames, so the video path runs without OpenGL."""

    render_mode = "rgb_array"

    def render(self):
        return np.zeros((32, 48, 3), dtype=np.uint8)


def test_rollouts_record_episode_zero_and_stop_when_asked(tiny_hopper, tmp_path):
    spec = evaluation_spec(tiny_hopper)

    def factory(env_id, max_episode_steps, render):
        env = make_env(env_id, max_episode_steps)
        return SolidFrames(env) if render else env

    zeros = lambda obs: np.zeros((len(obs), 3), dtype=np.float32)  # noqa: E731
    video = tmp_path / "episode0.mp4"
    results = evaluate_policy(
        zeros,
        spec,
        11,
        3,
        n_episodes=2,
        max_episode_steps=4,
        video_path=video,
        env_factory=factory,
        progress=False,
    )
    assert results.complete and results.video_path == video and video.stat().st_size > 0
    assert [(e.episode, e.seed, e.length) for e in results.episodes] == [(0, 0, 4), (1, 1, 4)]
    assert results.timing["decisions"] == 8
    calls = []
    stopped = evaluate_policy(
        zeros,
        spec,
        11,
        3,
        n_episodes=2,
        max_episode_steps=4,
        video_path=tmp_path / "x.mp4",
        env_factory=factory,
        progress=False,
        should_stop=lambda: calls.append(1) or len(calls) > 2,
    )
    assert not stopped.complete and stopped.episodes == [] and not (tmp_path / "x.mp4").exists()
    with pytest.raises(TtrlError, match="observation dim 11 and action dim 3 but"):
        evaluate_policy(zeros, spec, 17, 6, n_episodes=1, progress=False)


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/train_baseline.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_script_end_to_end_and_the_report_tells_bc_from_tt(tiny_hopper, tmp_path):
    run_dir = tmp_path / "run"
    result = run_script(
        *TINY,
        "algo=bc",
        f"env={tiny_hopper}",
        "seed=0",
        "steps=4",
        "evaluate.n_episodes=2",
        "evaluate.max_episode_steps=5",
        f"run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bc: hopper-random (Hopper-v5): 2 episodes, score" in result.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "curves.png").is_file()
    bundle = load_bundle(run_dir)
    assert bundle["baseline"] == "BCPolicy" and bundle["config"]["algo"] == "bc"
    trainer = bundle["trainer"]
    assert trainer["step"] == 4 and trainer["stepper"]["optimizer"]["state"]
    assert {"torch", "numpy", "python", "sampler"} <= trainer["rng"].keys()
    results_dir = run_dir / "plan" / "final"
    assert (results_dir / "results.csv").read_text().startswith("episode,seed,return")
    scores = json.loads((results_dir / "results.json").read_text())["aggregates"]
    assert scores["n_episodes"] == 2 and scores["normalized_score_se"] is not None
    # beside a transformer's results of the same dataset, the table keeps the two apart
    tt = tmp_path / "tt" / "plan" / "final" / "results.json"
    tt.parent.mkdir(parents=True)
    tt.write_text(json.dumps({"dataset": "hopper-random", "episodes": [{"normalized_score": 1.0}]}))
    rows = summarize([load_evaluation(tt), load_evaluation(results_dir / "results.json")])
    assert [(r.label, r.n_episodes) for r in rows] == [
        ("hopper-random", 1),
        ("hopper-random [bc]", 2),
    ]
    assert "| hopper-random [bc] | 1 (0) | 2 |" in to_markdown(rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["algo=cql"], "unknown algo 'cql'; choose one of bc, gcbc, iql, waypoint"),
        (["env=hopper-medium"], "python scripts/make_dataset.py env=hopper-medium"),
        (["steps=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    ],
)
def test_bad_input_is_one_error_line(minari_root, tmp_path, args, message):
    result = run_script("logger=disabled", f"run_dir={tmp_path / 'run'}", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and message in lines[0]


def test_planning_a_baseline_run_says_what_it_is(tmp_path):
    from ttrl.baselines import BCPolicy
    from ttrl.checkpoint import checkpoint_path
    from ttrl.evaluation.loading import load_run

    BCPolicy(3, 2).save(checkpoint_path(tmp_path, "last"))
    with pytest.raises(TtrlError, match="is a BCPolicy baseline, not a Trajectory Transformer"):
        load_run(tmp_path)
