"""Dataset names: which data a name means, where it lives and which reference scores normalise it.

A dataset can be named four ways:

- a D4RL-style name ``<env>-<level>`` (``halfcheetah-medium``, ``hopper-medium-replay``, ...). It maps to
  ttrl's own Minari dataset ``ttrl/<env>/<level>-v0`` (made locally by ``scripts/make_dataset.py``) and,
  for the levels Minari publishes (medium, expert), to the official ``mujoco/<env>/<level>-v0``. Scores
  are normalised with the D4RL reference returns.
- any Minari id ``namespace/name-vN``: env and reference scores come from the dataset's metadata (or, when
  it carries none, from the D4RL table for its env).
- a path to a D4RL-format HDF5 file (keys observations, actions, rewards, terminals, timeouts).
- a PointMaze name ``pointmaze-<maze>[-dense]`` (``pointmaze-umaze``, ``pointmaze-large-dense``, ...). It
  maps to ttrl's ``ttrl/pointmaze/<maze>[-dense]-v0`` (made locally by ``scripts/make_dataset.py`` with the
  recipe of Minari's ``D4RL/pointmaze/*``) and, for the mazes Minari publishes, to the official
  ``D4RL/pointmaze/<maze>[-dense]-v2``. Env and reference scores come from the dataset's metadata.

Nothing is ever downloaded: a dataset that is not on disk is an error that names the command making it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ttrl.errors import TtrlError


@dataclass(frozen=True)
class EnvInfo:
    """A MuJoCo task: its gymnasium id, sizes and D4RL reference returns (random / expert)."""

    env_id: str
    observation_dim: int
    action_dim: int
    ref_min_score: float
    ref_max_score: float


ENVS: dict[str, EnvInfo] = {
    "halfcheetah": EnvInfo("HalfCheetah-v5", 17, 6, -280.178953, 12135.0),
    "hopper": EnvInfo("Hopper-v5", 11, 3, -20.272305, 3234.3),
    "walker2d": EnvInfo("Walker2d-v5", 17, 6, 1.629008, 4592.3),
}
LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")
# Levels that Minari publishes as `mujoco/<env>/<level>-v0` (its "simple" is not D4RL's random).
OFFICIAL_LEVELS = ("medium", "expert")
TTRL_NAMESPACE = "ttrl"
OFFICIAL_NAMESPACE = "mujoco"
SOURCES = ("auto", "ttrl", "official")


@dataclass(frozen=True)
class MazeInfo:
    """A PointMaze layout: the gymnasium id of its sparse-reward env and its time limit.

    Attributes:
        env_id: gymnasium id of the sparse-reward env; the dense one has ``Dense`` before ``-v3``.
        max_episode_steps: the env's time limit, where the (continuing) episodes are cut.
        official: whether Minari publishes ``D4RL/pointmaze/<maze>[-dense]-v2``.
    """

    env_id: str
    max_episode_steps: int
    official: bool

    def env_id_for(self, reward_type: str) -> str:
        """The gymnasium id for ``reward_type`` (``"sparse"`` or ``"dense"``)."""
        return self.env_id.replace("-v", "Dense-v") if reward_type == "dense" else self.env_id


# gymnasium-robotics' time limits; fourrooms (ttrl's own layout, ttrl.making.maze.FOURROOMS_MAP) is
# registered by ttrl with the large maze's 800 steps, its longest shortest path being about as long
MAZES: dict[str, MazeInfo] = {
    "umaze": MazeInfo("PointMaze_UMaze-v3", 300, True),
    "medium": MazeInfo("PointMaze_Medium-v3", 600, True),
    "large": MazeInfo("PointMaze_Large-v3", 800, True),
    "fourrooms": MazeInfo("PointMaze_FourRooms-v3", 800, False),
}
MAZE_ENV = "pointmaze"  # the env part of maze names and ids (ttrl/pointmaze/umaze-v0)
REWARD_TYPES = ("sparse", "dense")
OFFICIAL_MAZE_NAMESPACE = "D4RL"
OFFICIAL_MAZE_VERSION = "v2"

_MINARI_ID = re.compile(r"^[\w.-]+(/[\w.-]+)+-v\d+$")
_HDF5_SUFFIXES = (".hdf5", ".h5")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and how its returns are normalised.

    Attributes:
        name: the name as the user wrote it.
        env_id: gymnasium id of the environment that made the data (e.g. ``"HalfCheetah-v5"``), or None.
        minari_id: the Minari dataset id, or None for an HDF5 file.
        hdf5_path: the D4RL-format HDF5 file, or None for a Minari dataset.
        ref_min_score: return of a random policy (normalised score 0), or None if unknown.
        ref_max_score: return of an expert policy (normalised score 100), or None if unknown.
        ref_source: where the reference scores come from (``"D4RL"``, ``"minari metadata"``, ``"none"``).
    """

    name: str
    env_id: str | None
    minari_id: str | None
    hdf5_path: Path | None
    ref_min_score: float | None
    ref_max_score: float | None
    ref_source: str

    def normalized_score(self, returns: float | np.ndarray) -> float | np.ndarray:
        """``100 * (R - ref_min) / (ref_max - ref_min)`` for one return or an array of returns."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise TtrlError(
                f"dataset {self.name!r} has no reference scores, so returns cannot be normalised; "
                f"use a D4RL-style name or a Minari dataset whose metadata has ref_min_score/ref_max_score"
            )
        scale = self.ref_max_score - self.ref_min_score
        normalized = 100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min_score) / scale
        return float(normalized) if normalized.ndim == 0 else normalized


def env_names() -> list[str]:
    """The short env names of D4RL-style dataset names (``halfcheetah``, ``hopper``, ``walker2d``)."""
    return list(ENVS)


def dataset_names() -> list[str]:
    """Every D4RL-style (locomotion) dataset name, e.g. ``halfcheetah-medium-replay``.

    Maze names are apart (:func:`maze_dataset_names`): code that reads ``ENVS`` for these names
    (sizes, D4RL reference scores) has no entry for a maze.
    """
    return [f"{env}-{level}" for env in ENVS for level in LEVELS]


def maze_dataset_names() -> list[str]:
    """Every PointMaze dataset name ttrl knows, e.g. ``pointmaze-umaze``, ``pointmaze-umaze-dense``."""
    return [
        f"{MAZE_ENV}-{maze}" + ("-dense" if reward == "dense" else "")
        for maze in MAZES
        for reward in REWARD_TYPES
    ]


def is_maze_name(name: str) -> bool:
    """Whether ``name`` is a PointMaze dataset name (``pointmaze-<maze>[-dense]``)."""
    return name in maze_dataset_names()


def split_maze_name(name: str) -> tuple[str, str]:
    """Split ``pointmaze-<maze>[-dense]`` into (maze, reward type); TtrlError listing the valid names."""
    if not is_maze_name(name):
        raise TtrlError(
            f"unknown maze dataset {name!r}; use one of {', '.join(maze_dataset_names())}"
        )
    maze = name.removeprefix(f"{MAZE_ENV}-")
    if maze.endswith("-dense"):
        return maze.removesuffix("-dense"), "dense"
    return maze, "sparse"


def split_dataset_name(name: str) -> tuple[str, str]:
    """Split a D4RL-style name into (env, level); TtrlError listing the valid names otherwise."""
    for env in ENVS:
        level = name.removeprefix(f"{env}-")
        if level != name and level in LEVELS:
            return env, level
    raise TtrlError(
        f"unknown dataset {name!r}; use one of {', '.join(dataset_names() + maze_dataset_names())}, "
        f"a Minari id like mujoco/hopper/medium-v0, or a path to a D4RL .hdf5 file"
    )


def ttrl_minari_id(name: str) -> str:
    """ttrl's own Minari id for a D4RL-style or maze name: ``ttrl/<env>/<level>-v0``.

    Maze names map to ``ttrl/pointmaze/<maze>[-dense]-v0`` (the official ids' layout).
    """
    if is_maze_name(name):
        return f"{TTRL_NAMESPACE}/{MAZE_ENV}/{name.removeprefix(f'{MAZE_ENV}-')}-v0"
    env, level = split_dataset_name(name)
    return f"{TTRL_NAMESPACE}/{env}/{level}-v0"


def official_minari_id(name: str) -> str | None:
    """Minari's published id for a D4RL-style or maze name, or None where Minari publishes none."""
    if is_maze_name(name):
        maze, _ = split_maze_name(name)
        if not MAZES[maze].official:
            return None
        level = name.removeprefix(f"{MAZE_ENV}-")
        return f"{OFFICIAL_MAZE_NAMESPACE}/{MAZE_ENV}/{level}-{OFFICIAL_MAZE_VERSION}"
    env, level = split_dataset_name(name)
    return f"{OFFICIAL_NAMESPACE}/{env}/{level}-v0" if level in OFFICIAL_LEVELS else None


def minari_datasets_root() -> Path:
    """The Minari datasets folder, read from ``MINARI_DATASETS_PATH`` on every call as Minari does."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def minari_dataset_dir(minari_id: str) -> Path:
    """The folder a Minari dataset id lives in (it holds ``data/metadata.json``)."""
    return minari_datasets_root() / minari_id


def minari_dataset_exists(minari_id: str) -> bool:
    """Whether a complete Minari dataset with this id is on disk."""
    return (minari_dataset_dir(minari_id) / "data" / "metadata.json").is_file()


def missing_dataset_hint(name: str) -> str:
    """One line saying how to get a D4RL-style or maze dataset that is not on disk."""
    official = official_minari_id(name)
    recipes = [f"`python scripts/make_dataset.py env={name}` (ttrl's local recipe)"]
    if official is not None:
        recipes.insert(0, f"`minari download {official}` (needs network)")
    return (
        f"dataset {name!r} is not in {minari_datasets_root()} (MINARI_DATASETS_PATH); "
        f"create it with {' or '.join(recipes)}"
    )


def resolve_dataset(name: str | os.PathLike, source: str = "auto") -> DatasetSpec:
    """Resolve a D4RL-style or maze name, a Minari id or an HDF5 path to a :class:`DatasetSpec`.

    Args:
        name: ``halfcheetah-medium``, ``pointmaze-umaze``, ``mujoco/hopper/expert-v0`` or
            ``/path/to/file.hdf5``.
        source: for D4RL-style and maze names: ``"auto"`` (ttrl's local dataset if present, else Minari's official
            one if present), ``"ttrl"`` or ``"official"``. Ignored for Minari ids and paths.

    Raises:
        TtrlError: unknown name or source, or the dataset is not on disk (the message names the command).
    """
    if source not in SOURCES:
        raise TtrlError(f"unknown dataset source {source!r}; use one of {', '.join(SOURCES)}")
    name = os.fspath(name)
    if _looks_like_path(name):
        return _resolve_hdf5(Path(name).expanduser())
    if _MINARI_ID.match(name) and name not in dataset_names():
        return _resolve_minari_id(name)
    return _resolve_d4rl_name(name, source)


def _looks_like_path(name: str) -> bool:
    return name.lower().endswith(_HDF5_SUFFIXES) or Path(name).expanduser().is_file()


def _resolve_d4rl_name(name: str, source: str) -> DatasetSpec:
    maze = is_maze_name(name)
    env = None if maze else split_dataset_name(name)[0]  # raises for unknown names
    candidates = {"ttrl": [ttrl_minari_id(name)], "official": [official_minari_id(name)]}
    candidates["auto"] = candidates["ttrl"] + candidates["official"]
    present = [i for i in candidates[source] if i is not None and minari_dataset_exists(i)]
    if not present:
        if source == "official" and official_minari_id(name) is None:
            raise TtrlError(
                f"Minari publishes no {name!r} dataset; use source=ttrl and create it with "
                f"`python scripts/make_dataset.py env={name}`"
            )
        raise TtrlError(missing_dataset_hint(name))
    if maze:  # the env spec (with its maze map) and any reference scores are in the metadata
        return replace(_resolve_minari_id(present[0]), name=name)
    info = ENVS[env]
    return DatasetSpec(
        name=name,
        env_id=info.env_id,
        minari_id=present[0],
        hdf5_path=None,
        ref_min_score=info.ref_min_score,
        ref_max_score=info.ref_max_score,
        ref_source="D4RL",
    )


def _resolve_minari_id(minari_id: str) -> DatasetSpec:
    if not minari_dataset_exists(minari_id):
        raise TtrlError(
            f"Minari dataset {minari_id!r} is not in {minari_datasets_root()} (MINARI_DATASETS_PATH); "
            f"get it with `minari download {minari_id}` (needs network) or point MINARI_DATASETS_PATH at it"
        )
    metadata = read_minari_metadata(minari_id)
    env_id = _env_id_from_metadata(metadata)
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    ref_source = "minari metadata"
    if ref_min is None or ref_max is None:
        info = _env_info_for_id(env_id)
        ref_min, ref_max = (info.ref_min_score, info.ref_max_score) if info else (None, None)
        ref_source = "D4RL" if info else "none"
    return DatasetSpec(
        name=minari_id,
        env_id=env_id,
        minari_id=minari_id,
        hdf5_path=None,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        ref_source=ref_source,
    )


def read_minari_metadata(minari_id: str) -> dict:
    """The ``metadata.json`` of a local Minari dataset, as a dict."""
    path = minari_dataset_dir(minari_id) / "data" / "metadata.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TtrlError(
            f"cannot read {path}: {err}; the dataset is damaged, delete its folder and create it again"
        ) from err


def _env_id_from_metadata(metadata: dict) -> str | None:
    env_spec = metadata.get("env_spec")
    if not env_spec:
        return None
    try:
        return json.loads(env_spec)["id"] if isinstance(env_spec, str) else env_spec["id"]
    except (ValueError, KeyError, TypeError):
        return None


def _env_info_for_id(env_id: str | None) -> EnvInfo | None:
    return next((info for info in ENVS.values() if info.env_id == env_id), None)


def _resolve_hdf5(path: Path) -> DatasetSpec:
    if not path.is_file():
        raise TtrlError(
            f"HDF5 file {path} does not exist; pass the path of a D4RL-format .hdf5 file"
        )
    env = _env_from_hdf5(path)
    info = ENVS.get(env) if env else None
    return DatasetSpec(
        name=str(path),
        env_id=info.env_id if info else None,
        minari_id=None,
        hdf5_path=path,
        ref_min_score=info.ref_min_score if info else None,
        ref_max_score=info.ref_max_score if info else None,
        ref_source="D4RL" if info else "none",
    )


def _env_from_hdf5(path: Path) -> str | None:
    """The env whose sizes match the file's; the file name decides between same-sized envs."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            dims = (file["observations"].shape[-1], file["actions"].shape[-1])
    except (OSError, KeyError, IndexError):
        return None  # loading reports what is wrong with the file
    matches = [env for env, info in ENVS.items() if (info.observation_dim, info.action_dim) == dims]
    named = [env for env in matches if env in path.name.lower()]
    if named:
        return named[0]
    return matches[0] if len(matches) == 1 else None
