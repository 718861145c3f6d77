"""Making datasets locally: roll out a policy in a gymnasium env and write the episodes as a Minari dataset.

``collect_episodes`` gathers episodes from any policy; ``write_minari_dataset`` writes any list of
episodes (from ``collect_episodes`` or straight from a replay buffer) atomically; ``collect_dataset``
does both for a D4RL-style name. Writing goes to a hidden staging folder inside the Minari root and is
renamed into place only once complete, so an interrupted or failed run leaves nothing that a reader
could mistake for a dataset or that would block the next run.

Nothing is lost and nothing is half-written:

- one writer per dataset id (:func:`dataset_writer`, an flock from :mod:`ttrl.locking` in the Minari
  root): a second run of the same id fails at once and names the first; a killed run's lock blocks
  nothing;
- the free space is checked before collecting and again before writing;
- HDF5 writes run in a forked child: after ENOSPC, HDF5 keeps the half-written file open (holding the
  space even once deleted) and crashes the interpreter at exit, so that stays in the child;
- a failed write removes its staging folder, and the next run removes those of killed writers.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from tqdm.auto import tqdm

from ttrl.data.registry import (
    ENVS,
    minari_dataset_dir,
    minari_datasets_root,
    split_dataset_name,
    ttrl_minari_id,
)
from ttrl.errors import TtrlError
from ttrl.locking import exclusive_lock

Policy = Callable[[Any], np.ndarray]  # obs (an array, or a dict of arrays) -> action
STAGING_PREFIX = ".ttrl-staging-"
LOCKS_DIR = ".ttrl-locks"  # in the Minari root: one flock file per dataset id (hidden from Minari)
WRITER_LOCK = "writer.lock"  # in each staging folder, flocked by its live writer
STALE_AFTER_S = 3600  # a staging folder without a writer lock (older ttrl) is stale after this
# an episode's arrays: observations has one more row (the final observation) than the others
EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


@dataclass
class MakeDatasetConfig:
    """The schema of ``configs/make_dataset.yaml`` (``scripts/make_dataset.py``)."""

    # D4RL-style name <env>-<level>, pointmaze-<maze>[-dense], or antmaze-<dataset> (test data only)
    env: str = "halfcheetah-random"
    n_steps: int = 1_000_000  # environment steps to collect (>= 1)
    seed: int = 0  # seeds the env resets and the policy's actions (>= 0)
    max_episode_steps: int | None = None  # time limit (None: the env's own, MuJoCo's 1000)
    overwrite: bool = False  # replace an existing dataset of the same name
    progress: bool = True  # tqdm progress bar


def check_make_options(n_steps: int, seed: int, max_episode_steps: int | None) -> None:
    """Raise one :class:`TtrlError` line for dataset-making options out of range."""
    problems = []
    if n_steps < 1:
        problems.append(f"n_steps={n_steps} must be >= 1")
    if seed < 0:
        problems.append(f"seed={seed} must be >= 0")  # gymnasium refuses negative seeds
    if max_episode_steps is not None and max_episode_steps < 1:
        problems.append(f"max_episode_steps={max_episode_steps} must be null or >= 1")
    if problems:
        raise TtrlError("bad dataset options: " + "; ".join(problems))


def collect_episodes(
    env_id: str,
    policy: Policy | str,
    n_steps: int,
    seed: int,
    progress: bool = True,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> list:
    """Roll out ``policy`` in ``env_id`` for exactly ``n_steps`` environment steps.

    Args:
        env_id: gymnasium id, e.g. ``"HalfCheetah-v5"``.
        policy: ``obs [S] -> action [A]`` (obs a dict of arrays for dict observation spaces), or
            ``"random"`` for uniform random actions (seeded).
        n_steps: total number of steps; the last episode is cut there and marked truncated.
        seed: seeds the first reset and the action space; later resets continue the env's RNG.
        progress: show a tqdm bar.
        max_episode_steps: override the env's time limit (e.g. short episodes for tests).
        env_kwargs: extra keyword arguments for ``gym.make`` (e.g. PointMaze's ``reset_target``).

    Returns:
        Minari ``EpisodeBuffer`` s, observations with one more row than actions (the final
        observation); dict observations as a dict of such arrays.
    """
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    if n_steps < 1:
        raise TtrlError(f"n_steps must be a positive number of environment steps, got {n_steps}")
    env = _make_env(gym, env_id, max_episode_steps, env_kwargs or {})
    act = _as_policy(policy, env, seed)
    episodes = []
    obs, _ = env.reset(seed=seed)
    steps = {key: [] for key in EPISODE_KEYS} | {"observations": [obs]}
    with tqdm(total=n_steps, desc=f"collecting {env_id}", disable=not progress, unit="step") as bar:
        for step in range(n_steps):
            action = np.asarray(act(obs), dtype=env.action_space.dtype)
            obs, reward, terminated, truncated, _ = env.step(action)
            truncated = truncated or step == n_steps - 1  # the step budget cuts the last episode
            for key, value in zip(
                EPISODE_KEYS, (obs, action, reward, terminated, truncated), strict=True
            ):
                steps[key].append(value)
            if terminated or truncated:
                episodes.append(
                    EpisodeBuffer(
                        id=len(episodes),
                        seed=seed if not episodes else None,
                        **{key: _stacked(value) for key, value in steps.items()},
                    )
                )
                if step < n_steps - 1:
                    obs, _ = env.reset()
                steps = {key: [] for key in EPISODE_KEYS} | {"observations": [obs]}
            bar.update()
    env.close()
    return episodes


def _stacked(values: list) -> Any:
    """One episode's per-step values as an array, or a dict of arrays for dict observations."""
    if values and isinstance(values[0], dict):
        return {key: np.asarray([value[key] for value in values]) for key in values[0]}
    return np.asarray(values)


def _make_env(gym: Any, env_id: str, max_episode_steps: int | None, env_kwargs: dict) -> Any:
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **env_kwargs)
    except gym.error.Error as err:
        raise TtrlError(
            f"cannot make env {env_id!r}: {err}; use a gymnasium id like HalfCheetah-v5"
        ) from err


