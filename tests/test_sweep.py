"""Multiruns of scripts/train.py: run dirs, evaluation after training, failed jobs, W&B, submitit, requeue."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from test_train import TINY  # a tiny model and budget: seconds per job on one core
from ttrl.checkpoint import load_bundle
from ttrl.config import compose_config
from ttrl.errors import TtrlError
from ttrl.evaluation import evaluate_training_run
from ttrl.planning.config import migrate_controller_settings
from ttrl.training import hand_over_stop_signal, preempted_exit_code, train
from ttrl.training.logger import config_group

REPO = Path(__file__).resolve().parents[1]
# Evaluation after training: two short episodes with a tiny beam.
TINY_EVAL = [
    "evaluate.n_episodes=2",
    "evaluate.max_episode_steps=3",
    "planner.horizon=2",
    "planner.beam_width=2",
]


TRAIN_SCRIPT = [sys.executable, str(REPO / "scripts" / "train.py")]


def run_train(cwd: Path, *overrides: str, path: str | None = None) -> subprocess.CompletedProcess:
    """scripts/train.py in a subprocess on one thread (``path``: another PATH)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path or os.environ["PATH"]}
    return subprocess.run(
        [*TRAIN_SCRIPT, *overrides], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def test_multirun_gives_each_job_a_run_dir_and_an_evaluation_and_report_reads_them(
    tiny_dataset, tiny_hopper, tmp_path
):
    sweep = tmp_path / "sweep"
    # walker2d-random has no local data: that job fails first, the two others still run
    proc = run_train(
        tmp_path,
        "-m",
        "env=walker2d-random,halfcheetah-random,hopper-random",
        "trainer.max_steps=2",
        *TINY,
        *TINY_EVAL,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: a multirun job failed: dataset")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0-walker2d-random-s0", "1-halfcheetah-random-s0", "2-hopper-random-s0"]
    assert not (sweep / jobs[0] / "checkpoints").exists()
    for job, dataset in [(jobs[1], "halfcheetah-random"), (jobs[2], "hopper-random")]:
        run_dir = sweep / job
        assert load_bundle(run_dir)["trainer"]["step"] == 2
        results = json.loads((run_dir / "plan" / "final" / "results.json").read_text())
        assert results["dataset"] == dataset and len(results["episodes"]) == 2
        assert results["config"]["checkpoint"] == str(run_dir / "checkpoints" / "last.safetensors")
        assert results["config"]["planner"]["beam_width"] == 2
        assert results["config"]["plan"]["after_training"]["step"] == 2
        assert all(1 <= e["length"] <= 3 for e in results["episodes"])  # hopper may fall

    report = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "report.py"), str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows] == ["halfcheetah-random", "hopper-random"]
    assert all(r["n_seeds"] == "1" and r["n_episodes"] == "2" for r in rows)


def test_runs_differing_only_in_seed_share_a_wandb_group():
    def group(*overrides: str) -> str:
        return config_group(OmegaConf.to_container(compose_config(overrides=list(overrides))))

    paper = "experiment=paper/hopper-medium"
    assert group(paper, "seed=0") == group(paper, "seed=1") == group(paper, "seed=2")
    assert group(paper).startswith("hopper-medium-")
    assert group(paper) != group("experiment=paper/walker2d-medium")
    # evaluating after training does not change what is trained: the plain run joins the group
    assert group(paper) == group("env=hopper-medium") == group(paper, "evaluate.n_episodes=10")
    assert group(paper) != group(paper, "planner.horizon=5")
    assert group(paper) != group(paper, "controller.plan_freq=2")


def test_a_run_saved_before_the_controller_section_keeps_its_wandb_group():
    """Seeds and evaluations of a run saved with the controller's keys under ``planner`` (an older
    ttrl) land in the group that run logged to."""
    config = OmegaConf.to_container(compose_config(overrides=["experiment=paper/hopper-medium"]))
    older = {k: v for k, v in config.items() if k != "controller"}
    older["planner"] = {**config["planner"], **config["controller"]}
    assert config_group(config) == config_group(older)
    assert config_group(migrate_controller_settings(older)) == config_group(older)


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (REPO / "configs/experiment/paper").glob("*-*.yaml"))
)
def test_paper_experiments_select_their_dataset_and_plan_five_episodes(experiment):
    cfg = compose_config(overrides=[f"experiment=paper/{experiment}"])
    plain = compose_config(overrides=[f"env={experiment}"])
    assert cfg.env.name == experiment and cfg.evaluate.n_episodes == 5
    # nothing else differs from training on the dataset directly (the env file holds its settings)
    assert cfg.planner == plain.planner and cfg.env == plain.env and cfg.trainer == plain.trainer
    assert list(cfg.logger.tags) == ["paper"]


