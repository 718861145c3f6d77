"""Making datasets locally: roll out a policy in a gymnasium env and write the episodes as a Minari dataset.

``collect_episodes`` gathers episodes from any policy; ``write_minari_dataset`` writes any list of
episodes (from ``collect_episodes`` or straight from a replay buffer) atomically; ``collect_dataset``
does both for a D4RL-style name. Writing goes to a hidden staging folder inside the Minari root and is
renamed into place only once complete, so an interrupted or failed run leaves nothing that a reader
could mistake for a dataset or that would block the next run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ttrl.data.registry import (
    ENVS,
    minari_dataset_dir,
    minari_dataset_exists,
    minari_datasets_root,
    split_dataset_name,
    ttrl_minari_id,
)
from ttrl.errors import TtrlError

Policy = Callable[[np.ndarray], np.ndarray]
STAGING_PREFIX = ".ttrl-staging-"
# an episode's arrays: observations has one more row (the final observation) than the others
EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def collect_episodes(
    env_id: str,
    policy: Policy | str,
    n_steps: int,
    seed: int,
    progress: bool = True,
    max_episode_steps: int | None = None,
) -> list:
    """Roll out ``policy`` in ``env_id`` for exactly ``n_steps`` environment steps.

    Args:
        env_id: gymnasium id, e.g. ``"HalfCheetah-v5"``.
        policy: ``obs [S] -> action [A]``, or ``"random"`` for uniform random actions (seeded).
        n_steps: total number of steps; the last episode is cut there and marked truncated.
        seed: seeds the first reset and the action space; later resets continue the env's RNG.
        progress: show a tqdm bar.
        max_episode_steps: override the env's time limit (e.g. short episodes for tests).

    Returns:
        Minari ``EpisodeBuffer`` s, observations with one more row than actions (the final observation).
    """
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    if n_steps < 1:
        raise TtrlError(f"n_steps must be a positive number of environment steps, got {n_steps}")
    env = _make_env(gym, env_id, max_episode_steps)
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
                        **{key: np.asarray(value) for key, value in steps.items()},
                    )
                )
                if step < n_steps - 1:
                    obs, _ = env.reset()
                steps = {key: [] for key in EPISODE_KEYS} | {"observations": [obs]}
            bar.update()
    env.close()
    return episodes


def _make_env(gym: Any, env_id: str, max_episode_steps: int | None) -> Any:
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps)
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
) -> Path:
    """Write ``episodes`` as the Minari dataset ``dataset_id`` atomically; return its folder.

    Args:
        dataset_id: Minari id, e.g. ``"ttrl/halfcheetah/random-v0"``.
        episodes: ``EpisodeBuffer`` s, or anything with ``observations`` (N+1 rows), ``actions``,
            ``rewards``, ``terminations``, ``truncations`` (N rows) as attributes or dict keys.
        env_id: gymnasium id of the env that made them.
        ref_min_score / ref_max_score: stored so normalised scores can be computed (Minari would roll
            out a policy to estimate a missing one, so both are passed explicitly).
        metadata: extra JSON-serialisable facts (policy, steps, seed, ...), stored under ``"ttrl"``.
        overwrite: replace an existing dataset with this id instead of raising.
        description: the dataset's description in its Minari metadata.

    Raises:
        TtrlError: the dataset exists and ``overwrite`` is False, or there are no episodes.
    """
    from ttrl import __version__

    target = minari_dataset_dir(dataset_id)
    if target.exists() and not overwrite:
        raise TtrlError(
            f"dataset {dataset_id} already exists in {target}; pass overwrite=true to replace it "
            f"or delete that folder"
        )
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
    root = minari_datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(root)
    with _staging_root(root) as staging:
        _create_in_staging(
            staging,
            dataset_id,
            buffers,
            env_id,
            ref_min_score,
            ref_max_score,
            ttrl_metadata,
            description,
        )
        _ensure_namespaces(root, dataset_id)
        _move_into_place(staging / dataset_id, target, staging)
    return target


def _as_episode_buffer(index: int, episode: Any) -> Any:
    """An ``EpisodeBuffer`` with numpy arrays and sequential ids from any episode-like object."""
    from minari.data_collector import EpisodeBuffer

    def field(key: str) -> Any:
        return episode[key] if isinstance(episode, dict) else getattr(episode, key)

    arrays = {key: np.asarray(field(key)) for key in EPISODE_KEYS}
    n = len(arrays["rewards"])
    if len(arrays["observations"]) != n + 1 or any(
        len(arrays[key]) != n for key in ("actions", "terminations", "truncations")
    ):
        raise TtrlError(
            f"episode {index} has {len(arrays['observations'])} observations and {n} rewards; an episode "
            f"needs one more observation (the final one) than actions, rewards, terminations, truncations"
        )
    seed = episode.get("seed") if isinstance(episode, dict) else getattr(episode, "seed", None)
    return EpisodeBuffer(id=index, seed=seed, **arrays)


@contextmanager
def _staging_root(root: Path) -> Iterator[Path]:
    """A hidden folder inside ``root`` (same file system, so renames are atomic), removed afterwards.

    Minari skips hidden folders when listing datasets, so a half-written dataset is never visible.
    """
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(root: Path) -> None:
    """Delete staging folders left by interrupted runs (older than an hour, so live writers are safe)."""
    import time

    for path in root.glob(f"{STAGING_PREFIX}*"):
        if time.time() - path.stat().st_mtime > 3600:
            shutil.rmtree(path, ignore_errors=True)


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
) -> None:
    import minari

    with _minari_root_set_to(staging), warnings.catch_warnings():
        # Minari warns about unset optional fields (permalink, email) on every dataset.
        warnings.simplefilter("ignore", UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffer=buffers,
            env=env_id,
            eval_env=env_id,
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
    os.replace(built, target)
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
    policy passed as ``policy`` (``ttrl.data.recipes`` does that for every level). Returns the folder.
    """
    env, level = split_dataset_name(name)
    if level != "random" and isinstance(policy, str):
        raise TtrlError(
            f"level {level!r} needs a behaviour policy, not {policy!r}; use {env}-random, or pass a "
            f"trained policy (scripts/make_dataset.py uses the ones in policies/)"
        )
    dataset_id = ttrl_minari_id(name)
    if minari_dataset_exists(dataset_id) and not overwrite:  # say so before collecting for minutes
        raise TtrlError(
            f"dataset {dataset_id} already exists in {minari_dataset_dir(dataset_id)}; "
            f"pass overwrite=true to replace it"
        )
    episodes = collect_episodes(
        ENVS[env].env_id, policy, n_steps, seed, progress, max_episode_steps
    )
    metadata = {"policy": policy_name(policy), "seed": seed, "max_episode_steps": max_episode_steps}
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