def _as_policy(policy: Policy | str, env: Any, seed: int) -> Policy:
    if callable(policy):
        return policy
    if policy == "random":
        env.action_space.seed(seed)
        return lambda _obs: env.action_space.sample()
    raise TtrlError(f"unknown policy {policy!r}; pass 'random' or a callable obs -> action")


def policy_name(policy: Policy | str) -> str:
    """A readable name for a policy, recorded in the dataset's metadata."""
    if isinstance(policy, str):
        return policy
    return getattr(policy, "__name__", type(policy).__name__)


def write_minari_dataset(
    dataset_id: str,
    episodes: Sequence,
    env_id: str,
    ref_min_score: float | None,
    ref_max_score: float | None,
    metadata: dict | None = None,
    overwrite: bool = False,
    description: str | None = None,
    env_spec: Any = None,
) -> Path:
    """Write ``episodes`` as the Minari dataset ``dataset_id`` atomically; return its folder.

    Args:
        dataset_id: Minari id, e.g. ``"ttrl/halfcheetah/random-v0"``.
        episodes: ``EpisodeBuffer`` s, or anything with ``observations`` (N+1 rows, or a dict of such
            arrays), ``actions``, ``rewards``, ``terminations``, ``truncations`` (N rows) as
            attributes or dict keys.
        env_id: gymnasium id of the env that made them.
        ref_min_score / ref_max_score: stored so normalised scores can be computed (Minari would roll
            out a policy to estimate a missing one, so both are passed explicitly).
        metadata: extra JSON-serialisable facts (policy, steps, seed, ...), stored under ``"ttrl"``.
        overwrite: replace an existing dataset with this id instead of raising.
        description: the dataset's description in its Minari metadata.
        env_spec: the gymnasium ``EnvSpec`` to record (and recover the env from) instead of
            ``env_id``'s registered one, e.g. one with the kwargs the data was made with.

    Raises:
        TtrlError: the dataset exists and ``overwrite`` is False, another process is writing it,
            there are no episodes, or the disk is (or gets) too full for it.
    """
    from ttrl import __version__

    buffers = [_as_episode_buffer(i, episode) for i, episode in enumerate(episodes)]
    if not buffers:
        raise TtrlError(f"no episodes to write to {dataset_id}; collect at least one step")
    ttrl_metadata = {
        **(metadata or {}),
        "ttrl_version": __version__,
        "env_id": env_id,
        "ref_min_score": ref_min_score,
        "ref_max_score": ref_max_score,
        "n_episodes": len(buffers),
        "n_steps": int(sum(len(b.rewards) for b in buffers)),
    }
    target = minari_dataset_dir(dataset_id)
    with dataset_writer(dataset_id, overwrite) as root:
        array_bytes = sum(_nbytes(getattr(b, key)) for b in buffers for key in EPISODE_KEYS)
        need = estimate_dataset_bytes(array_bytes, len(buffers))
        check_free_space(root, need, dataset_id)
        with _staging_root(root) as staging:
            try:
                _run_in_child(
                    lambda: _create_in_staging(
                        staging,
                        dataset_id,
                        buffers,
                        env_id,
                        ref_min_score,
                        ref_max_score,
                        ttrl_metadata,
                        description,
                        env_spec,
                    )
                )
                _ensure_namespaces(root, dataset_id)
                _move_into_place(staging / dataset_id, target, staging)
            except WriterCrashed as err:
                if free_bytes(root) < need:  # HDF5 died on a full disk
                    raise _disk_full(dataset_id, staging, root) from err
                raise
            except Exception as err:
                if is_disk_full(err):
                    raise _disk_full(dataset_id, _failed_path(err, staging), root) from err
                raise
    return target