def test_paper_sweep_lists_all_nine_datasets_and_three_seeds():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/sweeper=paper"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    experiments = params.experiment.split(",")
    expected = {
        f"paper/{env}-{level}"
        for env in ("halfcheetah", "hopper", "walker2d")
        for level in ("medium", "medium-replay", "medium-expert")
    }
    assert set(experiments) == expected and len(experiments) == 9
    assert params.seed == "0,1,2"


FAKE_SBATCH = """#!/bin/bash
cp "${@: -1}" "$(dirname "$0")/sbatch_script.sh"  # keep the script, then refuse the submission
echo "fake sbatch: not a cluster" >&2
exit 1
"""


def test_slurm_launcher_submits_one_gpu_jobs_that_requeue(tmp_path):
    """The sbatch script of a 2-job sweep, caught by a fake sbatch (srun only has to exist)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in [("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 1\n")]:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    proc = run_train(
        tmp_path,
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        path=f"{bin_dir}:{os.environ['PATH']}",
    )
    assert proc.returncode != 0 and "fake sbatch: not a cluster" in proc.stderr
    lines = set((bin_dir / "sbatch_script.sh").read_text().splitlines())
    for line in [
        "#SBATCH --array=0-1%2",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=720",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
    ]:
        assert line in lines


def test_usr2_saves_then_hands_over_to_the_launchers_handler(tiny_dataset, tmp_path):
    """submitit requeues from its SIGUSR2 handler: training saves first, then calls it."""
    cfg = compose_config(overrides=[*TINY, "env.name=halfcheetah-random", "trainer.max_steps=50"])
    calls = []

    def launcher_handler(signum, frame):
        calls.append(signum)
        sys.exit(-1)  # what submitit does after requeueing

    previous = signal.signal(signal.SIGUSR2, launcher_handler)
    try:
        metrics = train(
            cfg, tmp_path, on_step=lambda s: s == 3 and os.kill(os.getpid(), signal.SIGUSR2)
        )
        assert calls == []  # training caught the signal itself ...
        assert metrics["signal"] == signal.SIGUSR2 and load_bundle(tmp_path)["trainer"]["step"] == 3
        with pytest.raises(SystemExit) as exit_info:
            hand_over_stop_signal(metrics["signal"])  # ... and hands it over once saved
        assert calls == [signal.SIGUSR2] and exit_info.value.code == -1
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # no launcher: exit as if killed
        with pytest.raises(SystemExit) as exit_info:
            hand_over_stop_signal(signal.SIGUSR2)
        assert exit_info.value.code == preempted_exit_code(signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_failed_job_finishes_its_wandb_run_and_the_next_job_gets_its_own(
    tiny_dataset, tmp_path, monkeypatch
):
    """What Hydra's basic launcher does: jobs one after another in one process."""
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    offline = [*TINY, "env.name=halfcheetah-random", "logger=offline", "trainer.max_steps=4"]

    def fail(step: int) -> None:
        raise RuntimeError("job crashed")

    with pytest.raises(RuntimeError, match="job crashed"):
        train(compose_config(overrides=[*offline, "seed=0"]), tmp_path / "a", on_step=fail)
    assert wandb.run is None  # finished although the job failed
    metrics = train(compose_config(overrides=[*offline, "seed=1"]), tmp_path / "b")
    assert metrics["step"] == 4 and wandb.run is None
    runs_a = list((tmp_path / "a" / "wandb").glob("offline-run-*"))
    runs_b = list((tmp_path / "b" / "wandb").glob("offline-run-*"))
    assert len(runs_a) == 1 and len(runs_b) == 1
    run_id = load_bundle(tmp_path / "b")["trainer"]["wandb_run_id"]
    assert run_id in runs_b[0].name and run_id not in runs_a[0].name


def submitit_local_sweep(cwd: Path, sweep: Path, *overrides: str) -> subprocess.CompletedProcess:
    """One tiny job through hydra/launcher=local, the Slurm launcher's code path."""
    return run_train(
        cwd,
        "-m",
        "hydra/launcher=local",
        "env=halfcheetah-random",
        *TINY,
        *TINY_EVAL,
        *overrides,
        f"hydra.sweep.dir={sweep}",
    )


