"""scripts/plan.py when things go wrong: bad values, a stop mid-evaluation, reruns, a reused name.

Every evaluation here is tiny: a random one-layer model, horizon 2, beam 4, a few dozen steps.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium
import pytest
import torch
from omegaconf import OmegaConf

import early_end_env
from test_evaluation import fit_discretizer, save_tiny_run, tiny_model
from test_plan_script import ROOT, plan_in_process, run_plan_script
from ttrl.config import compose_config
from ttrl.errors import TtrlError
from ttrl.evaluation import evaluate_training_run, validate_plan_config
from ttrl.evaluation.runner import stop_requests
from ttrl.evaluation.store import EPISODES_DIR, SETTINGS_FILE
from ttrl.evaluation.table import load_evaluation

TINY = ("planner.horizon=2", "planner.beam_width=4", "device=cpu", "progress=false")
EPISODES = ("n_episodes=3", "max_episode_steps=30", "seed=0")
# Episode 1 terminates after 4 steps; episodes 0 and 2 run all 30.
EARLY = {"TTRL_TEST_EARLY_SEED": "1", "TTRL_TEST_EARLY_STEPS": "4"}
SUBPROCESS_TIMEOUT = 300


@pytest.fixture
def tiny_run(tmp_path, tiny_dataset):
    """A training run of a tiny random model on the tiny halfcheetah dataset."""
    run_dir = tmp_path / "run"
    planner = {"horizon": 2, "beam_width": 4}  # for the evaluation after training
    save_tiny_run(run_dir, tiny_dataset, tiny_model(), fit_discretizer(tiny_dataset), planner)
    return run_dir


@pytest.fixture
def early_end(monkeypatch):
    """In this process, the episode reset with seed 1 ends after 4 steps."""
    for key, value in EARLY.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(gymnasium, "make", early_end_env.make)


def plan_command(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "plan.py"), *overrides]


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a plan.py subprocess whose envs end early as in ``early_end``."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(early_end_env.SITECUSTOMIZE)
    path = os.pathsep.join([str(shim), str(ROOT / "tests")])
    # as many threads as this process uses, so float sums come out the same as in-process runs
    threads = str(torch.get_num_threads())
    return {**os.environ, **EARLY, **extra, "PYTHONPATH": path, "OMP_NUM_THREADS": threads}


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"plan.py ended before the condition held: {process.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for plan.py")
        time.sleep(0.05)


def episode_files(out_dir: Path) -> list[Path]:
    return sorted((out_dir / EPISODES_DIR).glob("episode*.json"))


def runs_recorded(out_dir: Path) -> list[dict]:
    return json.loads((out_dir / EPISODES_DIR / SETTINGS_FILE).read_text())["runs"]


def same_results(a: Path, b: Path) -> None:
    """The results files of two evaluations hold the same episodes, to the last bit."""
    first, second = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert first["complete"] is second["complete"] is True
    assert first["episodes"] == second["episodes"]
    assert first["aggregates"] == second["aggregates"]
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("seed=abc", ["seed=abc", "Integer"]),
        ("max_episode_steps=0", ["max_episode_steps=0", ">= 1"]),
    ],
)
def test_wrong_type_or_value_is_one_line_and_exit_2(tmp_path, override, words):
    not_a_run = tmp_path / "not_a_run"  # the config is checked before anything is loaded
    not_a_run.mkdir()
    proc = run_plan_script(tmp_path, f"run_dir={not_a_run}", override, "logger.mode=disabled")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_episodes": 0}, "n_episodes=0 must be an integer >= 1"),
        ({"max_episode_steps": -5}, "max_episode_steps=-5 must be an integer >= 1, or null"),
        ({"seed": -1}, "seed=-1 must be an integer >= 0"),
        ({"which": "worst"}, "which='worst' is not one of last, best"),
        ({"device": "gpu"}, "device='gpu' is not one of auto, cpu, cuda"),
        ({"logger": {"mode": "on"}}, "logger.mode='on' is not one of null, online, offline"),
        ({"name": ""}, "name='' must name a folder"),
    ],
)
def test_impossible_plan_values_are_named(change, message):
    cfg = OmegaConf.to_container(compose_config("plan", ["name=x"]), resolve=True)
    validate_plan_config(cfg)  # the defaults are fine
    with pytest.raises(TtrlError, match="bad plan config") as err:
        validate_plan_config({**cfg, **change})
    assert message in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- stop and resume


def test_sigterm_keeps_the_finished_episode_and_the_printed_command_plans_the_rest(
    tiny_run, tmp_path, early_end
):
    args = (f"run_dir={tiny_run}", *TINY, *EPISODES, "logger.mode=disabled", "name=stopped")
    out_dir = tiny_run / "plan" / "stopped"
    # after episode 1 ended, each step of the others takes 0.25 s: time to send the signal
    slow = subprocess_env(tmp_path, TTRL_TEST_STEP_DELAY="0.25")
    process = subprocess.Popen(
        plan_command(*args), cwd=tmp_path, env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: bool(episode_files(out_dir)), process, SUBPROCESS_TIMEOUT)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = stderr.decode()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1 and "kept 1 of 3 episodes" in stopped[0], stderr[-3000:]
    partial = json.loads((out_dir / "results.json").read_text())
    assert partial["complete"] is False and [e["episode"] for e in partial["episodes"]] == [1]
    (kept,) = episode_files(out_dir)
    written = kept.stat().st_mtime_ns

    command = shlex.split(stopped[0].split("`")[1])  # the line says what to run to go on
    assert command[0] == "python" and "name=stopped" in command
    resumed = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=tmp_path,
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "3 episodes" in resumed.stdout.strip().splitlines()[-1]
    assert kept.stat().st_mtime_ns == written  # episode 1 was not planned again
    assert runs_recorded(out_dir)[-1]["decisions"] == 2 * 30  # only episodes 0 and 2

    full = tmp_path / "uninterrupted"
    plan_in_process(full, f"run_dir={tiny_run}", *TINY, *EPISODES)
    same_results(out_dir, full)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_is_recorded_a_second_ctrl_c_stops_at_once_and_handlers_come_back(first):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with stop_requests() as stop:
        signal.raise_signal(first)
        assert stop["signum"] == first  # recorded: the rollout stops after its step
        signal.raise_signal(signal.SIGTERM)
        assert stop["signum"] == first  # a second SIGTERM changes nothing
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_training_evaluation_stopped_by_sigterm_resumes_on_the_next_start(
    tiny_run, tmp_path, early_end, monkeypatch
):
    def train_config(name: str) -> dict:
        overrides = [
            "evaluate.n_episodes=3",
            "evaluate.max_episode_steps=12",
            f"evaluate.name={name}",
            "device=cpu",
            "trainer.progress=false",
        ]
        return OmegaConf.to_container(compose_config(overrides=overrides), resolve=True)

    out_dir = tiny_run / "plan" / "final"
    monkeypatch.setenv("TTRL_TEST_SELF_SIGNAL", str(int(signal.SIGTERM)))  # as episode 1 ends
    with pytest.raises(SystemExit) as stopped:
        evaluate_training_run(train_config("final"), tiny_run, step=0)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert [p.name for p in episode_files(out_dir)] == ["episode1.json"]
    monkeypatch.delenv("TTRL_TEST_SELF_SIGNAL")
    results = evaluate_training_run(train_config("final"), tiny_run, step=0)
    assert results is not None and results.complete and len(results.episodes) == 3
    assert runs_recorded(out_dir)[-1]["decisions"] == 2 * 12  # episodes 0 and 2 only
    assert evaluate_training_run(train_config("final"), tiny_run, step=0) is None  # done
    evaluate_training_run(train_config("fresh"), tiny_run, step=0)
    same_results(out_dir, tiny_run / "plan" / "fresh")


# ----------------------------------------------------------------------------- the same name again


def test_rerun_of_a_complete_evaluation_plans_nothing(tiny_run, tmp_path, capsys):
    args = (f"run_dir={tiny_run}", *TINY, "n_episodes=2", "max_episode_steps=3")
    first = plan_in_process(tmp_path / "out", *args)
    written = (tmp_path / "out" / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    again = plan_in_process(tmp_path / "out", *args)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nothing planned: ") and "2 episodes" in lines[0]
    assert (tmp_path / "out" / "results.json").stat().st_mtime_ns == written
    assert again.episodes == first.episodes and len(runs_recorded(tmp_path / "out")) == 1


def test_same_name_with_other_settings_is_refused_and_overwrite_replaces(tiny_run, tmp_path):
    out_dir = tmp_path / "out"
    args = (f"run_dir={tiny_run}", *TINY, "n_episodes=2", "max_episode_steps=3")
    plan_in_process(out_dir, *args, "seed=0")
    before = (out_dir / "results.json").read_bytes()
    with pytest.raises(TtrlError) as err:
        plan_in_process(out_dir, *args, "seed=1", "planner.horizon=1")
    message = str(err.value)
    assert "\n" not in message and message.endswith("pass name=<new> or overwrite=true")
    assert "seed: 0 there, 1 now" in message and "planner.horizon: 2 there, 1 now" in message
    # a newer checkpoint of the run (it trained on) is other settings too
    save_tiny_run(
        tiny_run, "halfcheetah-random", tiny_model(), fit_discretizer("halfcheetah-random"), step=7
    )
    with pytest.raises(TtrlError, match="checkpoint_step: 0 there, 7 now"):
        plan_in_process(out_dir, *args, "seed=0")
    assert (out_dir / "results.json").read_bytes() == before  # nothing was touched

    results = plan_in_process(out_dir, *args, "seed=1", "overwrite=true")
    saved = json.loads((out_dir / "results.json").read_text())
    assert [e["seed"] for e in saved["episodes"]] == [1, 2] == [e.seed for e in results.episodes]
    assert saved["config"]["evaluation"]["checkpoint_step"] == 7
    assert len(runs_recorded(out_dir)) == 1  # the old evaluation's record went with it


def test_results_whose_settings_were_not_recorded_are_not_overwritten(tiny_run, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "results.json").write_text('{"episodes": []}')  # as an older ttrl wrote it
    args = (f"run_dir={tiny_run}", *TINY, "n_episodes=1", "max_episode_steps=2")
    with pytest.raises(TtrlError, match=r"settings were not recorded.*overwrite=true"):
        plan_in_process(out_dir, *args)
    assert (out_dir / "results.json").read_text() == '{"episodes": []}'
    plan_in_process(out_dir, *args, "overwrite=true")
    assert json.loads((out_dir / "results.json").read_text())["complete"] is True


def test_partial_results_are_left_out_of_the_report_table(tmp_path):
    results = tmp_path / "results.json"
    episodes = [{"normalized_score": 1.0}]
    results.write_text(
        json.dumps(
            {
                "dataset": "hopper-medium",
                "complete": False,
                "n_episodes_total": 3,
                "episodes": episodes,
            }
        )
    )
    with pytest.warns(UserWarning, match="partial results"):
        assert load_evaluation(results) is None