_HELD: set[Path] = set()  # dataset locks this process holds


@contextmanager
def dataset_writer(dataset_id: str, overwrite: bool = False) -> Iterator[Path]:
    """Hold the only right to write ``dataset_id`` in the Minari root; yields the root.

    Refuses an existing dataset unless ``overwrite``, before and again after taking the lock (another
    writer may have finished meanwhile), and refuses a second writer at once, naming the first. Also
    removes the staging folders of writers that were killed. Re-entrant within a process (e.g.
    ``make_level_dataset`` -> ``collect_dataset`` -> ``write_minari_dataset``).

    Raises:
        TtrlError: the dataset exists (and not ``overwrite``), another process is writing it, or the
            disk is full.
    """
    root = minari_datasets_root()
    _refuse_existing(dataset_id, overwrite)  # say so before taking anything
    lock = dataset_lock_path(dataset_id, root)
    if lock in _HELD:
        yield root
        return
    advice = "wait for that run to finish (or stop it), then run again"
    try:
        with exclusive_lock(lock, f"dataset {dataset_id}", advice):
            _HELD.add(lock)
            try:
                _refuse_existing(dataset_id, overwrite)
                remove_stale_staging(root)
                yield root
            finally:
                _HELD.discard(lock)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _disk_full(dataset_id, Path(err.filename or lock), root) from err
        raise


def dataset_lock_path(dataset_id: str, root: Path) -> Path:
    """The flock file of a dataset id (kept between runs: it blocks nothing once its holder ends)."""
    return root / LOCKS_DIR / f"{quote(dataset_id, safe='')}.lock"


def _refuse_existing(dataset_id: str, overwrite: bool) -> None:
    if not overwrite and minari_dataset_dir(dataset_id).exists():
        raise TtrlError(
            f"dataset {dataset_id} already exists in {minari_dataset_dir(dataset_id)}; pass "
            f"overwrite=true to replace it or delete that folder"
        )


# Bytes on disk per byte of episode arrays, and per episode (an HDF5 group of 5 datasets), measured
# here with minari 0.5.4 / h5py 3.16 on 20k random steps: halfcheetah (20 episodes) took 1.23x its
# arrays; hopper (868 episodes), walker2d (1142) and halfcheetah cut to 5-step episodes (4000) took
# their arrays plus 14.2 KB per episode. These figures over-estimate all four by 10-35%.
DISK_BYTES_PER_ARRAY_BYTE = 1.25
DISK_BYTES_PER_EPISODE = 16 * 1024
DISK_BYTES_FIXED = 2**20  # metadata.json, namespace files, slack