def test_submitit_local_job_runs_in_the_sweep_subdir(tiny_dataset, tmp_path):
    sweep = tmp_path / "sweep"
    proc = submitit_local_sweep(tmp_path, sweep, "trainer.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = sweep / "0-halfcheetah-random-s0"
    assert load_bundle(run_dir)["trainer"]["step"] == 2
    assert (run_dir / "plan" / "final" / "results.json").is_file()
    assert list((sweep / ".submitit").glob("*/*_0_result.pkl"))  # it really went through submitit


@pytest.mark.slow
def test_rerun_of_a_sweep_resumes_its_job_in_the_same_dir(tiny_dataset, tmp_path):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0-halfcheetah-random-s0"
    assert submitit_local_sweep(tmp_path, sweep, "trainer.max_steps=2").returncode == 0
    results = run_dir / "plan" / "final" / "results.json"
    again = submitit_local_sweep(tmp_path, sweep, "trainer.max_steps=4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.name for p in sweep.iterdir() if p.name[0].isdigit()] == [run_dir.name]
    assert "resumed from step 2" in (run_dir / "train.log").read_text()
    assert load_bundle(run_dir)["trainer"]["step"] == 4
    # trained on: planned again with the new checkpoint
    assert json.loads(results.read_text())["config"]["plan"]["after_training"]["step"] == 4
    written = results.stat().st_mtime_ns
    same = submitit_local_sweep(tmp_path, sweep, "trainer.max_steps=4")
    assert same.returncode == 0, same.stderr[-3000:]
    assert results.stat().st_mtime_ns == written  # nothing changed: the evaluation is kept


def test_evaluation_after_training_is_skipped_when_off_or_already_done(tmp_path):
    cfg = OmegaConf.to_container(compose_config(overrides=["evaluate.n_episodes=0"]), resolve=True)
    assert evaluate_training_run(cfg, tmp_path / "no-run", step=7) is None  # off: nothing loaded
    cfg["evaluate"]["n_episodes"] = 5
    done = {
        "step": 7,
        "evaluate": cfg["evaluate"],
        "planner": cfg["planner"],
        "controller": cfg["controller"],
    }
    results = tmp_path / "run" / "plan" / "final" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"config": {"plan": {"after_training": done}}}))
    assert evaluate_training_run(cfg, tmp_path / "run", step=7) is None  # same step and settings
    # as ttrl recorded it before the controller had its section: the same settings, still done
    older = {**done, "planner": {**cfg["planner"], **done["controller"]}}
    del older["controller"]
    results.write_text(json.dumps({"config": {"plan": {"after_training": older}}}))
    assert evaluate_training_run(cfg, tmp_path / "run", step=7) is None
    with pytest.raises(TtrlError, match="no checkpoint"):  # trained on: it plans again
        evaluate_training_run(cfg, tmp_path / "run", step=8)
    cfg["planner"]["horizon"] = 3
    with pytest.raises(TtrlError, match="no checkpoint"):  # other planner settings: again
        evaluate_training_run(cfg, tmp_path / "run", step=7)


def submitit_task_pids(folder: Path) -> list[int]:
    """Processes running a submitit task of the jobs under ``folder`` (from /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        args = [a.decode(errors="replace") for a in cmdline]
        if "submitit.core._submit" in args and any(str(folder) in a for a in args):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process in /proc")
def test_submitit_requeue_after_usr2_resumes_in_the_same_run_dir(tiny_dataset, tmp_path):
    """USR2 (Slurm's warning before the time limit): save, requeue, resume from last.safetensors, finish."""
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0-halfcheetah-random-s0"
    process = subprocess.Popen(
        [
            *TRAIN_SCRIPT,
            "-m",
            "hydra/launcher=local",
            "env=halfcheetah-random",
            *TINY,
            "trainer.max_steps=1000000",
            "trainer.save_interval=1",
            "trainer.max_minutes=0.1",  # the requeued attempt ends itself after 6 s
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while (
            not (run_dir / "checkpoints" / "last.safetensors").is_file()
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        pids = submitit_task_pids(sweep / ".submitit")
        assert len(pids) == 1, "the job's process was not found"
        os.kill(pids[0], signal.SIGUSR2)
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "received SIGUSR2" in log and "resumed from step" in log
    assert "time limit" in log  # the second attempt ran to its own end
    submitit_logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.*"))
    assert "Requeued job" in submitit_logs
    assert [p.name for p in sweep.iterdir() if p.name[0].isdigit()] == [run_dir.name]


def test_optuna_sweep_minimises_the_validation_loss(tiny_dataset, tmp_path):
    """hydra/sweeper=tune with 2 trials (needs the optuna extra: pip install -e ".[optuna]")."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    proc = run_train(
        tmp_path,
        "-m",
        "hydra/sweeper=tune",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "env=halfcheetah-random",
        "trainer.max_steps=2",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    losses = [
        load_bundle(sweep / f"{i}-halfcheetah-random-s0")["trainer"]["best_val_loss"]
        for i in (0, 1)
    ]
    assert best.best_value == pytest.approx(min(losses))
    assert set(best.best_params) == {
        "trainer.learning_rate",
        "trainer.weight_decay",
        "model.resid_pdrop",
    }
