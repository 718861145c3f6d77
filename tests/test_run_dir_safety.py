"""Run dirs are never shared silently, resumes never change what was trained, faults lose nothing."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttrl.checkpoint import load_bundle, save_bundle
from ttrl.config import compose_config
from ttrl.errors import TtrlError
from ttrl.io import atomic_write, atomic_write_json, current_umask
from ttrl.locking import exclusive_lock, hold_run_dir
from ttrl.training import train
from ttrl.training.logger import read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model=tiny",
    "logger=disabled",
    "device=cpu",
    "trainer.batch_size=8",
    "trainer.log_interval=1",
    "trainer.eval_interval=4",
    "trainer.val_batches=2",
    "trainer.progress=false",
    "data.val_fraction=0.25",
    "env=halfcheetah-random",
]


def script_env() -> dict[str, str]:
    """The test's environment (its MINARI_DATASETS_PATH too) with one thread and no W&B."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def tiny_cfg(*overrides: str):
    return compose_config(overrides=[*TINY, *overrides])


def start_training(run_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "scripts/train.py", *TINY, f"run_dir={run_dir}", *overrides],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=script_env(),
    )


def run_training(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/train.py", *TINY, f"run_dir={run_dir}", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=script_env(),
    )


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.is_file(), "training never saved a checkpoint"


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# ---------------------------------------------------------------------------------- locks
def test_a_second_training_in_the_same_run_dir_fails_naming_the_first(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    first = start_training(run_dir, "trainer.max_steps=1000000", "trainer.save_interval=1")
    try:
        wait_for(run_dir / "checkpoints" / "last.safetensors", first)
        hydra_before = (run_dir / ".hydra" / "overrides.yaml").read_text()
        second = run_training(run_dir, "trainer.max_steps=1000000", "seed=1")
        line = one_error_line(second)
        assert f"process {first.pid}" in line and "in use" in line and "run_dir" in line
        assert (run_dir / ".hydra" / "overrides.yaml").read_text() == hydra_before
    finally:
        first.kill()  # SIGKILL: no clean-up at all, as after a crash or an OOM kill
        first.communicate(timeout=60)
    # the dead process's lock does not block the next run, which resumes its checkpoint
    step = load_bundle(run_dir)["trainer"]["step"]
    metrics = train(tiny_cfg(f"trainer.max_steps={step + 2}"), run_dir)
    assert metrics["step"] == step + 2
    logged = [m["step"] for m in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in m]
    assert logged == sorted(set(logged)), "a step was logged twice"


def test_exclusive_lock_names_its_holder_and_is_released_on_exit(tmp_path):
    lock = tmp_path / "x.lock"
    code = (
        "import sys, time; from ttrl.locking import exclusive_lock\n"
        f"with exclusive_lock({str(lock)!r}, 'x', 'wait'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        expected = rf"x is in use by process {holder.pid} on .*; wait"
        with pytest.raises(TtrlError, match=expected), exclusive_lock(lock, "x", "wait"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(lock, "x", "wait"):  # the kernel dropped the dead holder's lock
        pass


def test_run_dir_lock_is_held_while_training(tiny_dataset, tmp_path):
    seen = []

    def try_to_share(step: int) -> None:
        with pytest.raises(TtrlError, match="in use by process"), hold_run_dir(tmp_path):
            pass
        seen.append(step)

    train(tiny_cfg("trainer.max_steps=1"), tmp_path, on_step=try_to_share)
    assert seen == [1]


# ---------------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    "change",
    [
        "model.n_embd=32",
        "trainer.learning_rate=0.001",
        "trainer.warmup_epochs=2.0",
        "seed=5",
        "discretizer.kind=uniform",
        "data.discount=0.9",
    ],
)
def test_resuming_with_changed_settings_names_them_and_keeps_the_checkpoint(
    tiny_dataset, tmp_path, change
):
    train(tiny_cfg("trainer.max_steps=2"), tmp_path)
    before = (tmp_path / "checkpoints" / "last.safetensors").read_bytes()
    key = change.split("=")[0]
    with pytest.raises(TtrlError, match=rf"cannot resume .*{key} .* -> ") as info:
        train(tiny_cfg("trainer.max_steps=3", change), tmp_path)
    assert "\n" not in str(info.value) and "new run_dir" in str(info.value)
    assert (tmp_path / "checkpoints" / "last.safetensors").read_bytes() == before


def test_resuming_with_a_longer_budget_and_other_intervals_is_allowed(tiny_dataset, tmp_path):
    train(tiny_cfg("trainer.max_steps=2"), tmp_path)
    metrics = train(tiny_cfg("trainer.max_steps=4", "trainer.log_interval=2"), tmp_path)
    assert metrics["step"] == 4
    bundle = load_bundle(tmp_path)
    assert bundle["config"]["trainer"]["max_steps"] == 4  # what is recorded is what was done


def test_a_refused_resume_rewrites_nothing_in_the_run_dir(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    assert run_training(run_dir, "trainer.max_steps=2").returncode == 0
    record = {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()}
    assert "trainer.max_steps=2" in record["overrides.yaml"]
    line = one_error_line(run_training(run_dir, "trainer.max_steps=3", "model.n_layer=2"))
    assert "model.n_layer 1 -> 2" in line
    assert {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()} == record


def test_sequence_length_one_is_refused_at_training_time(tiny_dataset, tmp_path):
    with pytest.raises(TtrlError, match=r"data.sequence_length=1 must be >= 2"):
        train(tiny_cfg("trainer.max_steps=1", "data.sequence_length=1"), tmp_path)


# ---------------------------------------------------------------------------------- faults
def test_ctrl_c_saves_and_exits_with_130(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "trainer.max_steps=1000000", "trainer.save_interval=50")
    try:
        wait_for(run_dir / "metrics.jsonl", process)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output[-2000:]
    assert "received SIGINT" in output and "to resume" in output and "Traceback" not in output
    assert load_bundle(run_dir)["trainer"]["step"] >= 1


def test_stale_temporary_files_are_removed_on_the_next_start(tiny_dataset, tmp_path):
    train(tiny_cfg("trainer.max_steps=1"), tmp_path)
    stale = tmp_path / "checkpoints" / ".last.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(tiny_cfg("trainer.max_steps=2"), tmp_path)
    assert not stale.exists()


def test_out_of_space_is_one_line_and_keeps_the_earlier_file(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"old": True})

    def fill_disk(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(TtrlError, match=r"no space left .* writing results.json") as info:
        atomic_write(target, fill_disk)
    assert "\n" not in str(info.value)
    assert target.read_text().strip() == '{\n  "old": true\n}'.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@pytest.fixture
def small_filesystem(tmp_path):
    """A function mounting a tmpfs of a given size (needs root and mount rights; else skipped)."""
    mounted: list[Path] = []

    def mount(size_kib: int) -> Path:
        mount_point = tmp_path / "small"
        mount_point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount_point)],
            capture_output=True,
        )
        if proc.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_during_training_keeps_the_last_checkpoint(
    tiny_dataset, tmp_path, small_filesystem
):
    train(tiny_cfg("trainer.max_steps=2"), tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    size_kib = last.stat().st_size // 1024 + 1
    # room for the copied checkpoint and half another one
    run_dir = small_filesystem(size_kib * 3 // 2 + 16) / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(last, run_dir / "checkpoints" / "last.safetensors")
    with pytest.raises(TtrlError, match=r"no space left on the device .*\.safetensors") as info:
        train(tiny_cfg("trainer.max_steps=6", "trainer.save_interval=1"), run_dir)
    assert "\n" not in str(info.value)
    assert load_bundle(run_dir)["trainer"]["step"] == 2  # the earlier checkpoint is intact
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        json_file = atomic_write_json(tmp_path / "r.json", {})
        bundle = save_bundle(tmp_path / "b.safetensors", model={})
    finally:
        os.umask(old)
    for path in (json_file, bundle):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_model_too_short_to_plan_with_gets_advice_that_can_be_followed():
    from ttrl.layout import TransitionLayout
    from ttrl.planning.config import PlannerConfig

    layout = TransitionLayout(observation_dim=17, action_dim=6)
    config = PlannerConfig(window_transitions=5)
    with pytest.raises(TtrlError, match=r"train it with data.sequence_length >= 2"):
        config.check_fits_model(block_size=layout.block_size(1), layout=layout)
    with pytest.raises(TtrlError, match=r"lower window_transitions to at most 3"):
        config.check_fits_model(block_size=layout.block_size(3), layout=layout)


def test_an_evaluation_of_zero_steps_is_refused_before_training(tiny_dataset, tmp_path):
    with pytest.raises(TtrlError, match=r"evaluate.max_episode_steps=0 must be >= 1"):
        train(tiny_cfg("trainer.max_steps=1", "evaluate.max_episode_steps=0"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