def estimate_dataset_bytes(array_bytes: int, n_episodes: int) -> int:
    """Bytes a Minari dataset of ``n_episodes`` holding ``array_bytes`` of arrays takes, with a margin."""
    return int(
        DISK_BYTES_PER_ARRAY_BYTE * array_bytes
        + DISK_BYTES_PER_EPISODE * n_episodes
        + DISK_BYTES_FIXED
    )


def rollout_bytes(n_steps: int, n_episodes: int, observation_dim: int, action_dim: int) -> int:
    """Array bytes of ``n_steps`` MuJoCo steps as Minari stores them.

    float64 observations (one more per episode) and rewards, float32 actions, two bool flags.
    """
    return (n_steps + n_episodes) * observation_dim * 8 + n_steps * (action_dim * 4 + 8 + 2)


def _nbytes(array: Any) -> int:
    """Bytes of an array, or of a dict of arrays (dict observations)."""
    if isinstance(array, dict):
        return sum(_nbytes(value) for value in array.values())
    return array.nbytes


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_space(root: Path, need: int, dataset_id: str) -> None:
    """Raise one :class:`TtrlError` line when ``root`` has less than ``need`` bytes free."""
    free = free_bytes(root)
    if free < need:
        raise TtrlError(
            f"{dataset_id}: need about {_mb(need)} MB in {root}, only {_mb(free)} MB free; "
            f"free space or set MINARI_DATASETS_PATH"
        )


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def check_rollout_space(
    env: str, n_steps: int, max_episode_steps: int | None, dataset_id: str
) -> None:
    """Refuse to collect ``n_steps`` of ``env`` when the Minari root has too little space for them.

    The episode count is not known before collecting, so this assumes full-length episodes: a lower
    bound (many short episodes need more, which the check before writing catches).
    """
    info = ENVS[env]
    n_episodes = math.ceil(n_steps / (max_episode_steps or 1000))
    array_bytes = rollout_bytes(n_steps, n_episodes, info.observation_dim, info.action_dim)
    check_free_space(
        minari_datasets_root(), estimate_dataset_bytes(array_bytes, n_episodes), dataset_id
    )


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk is full (an ENOSPC OSError, or h5py's text for one)."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    # h5py raises ValueError/RuntimeError with HDF5's message: "... errno = 28, error message = 'No
    # space left on device' ..."
    text = str(err)
    return "No space left on device" in text or f"errno = {errno.ENOSPC}," in text


def _failed_path(err: BaseException, default: Path) -> Path:
    if isinstance(err, OSError) and err.filename:
        return Path(err.filename)
    match = re.search(r"filename = '([^']+)'", str(err))
    return Path(match.group(1)) if match else default


def _disk_full(dataset_id: str, path: Path, root: Path) -> TtrlError:
    return TtrlError(
        f"no space left on the device while writing {dataset_id} ({path}); nothing was kept: "
        f"free space in {root} or set MINARI_DATASETS_PATH, then run again"
    )


class WriterCrashed(RuntimeError):
    """The child process writing a dataset died from a signal."""


def _run_in_child(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a forked child process and raise its exception here.

    HDF5 does not recover from a failed write: it keeps the file open (so a deleted staging folder
    still holds its space) and the interpreter may segfault at exit. A child that ends with
    ``os._exit`` skips that, and its files are closed when it ends (POSIX only, as is flock).
    """
    with contextlib.suppress(Exception):  # else the child would repeat the parent's buffered output
        sys.stdout.flush()
        sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns about forking a process with threads (torch's); the child only runs
        # h5py/json code, none that waits on a lock another thread may hold
        warnings.filterwarnings("ignore", r".*fork\(\) may lead to deadlocks", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read_fd)
            payload = _child_run(fn)
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:  # e.g. Ctrl-C: stop the child before the staging folder is removed
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    if os.WIFSIGNALED(status) or not payload:
        how = (
            f"signal {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WIFSIGNALED(status)
            else f"status {os.waitstatus_to_exitcode(status)}"
        )
        raise WriterCrashed(f"the dataset writer process (pid {pid}) died from {how}")
    error, summary = _load_child_report(payload)
    if error is None and summary is None:
        return
    try:
        error = _load_child_report(error)
    except Exception:  # an exception class that cannot be rebuilt here
        error = RuntimeError(summary)
    raise error


class _ChildReportUnpickler(pickle.Unpickler):
    """Rebuilds plain values and exception classes this process has imported already, nothing else.

    The writer child's report comes through a pipe from our own fork, not from a file; even so it is
    never allowed to import a module or call anything but an exception class.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = getattr(sys.modules.get(module), name, None)  # no import
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
        raise pickle.UnpicklingError(f"{module}.{name} is not an exception class")


def _load_child_report(payload: bytes) -> Any:
    return _ChildReportUnpickler(io.BytesIO(payload)).load()


def _child_run(fn: Callable[[], None]) -> bytes:
    """In the child: call ``fn``; return ``(pickled exception, its text)``, or Nones, pickled.

    Its stderr is held back meanwhile: after a failed write h5py prints a traceback for every HDF5
    object it cannot free (thousands of lines), so a disk-full failure shows only the parent's line.
    """
    held = _memory_file()
    saved = os.dup(2)
    os.dup2(held.fileno(), 2)
    failure = None
    try:
        fn()
        payload = pickle.dumps((None, None))
    except BaseException as err:
        failure = err
        payload = _pickled_error(err)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os.dup2(saved, 2)
    if failure is None or not is_disk_full(failure):
        with contextlib.suppress(OSError), open(2, "wb", closefd=False) as stderr:
            held.seek(0)
            shutil.copyfileobj(held, stderr)
    return payload


def _memory_file() -> Any:
    """A file in memory (Linux memfd), else a temporary file."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("ttrl-writer-stderr"), "w+b")
    return tempfile.TemporaryFile()


def _pickled_error(err: BaseException) -> bytes:
    """``(err pickled, its text with the child's traceback)`` pickled, for the parent to raise."""
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    if hasattr(err, "add_note"):
        err.add_note(f"in the dataset writer process (pid {os.getpid()}):\n{trace}")
    try:
        error = pickle.dumps(err)
    except Exception:
        error = None
    return pickle.dumps((error, f"in the dataset writer process: {trace}"))


def _as_episode_buffer(index: int, episode: Any) -> Any:
    """An ``EpisodeBuffer`` with numpy arrays and sequential ids from any episode-like object."""
    from minari.data_collector import EpisodeBuffer

    def field(key: str) -> Any:
        return episode[key] if isinstance(episode, dict) else getattr(episode, key)

    arrays = {key: _as_arrays(field(key)) for key in EPISODE_KEYS}
    n = len(arrays["rewards"])
    observations = arrays["observations"]
    n_obs = (
        {len(v) for v in observations.values()}
        if isinstance(observations, dict)
        else {len(observations)}
    )
    if n_obs != {n + 1} or any(
        len(arrays[key]) != n for key in ("actions", "terminations", "truncations")
    ):
        raise TtrlError(
            f"episode {index} has {'/'.join(map(str, sorted(n_obs)))} observations and {n} rewards; "
            f"an episode needs one more observation (the final one) than actions, rewards, "
            f"terminations, truncations"
        )
    seed = episode.get("seed") if isinstance(episode, dict) else getattr(episode, "seed", None)
    return EpisodeBuffer(id=index, seed=seed, **arrays)


def _as_arrays(value: Any) -> Any:
    """An array, or a dict of arrays for dict observations."""
    if isinstance(value, dict):
        return {key: np.asarray(item) for key, item in value.items()}
    return np.asarray(value)


@contextmanager
def _staging_root(root: Path) -> Iterator[Path]:
    """A hidden folder inside ``root`` (same file system, so renames are atomic), removed afterwards.

    Minari skips hidden folders when listing datasets, so a half-written dataset is never visible.
    Its ``writer.lock`` is flocked while it is in use, so :func:`remove_stale_staging` leaves it alone.
    """
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        with exclusive_lock(staging / WRITER_LOCK, f"staging folder {staging}", "a new folder"):
            yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(root: Path) -> list[Path]:
    """Delete the staging folders of writers that ended without removing them; return those folders.

    A live writer holds the flock on its folder's ``writer.lock``, so only folders of dead (e.g.
    killed) writers go. A folder without that file (an older ttrl, or a writer killed right after
    making it) goes once it is an hour old.
    """
    removed = []
    for path in root.glob(f"{STAGING_PREFIX}*"):
        lock = path / WRITER_LOCK
        with contextlib.suppress(OSError, TtrlError):  # TtrlError: its writer is alive
            if lock.is_file():
                with exclusive_lock(lock, f"staging folder {path}", "its writer is alive"):
                    shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            elif time.time() - path.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


@contextmanager
def _minari_root_set_to(root: Path) -> Iterator[None]:
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _create_in_staging(
    staging: Path,
    dataset_id: str,
    buffers: list,
    env_id: str,
    ref_min_score: float | None,
    ref_max_score: float | None,
    ttrl_metadata: dict,
    description: str | None,
    env_spec: Any = None,
) -> None:
    import minari

    with _minari_root_set_to(staging), warnings.catch_warnings():
        # Minari warns about unset optional fields (permalink, email) on every dataset.
        warnings.simplefilter("ignore", UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffer=buffers,
            env=env_spec or env_id,
            eval_env=env_spec or env_id,
            algorithm_name=str(ttrl_metadata.get("policy", "unknown")),
            author="ttrl",
            author_email="unknown",
            code_permalink="unknown",
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            description=description or f"{dataset_id}: made locally by ttrl from {env_id}",
        )
        dataset.storage.update_metadata({"ttrl": ttrl_metadata})


def _ensure_namespaces(root: Path, dataset_id: str) -> None:
    """Give every namespace folder of ``dataset_id`` under ``root`` the metadata file Minari expects."""
    from minari.namespace import NAMESPACE_METADATA_FILENAME

    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = root.joinpath(*parts[:depth])
        folder.mkdir(exist_ok=True)
        marker = folder / NAMESPACE_METADATA_FILENAME
        if not marker.exists():
            marker.write_text("{}")


def _move_into_place(built: Path, target: Path, staging: Path) -> None:
    """Rename the finished dataset onto ``target``; an old one is moved aside first, then deleted."""
    old = staging / f"replaced-{uuid.uuid4().hex}"
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(built, target)
    except BaseException:
        if old.exists() and not target.exists():  # put the old dataset back: nothing lost
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def collect_dataset(
    name: str,
    n_steps: int,
    seed: int = 0,
    policy: Policy | str = "random",
    overwrite: bool = False,
    progress: bool = True,
    max_episode_steps: int | None = None,
) -> Path:
    """Collect ``n_steps`` of ``policy`` for the D4RL-style ``name`` and write ``ttrl/<env>/<level>-v0``.

    ``policy="random"`` only makes sense for level ``random``; other levels need a trained behaviour
    policy passed as ``policy`` (``ttrl.making.recipes`` does that for every level). Returns the folder.
    """
    env, level = split_dataset_name(name)
    if level != "random" and isinstance(policy, str):
        raise TtrlError(
            f"level {level!r} needs a behaviour policy, not {policy!r}; use {env}-random, or pass a "
            f"trained policy (scripts/make_dataset.py uses the ones in policies/)"
        )
    check_make_options(n_steps, seed, max_episode_steps)
    dataset_id = ttrl_minari_id(name)
    # the lock is held from before collecting (minutes) to the end of writing
    with dataset_writer(dataset_id, overwrite):
        check_rollout_space(env, n_steps, max_episode_steps, dataset_id)
        episodes = collect_episodes(
            ENVS[env].env_id, policy, n_steps, seed, progress, max_episode_steps
        )
        metadata = {
            "policy": policy_name(policy),
            "seed": seed,
            "max_episode_steps": max_episode_steps,
        }
        return write_level_dataset(name, episodes, metadata, overwrite=overwrite)


def write_level_dataset(
    name: str,
    episodes: Sequence,
    metadata: dict,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write ``episodes`` as ttrl's dataset for the D4RL-style ``name``, with D4RL's reference scores."""
    env, _ = split_dataset_name(name)
    info = ENVS[env]
    return write_minari_dataset(
        ttrl_minari_id(name),
        episodes,
        info.env_id,
        info.ref_min_score,
        info.ref_max_score,
        metadata={"name": name, "ref_source": "D4RL", **metadata},
        overwrite=overwrite,
        description=description,
    )
