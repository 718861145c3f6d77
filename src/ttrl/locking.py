"""Exclusive locks on run dirs and datasets, so two processes never silently write one place.

A lock is an ``fcntl.flock`` on a small file that also records who holds it (pid, host, time and
command), so the process that is refused can say which one to wait for. The kernel drops the lock
when its holder exits, killed or not, so a lock left by a dead process never blocks the next run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ttrl.errors import TtrlError

LOCK_FILE = ".lock"


def describe_holder(lock_path: Path) -> str:
    """``process <pid> on <host> (since <time>: <command>)`` from a lock file, as far as it is known."""
    try:
        holder = json.loads(lock_path.read_text())
        return (
            f"process {holder['pid']} on {holder['host']} "
            f"(since {holder['started']}: {holder['command']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def holder_record() -> str:
    """What a lock file says of this process."""
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300],
        }
    )


@contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str, advice: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_path`` for the ``with`` body, or fail at once.

    Raises :class:`~ttrl.errors.TtrlError` ``"<what> is in use by <holder>; <advice>"`` when another
    process holds it.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TtrlError(f"{what} is in use by {describe_holder(lock_path)}; {advice}") from None
        os.ftruncate(fd, 0)
        os.write(fd, holder_record().encode())
        yield lock_path
    finally:
        os.close(fd)  # releases the lock; the file stays, harmlessly, for the next holder


def hold_plan_dir(out_dir: str | os.PathLike) -> AbstractContextManager[Path]:
    """Lock ``<out_dir>/.lock`` for an evaluation (one ``plan.py`` per output folder)."""
    out_dir = Path(out_dir)
    return exclusive_lock(
        out_dir / LOCK_FILE,
        f"evaluation folder {out_dir}",
        "wait for that evaluation to finish (or stop it), or pass another name=",
    )


def hold_run_dir(run_dir: str | os.PathLike) -> AbstractContextManager[Path]:
    """Lock ``<run_dir>/.lock`` for a training run (one process per run dir)."""
    run_dir = Path(run_dir)
    return exclusive_lock(
        run_dir / LOCK_FILE,
        f"run dir {run_dir}",
        "wait for that run to finish (or stop it), or pass another run_dir",
    )
