"""Making datasets when things go wrong: bad options, two writers of one id, killed runs, a full disk."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections import namedtuple
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from test_data_collect import REPO, run_script
from ttrl.data import load_transitions
from ttrl.errors import TtrlError
from ttrl.locking import exclusive_lock
from ttrl.making import collect as collect_module
from ttrl.making import collect_dataset
from ttrl.making.collect import (
    LOCKS_DIR,
    STAGING_PREFIX,
    WriterCrashed,
    dataset_lock_path,
    dataset_writer,
)
from ttrl.making.recipes import make_level_dataset

DATASET_ID = "ttrl/hopper/random-v0"
DiskUsage = namedtuple("DiskUsage", "total used free")


def leftovers(root: Path) -> list[str]:
    """Hidden entries of a Minari root besides the lock folder (no staging may stay after a run)."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.name != LOCKS_DIR)


def only_locks(root: Path) -> bool:
    """Whether a Minari root holds nothing but the lock folder (no dataset, no staging)."""
    return [p.name for p in root.iterdir()] == [LOCKS_DIR]


def python(code: str, root: Path, **kwargs) -> subprocess.Popen:
    """A Python process running ``code`` with ``root`` as its Minari root."""
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, text=True, **kwargs
    )


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# --- 1. typed config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["seed=abc"], "Error merging override seed=abc: Value 'abc' of type 'str' could not be "),
        (["n_steps=abc"], "Error merging override n_steps=abc: Value 'abc' of type 'str' could "),
        (
            ["n_steps=0", "max_episode_steps=0"],
            "bad dataset options: n_steps=0 must be >= 1; max_episode_steps=0 must be null or >= 1",
        ),
    ],
)
def test_bad_options_are_one_error_line(minari_root, tmp_path, overrides, named):
    done = run_script(minari_root, tmp_path, "env=hopper-random", *overrides, "progress=false")
    assert done.returncode == 2, done.stderr
    assert named in only_line(done.stderr)
    assert list(minari_root.iterdir()) == []


# --- 2. one writer per dataset id ------------------------------------------------------------------


def test_a_second_run_fails_at_once_naming_the_first_whose_data_is_intact(minari_root, tmp_path):
    rng = np.random.default_rng(0)
    actions, second_runs = [], []

    def policy(_obs: np.ndarray) -> np.ndarray:
        if not second_runs:  # while this run holds the dataset, two more runs of it start
            for overwrite in ("false", "true"):
                second_runs.append(
                    run_script(
                        minari_root,
                        tmp_path,
                        "env=hopper-random",
                        "n_steps=50",
                        f"overwrite={overwrite}",
                        "progress=false",
                    )
                )
        actions.append(rng.uniform(-1, 1, size=3).astype(np.float32))
        return actions[-1]

    collect_dataset("hopper-random", n_steps=60, policy=policy, progress=False)
    holder = f"dataset {DATASET_ID} is in use by process {os.getpid()} on {socket.gethostname()} ("
    for done in second_runs:
        assert done.returncode == 2, done.stderr
        line = only_line(done.stderr)
        assert line.startswith(f"error: {holder}") and "; wait for that run to finish" in line
    data = load_transitions("hopper-random")
    np.testing.assert_array_equal(data.actions, np.stack(actions))
    assert leftovers(minari_root) == []


def test_existence_is_checked_again_once_the_lock_is_taken(minari_root, monkeypatch):
    real_lock = collect_module.exclusive_lock

    @contextmanager
    def lock_after_another_writer_finished(*args):
        monkeypatch.setattr(collect_module, "exclusive_lock", real_lock)
        collect_dataset("hopper-random", n_steps=30, seed=5, progress=False)  # the other writer
        with real_lock(*args) as path:
            yield path

    monkeypatch.setattr(collect_module, "exclusive_lock", lock_after_another_writer_finished)
    calls = []
    with pytest.raises(TtrlError, match="already exists"):
        collect_dataset("hopper-random", n_steps=50, policy=calls.append, progress=False)
    assert calls == []  # refused before collecting
    assert len(load_transitions("hopper-random")) == 30


