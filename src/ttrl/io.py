"""Atomic file writes: a reader sees either the old file or the complete new one, never a part.

Every file ttrl writes (checkpoints, results, metrics, plots) goes through :func:`atomic_write`:

- the data goes to a hidden temporary file beside the target, which is then renamed onto it, so an
  interrupted or failed write leaves the earlier file intact;
- the new file gets the mode an ordinary ``open()`` would give it (``0o666`` less the umask), so
  collaborators on a shared cluster can read results as they could any other file;
- a full disk (or quota) is reported as one :class:`~ttrl.errors.TtrlError` line naming the path,
  and the temporary file is removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttrl.errors import TtrlError

TEMP_SUFFIX = ".tmp"
OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch.save reports a full disk as a bare RuntimeError ("iostream error", "file write failed");
# below this much free space such a failure is taken to be the disk's.
NEARLY_FULL_BYTES = 16 * 2**20


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback only)
    os.umask(mask)
    return mask


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free for this user on the file system holding ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_out_of_space(err: BaseException, directory: str | os.PathLike) -> bool:
    """True if ``err`` (or an error it was raised from) means the disk or the quota is full."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in OUT_OF_SPACE_ERRNOS:
            return True
        if "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    try:
        return free_bytes(directory) < NEARLY_FULL_BYTES
    except OSError:
        return False


def out_of_space_error(path: Path) -> TtrlError:
    """The one line for a write to ``path`` that ran out of space."""
    try:
        free = f"{free_bytes(path.parent) / 2**20:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return TtrlError(
        f"no space left on the device holding {path.parent} ({free}) while writing {path.name}; "
        f"any earlier {path.name} is unchanged: free some space (or point the run elsewhere) and "
        f"run again"
    )


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it onto ``path``.

    The rename is atomic on POSIX file systems, so an interrupted write leaves the old file intact
    and at most a hidden ``.<name>.*.tmp`` file, which :func:`remove_stale_temp_files` clears.
    A full disk raises :class:`~ttrl.errors.TtrlError` after the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        if is_out_of_space(err, path.parent):
            raise out_of_space_error(path) from err
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; act like open()
        os.replace(tmp_path, path)
    except Exception as err:
        if is_out_of_space(err, path.parent):
            raise out_of_space_error(path) from err
        raise
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files that killed :func:`atomic_write` calls left in ``directory``.

    Call it only while no other process writes there (e.g. holding the run dir's lock).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (so a crash after the rename keeps it)."""
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, synced to the disk."""
    return atomic_write(path, lambda tmp: write_synced(tmp, data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (for plain tensors and containers only)."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