def test_a_lock_left_by_a_killed_process_blocks_nothing(minari_root):
    killed = python(
        f"""
        import os, signal
        from ttrl.making.collect import dataset_writer
        with dataset_writer({DATASET_ID!r}):
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        minari_root,
    )
    assert killed.wait(timeout=60) == -signal.SIGKILL
    lock = dataset_lock_path(DATASET_ID, minari_root)
    assert f'"pid": {killed.pid},' in lock.read_text()  # left behind, naming the dead holder
    collect_dataset("hopper-random", n_steps=20, progress=False)
    assert len(load_transitions("hopper-random")) == 20
    assert leftovers(minari_root) == []


def test_the_dataset_lock_is_reentrant_within_a_process_only(minari_root):
    lock = dataset_lock_path(DATASET_ID, minari_root)
    with (
        dataset_writer(DATASET_ID),
        dataset_writer(DATASET_ID),  # nested writers of one id share the lock
        pytest.raises(TtrlError, match=f"in use by process {os.getpid()} "),
        exclusive_lock(lock, "dataset", "wait"),  # anyone else, even in this process, is refused
    ):
        pass
    with exclusive_lock(lock, "dataset", "wait"):
        pass  # released once the outer writer ends


# --- 3. a full disk --------------------------------------------------------------------------------


def fake_free_space(monkeypatch, free_mb: float) -> None:
    monkeypatch.setattr(
        shutil, "disk_usage", lambda _path: DiskUsage(2**40, 2**40, int(free_mb * 2**20))
    )


def test_too_little_free_space_is_refused_before_collecting(minari_root, monkeypatch):
    fake_free_space(monkeypatch, 1.0)

    def never(*_args, **_kwargs):
        raise AssertionError("collected although the disk is too small")

    monkeypatch.setattr(collect_module, "collect_episodes", never)
    with pytest.raises(TtrlError) as err:
        make_level_dataset("hopper-random", n_steps=5000, progress=False)
    message = str(err.value)
    assert "\n" not in message
    need = re.fullmatch(
        rf"{DATASET_ID}: need about (\d+\.\d) MB in {minari_root}, only 1\.0 MB free; free space "
        r"or set MINARI_DATASETS_PATH",
        message,
    )
    assert need and 1.0 < float(need.group(1)) < 3.0, message
    assert only_locks(minari_root)


def test_the_check_before_writing_counts_the_real_episodes(minari_root, monkeypatch):
    # 2000 random hopper steps: the check before collecting assumes 2 episodes (1.3 MB); they are
    # about 100 short ones, 16 KiB each, which only the check before writing knows
    fake_free_space(monkeypatch, 2.0)
    with pytest.raises(TtrlError, match=r"only 2\.0 MB free") as err:
        collect_dataset("hopper-random", n_steps=2000, progress=False)
    assert float(re.search(r"need about (\S+) MB", str(err.value)).group(1)) > 2.0
    assert only_locks(minari_root)


def full_disk_oserror(staging: Path, *_args) -> None:
    partial = staging / DATASET_ID / "data" / "main_data.hdf5"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 4096)
    raise OSError(errno.ENOSPC, "No space left on device", str(partial))


def full_disk_h5py(staging: Path, *_args) -> None:
    partial = staging / DATASET_ID / "data" / "main_data.hdf5"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 4096)
    # what h5py 3.16 raised here on a full tmpfs
    raise ValueError(
        f"Unable to synchronously create group (file write failed: time = Tue Dec  1 2026\n, "
        f"filename = '{partial}', file descriptor = 4, errno = 28, error message = 'No space left "
        f"on device', buf = 0x55, total write size = 7800, bytes this sub-write = 7800)"
    )


@pytest.mark.parametrize("writer", [full_disk_oserror, full_disk_h5py])
def test_a_disk_that_fills_while_writing_is_one_line_and_leaves_nothing(
    minari_root, monkeypatch, writer
):
    with monkeypatch.context() as patched, pytest.raises(TtrlError) as err:
        patched.setattr(collect_module, "_create_in_staging", writer)
        collect_dataset("hopper-random", n_steps=30, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"no space left on the device while writing {DATASET_ID} ({minari_root}/" in message
    assert "main_data.hdf5); nothing was kept: free space in" in message
    assert only_locks(minari_root)
    collect_dataset("hopper-random", n_steps=30, progress=False)  # nothing blocks the next run
    assert len(load_transitions("hopper-random")) == 30


def test_a_writer_process_that_dies_is_reported_and_cleaned_up(minari_root, monkeypatch):
    test_pid = os.getpid()

    def die(staging: Path, *_args) -> None:
        (staging / "partial.hdf5").write_bytes(b"\0" * 4096)
        assert os.getpid() != test_pid, "the dataset is written in this process, not in a child"
        os.kill(os.getpid(), signal.SIGKILL)  # the forked writer, as HDF5 crashing would end it

    monkeypatch.setattr(collect_module, "_create_in_staging", die)
    with pytest.raises(WriterCrashed, match="died from signal SIGKILL"):
        collect_dataset("hopper-random", n_steps=30, progress=False)
    assert only_locks(minari_root)  # this process lives on, and cleaned up


def test_staging_of_dead_writers_is_removed_on_the_next_start_and_live_ones_kept(minari_root):
    holder = """
        import os, signal, sys
        from pathlib import Path
        from ttrl.making.collect import _staging_root
        with _staging_root(Path(os.environ["MINARI_DATASETS_PATH"])) as staging:
            (staging / "partial.hdf5").write_bytes(bytes(4096))
            print(staging, flush=True)
            {then}
        """
    dead = python(holder.format(then="os.kill(os.getpid(), signal.SIGKILL)"), minari_root,
                  stdout=subprocess.PIPE)  # fmt: skip
    live = python(holder.format(then="sys.stdin.read()"), minari_root, stdout=subprocess.PIPE,
                  stdin=subprocess.PIPE)  # fmt: skip
    dead_dir = Path(dead.stdout.readline().strip())
    live_dir = Path(live.stdout.readline().strip())
    assert dead.wait(timeout=60) == -signal.SIGKILL
    young_legacy = minari_root / f"{STAGING_PREFIX}older-ttrl"  # no writer.lock, minutes old
    young_legacy.mkdir()
    seen = []

    def policy(_obs: np.ndarray) -> np.ndarray:
        if not seen:  # the cleanup happens before collecting
            seen.append(sorted(p.name for p in minari_root.glob(f"{STAGING_PREFIX}*")))
        return np.zeros(3, np.float32)

    try:
        assert dead_dir.exists() and live_dir.exists()
        collect_dataset("hopper-random", n_steps=20, policy=policy, progress=False)
        assert seen == [sorted([live_dir.name, young_legacy.name])]
        assert not dead_dir.exists() and live_dir.exists() and young_legacy.exists()
    finally:
        live.communicate("", timeout=60)
    assert live.returncode == 0 and not live_dir.exists()  # the live writer removed its own


# --- a real full disk (needs root for a private tmpfs mount) ---------------------------------------


def can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    target = tmp_path / "probe"
    target.mkdir()
    probe = f"mount -t tmpfs -o size=1m tmpfs {target}"
    return subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode == 0


def test_a_real_full_disk(tmp_path):
    """make_dataset on a 3 MB tmpfs (in a private mount namespace): refused before collecting; with
    the space checks skipped, HDF5's ENOSPC mid-write is one line, exit 2, and the space is free again.

    Written in-process, this write (10000 random hopper steps, about 6.6 MB) fails with thousands of
    lines of HDF5 tracebacks and a segfault (rc 139) at exit.
    """
    if not can_mount_tmpfs(tmp_path):
        pytest.skip("needs `unshare -m` and permission to mount a tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    skip_checks = (
        "import runpy, sys; import ttrl.making.collect as c; c.free_bytes = lambda path: 10**12; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    script = str(REPO / "scripts/make_dataset.py")
    args = f"env=hopper-random progress=false hydra.run.dir={tmp_path / 'run'}"
    shell = f"""
        mount -t tmpfs -o size=3m tmpfs {disk} || exit 99
        {sys.executable} {script} {args} n_steps=20000 > /dev/null 2> {tmp_path}/refused.err
        echo "rc $?"
        {sys.executable} -c "{skip_checks}" {script} {args} n_steps=10000 > /dev/null \
            2> {tmp_path}/full.err
        echo "rc $?"; ls -A {disk}; df -k --output=used {disk} | tail -1
        """
    env = {**os.environ, "MINARI_DATASETS_PATH": str(disk), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", shell], env=env, capture_output=True, text=True, timeout=300
    )
    out = done.stdout.split()
    assert out[:4] == ["rc", "2", "rc", "2"], done.stdout + done.stderr
    refused = only_line((tmp_path / "refused.err").read_text())
    assert re.search(rf"need about \S+ MB in {disk}, only \S+ MB free", refused)
    full = only_line((tmp_path / "full.err").read_text())  # no HDF5 tracebacks, no segfault
    assert f"no space left on the device while writing {DATASET_ID} ({disk}/" in full
    # nothing left but the lock file, and no deleted file held open: the 3 MB are free again (KB)
    assert out[4] == LOCKS_DIR and int(out[5]) <= 16, done.stdout
