"""Dataset names: which data a name means, where it lives and which reference scores normalise it.

A dataset can be named five ways:

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
- an AntMaze name ``antmaze-<dataset>`` (``antmaze-umaze``, ``antmaze-medium-play``, ...;
  :data:`ANTMAZES`). It maps to Minari's ``D4RL/antmaze/<dataset>-v1``; ttrl makes no real AntMaze
  data, only a small structural test dataset ``ttrl/antmaze/<dataset>-v0``
  (:mod:`ttrl.making.antmaze`), which ``source=ttrl`` names (``auto`` prefers the official one). A
  Minari id ``<namespace>/antmaze/<dataset>-vN`` and a D4RL HDF5 file named
  ``antmaze-<dataset>-v2.hdf5`` (D4RL's flat 29-dim observations) are AntMaze datasets too. See
  "AntMaze" below.

Nothing is ever downloaded: a dataset that is not on disk is an error that names the command making it.

AntMaze
-------
D4RL's AntMaze datasets are not episodes of the task. Their data are long collection runs of a
goal-reaching ant, stored in 1000-step pieces (Minari's, as its generation script reads, cut at the
env's time limit and every 200k steps) or as one long run, and their terminal flags mark the steps
where the ant is at its goal, not a failure: the run goes on from there. So, as TT's AntMaze loader does (TT's own was
never released; the TAP codebase holds an adaptation), every AntMaze dataset is read with
:class:`EpisodeRecut` (``DatasetSpec.recut``), applied by :func:`ttrl.data.loading.load_transitions`
for every stage at once (the transformer, IQL, dataset summaries):

- episodes are re-cut into chunks of the env's time limit (700 steps for umaze, 1000 otherwise), so
  training episodes are as long as evaluation ones and the value targets sum over one episode's
  horizon;
- terminals are zeroed: reaching the goal is not the end of an episode, and with no terminal step
  left no termination penalty applies (the transformer's value targets are plain discounted sums of
  the 0/1 rewards).

IQL's AntMaze reward shift (-1) is IQL's own setting (``configs/iql/antmaze.yaml``), not the data's.
Scores are D4RL's: reference returns 0 and 1, so the normalised score is 100 x success.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
SUCCESS_DISTANCE = 0.45  # gymnasium-robotics' maze goal radius (reward, success, a new goal)
REWARD_TYPES = ("sparse", "dense")
OFFICIAL_MAZE_NAMESPACE = "D4RL"
OFFICIAL_MAZE_VERSION = "v2"


@dataclass(frozen=True)
class EpisodeRecut:
    """How a dataset's stored episodes are re-cut before any stage reads them (AntMaze's rule).

    A property of the dataset (:attr:`DatasetSpec.recut`), applied once by
    :func:`ttrl.data.loading.load_transitions`; see "AntMaze" in this module's docstring for why.

    Attributes:
        time_limit: every stored episode is cut into chunks of at most this many steps, counted
            from its start; the last step of each chunk becomes a timeout.
        zero_terminals: clear every terminal flag; such a step ends no episode (in AntMaze's data
            the run goes on from the goal), and no termination penalty applies to it.
    """

    time_limit: int
    zero_terminals: bool = True


@dataclass(frozen=True)
class AntMazeInfo:
    """One of D4RL's AntMaze datasets: the gymnasium-robotics env of its maze and its time limit.

    Attributes:
        env_id: gymnasium-robotics' ``AntMaze_*-v5`` env of the maze the data was collected in (the
            v5 version of the env Minari's generation script names).
        time_limit: the env's time limit (``gymnasium.spec(env_id).max_episode_steps``): where
            episodes are re-cut, as TT's AntMaze loader does.
    """

    env_id: str
    time_limit: int

    @property
    def recut(self) -> EpisodeRecut:
        return EpisodeRecut(time_limit=self.time_limit, zero_terminals=True)


# The one table of AntMaze facts: D4RL's six datasets (Minari's D4RL/antmaze/<dataset>-v1, D4RL's
# antmaze-<dataset>-v2.hdf5). umaze's time limit is 700 steps, the others' 1000.
ANTMAZES: dict[str, AntMazeInfo] = {
    "umaze": AntMazeInfo("AntMaze_UMaze-v5", 700),
    "umaze-diverse": AntMazeInfo("AntMaze_UMaze-v5", 700),
    "medium-play": AntMazeInfo("AntMaze_Medium-v5", 1000),
    "medium-diverse": AntMazeInfo("AntMaze_Medium_Diverse_GR-v5", 1000),
    "large-play": AntMazeInfo("AntMaze_Large-v5", 1000),
    "large-diverse": AntMazeInfo("AntMaze_Large_Diverse_GR-v5", 1000),
}
ANTMAZE_ENV = "antmaze"  # the env part of AntMaze names and ids (ttrl/antmaze/umaze-v0)
OFFICIAL_ANTMAZE_NAMESPACE = "D4RL"
OFFICIAL_ANTMAZE_VERSION = "v1"
# gym.make kwargs that give AntMaze-v5 the datasets' observation: 27 dims (the ant's qpos without
# x, y, and qvel), without the contact forces v5 adds by default (105 dims). D4RL's flat 29-dim
# observations are the env's achieved_goal (x, y) followed by these 27.
ANTMAZE_ENV_KWARGS: dict[str, Any] = {"include_cfrc_ext_in_observation": False}
# D4RL's reference returns for AntMaze: normalised score = 100 x return, the success rate
ANTMAZE_REF_MIN_SCORE, ANTMAZE_REF_MAX_SCORE = 0.0, 1.0

_MINARI_ID = re.compile(r"^[\w.-]+(/[\w.-]+)+-v\d+$")
_ANTMAZE_MINARI_ID = re.compile(rf"^[\w.-]+/{ANTMAZE_ENV}/(?P<dataset>[\w.-]+)-v\d+$")
_ANTMAZE_FILE = re.compile(rf"^{ANTMAZE_ENV}[-_](?P<dataset>[\w-]+?)(?:[-_]v\d+)?$")
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
        env_kwargs: ``gym.make`` keyword arguments that give ``env_id`` the dataset's observations
            (AntMaze: :data:`ANTMAZE_ENV_KWARGS`); empty for the others.
        recut: how the stored episodes are re-cut on loading (AntMaze: :class:`EpisodeRecut`);
            None keeps them as stored.
    """

    name: str
    env_id: str | None
    minari_id: str | None
    hdf5_path: Path | None
    ref_min_score: float | None
    ref_max_score: float | None
    ref_source: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    recut: EpisodeRecut | None = None

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


def antmaze_dataset_names() -> list[str]:
    """Every AntMaze dataset name ttrl knows, e.g. ``antmaze-umaze``, ``antmaze-large-diverse``."""
    return [f"{ANTMAZE_ENV}-{dataset}" for dataset in ANTMAZES]


def is_antmaze_name(name: str) -> bool:
    """Whether ``name`` is an AntMaze dataset name (``antmaze-<dataset>``)."""
    return name in antmaze_dataset_names()


def split_antmaze_name(name: str) -> str:
    """The dataset part of ``antmaze-<dataset>`` (``umaze``, ``medium-play``, ...).

    Raises:
        TtrlError: not a known AntMaze name (one line listing them).
    """
    if not is_antmaze_name(name):
        raise unknown_antmaze_error(name)
    return name.removeprefix(f"{ANTMAZE_ENV}-")


def unknown_antmaze_error(name: str) -> TtrlError:
    """The one line for an AntMaze dataset ttrl does not know, listing the ones it does."""
    return TtrlError(
        f"unknown AntMaze dataset {name!r}; use one of {', '.join(antmaze_dataset_names())} "
        f"(Minari's D4RL/antmaze/<dataset>-{OFFICIAL_ANTMAZE_VERSION}, or D4RL's "
        f"antmaze-<dataset>-v2.hdf5)"
    )


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
    if name.startswith(f"{ANTMAZE_ENV}-"):
        raise unknown_antmaze_error(name)
    known = dataset_names() + maze_dataset_names() + antmaze_dataset_names()
    raise TtrlError(
        f"unknown dataset {name!r}; use one of {', '.join(known)}, "
        f"a Minari id like mujoco/hopper/medium-v0, or a path to a D4RL .hdf5 file"
    )


def ttrl_minari_id(name: str) -> str:
    """ttrl's own Minari id for a D4RL-style or maze name: ``ttrl/<env>/<level>-v0``.

    Maze names map to ``ttrl/pointmaze/<maze>[-dense]-v0`` (the official ids' layout), AntMaze
    names to ``ttrl/antmaze/<dataset>-v0`` (the structural test data of :mod:`ttrl.making.antmaze`).
    """
    if is_antmaze_name(name):
        return f"{TTRL_NAMESPACE}/{ANTMAZE_ENV}/{split_antmaze_name(name)}-v0"
    if is_maze_name(name):
        return f"{TTRL_NAMESPACE}/{MAZE_ENV}/{name.removeprefix(f'{MAZE_ENV}-')}-v0"
    env, level = split_dataset_name(name)
    return f"{TTRL_NAMESPACE}/{env}/{level}-v0"


def official_minari_id(name: str) -> str | None:
    """Minari's published id for a D4RL-style, maze or AntMaze name, or None where it publishes none."""
    if is_antmaze_name(name):
        dataset = split_antmaze_name(name)
        return f"{OFFICIAL_ANTMAZE_NAMESPACE}/{ANTMAZE_ENV}/{dataset}-{OFFICIAL_ANTMAZE_VERSION}"
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
    if is_antmaze_name(name):  # ttrl's own is test data only: the real one first, and said so
        recipes = [f"`python scripts/make_dataset.py env={name}` (a structural test dataset only)"]
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
    antmaze = is_antmaze_name(name)
    maze = is_maze_name(name)
    env = None if maze or antmaze else split_dataset_name(name)[0]  # raises for unknown names
    candidates = {"ttrl": [ttrl_minari_id(name)], "official": [official_minari_id(name)]}
    # AntMaze: ttrl's own dataset is structural test data, so the real one wins when both are there
    first, then = ("official", "ttrl") if antmaze else ("ttrl", "official")
    candidates["auto"] = candidates[first] + candidates[then]
    present = [i for i in candidates[source] if i is not None and minari_dataset_exists(i)]
    if not present:
        if source == "official" and official_minari_id(name) is None:
            raise TtrlError(
                f"Minari publishes no {name!r} dataset; use source=ttrl and create it with "
                f"`python scripts/make_dataset.py env={name}`"
            )
        raise TtrlError(missing_dataset_hint(name))
    if antmaze:
        return antmaze_spec(name, split_antmaze_name(name), minari_id=present[0])
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


def antmaze_spec(
    name: str, dataset: str, minari_id: str | None = None, hdf5_path: Path | None = None
) -> DatasetSpec:
    """The :class:`DatasetSpec` of the AntMaze ``dataset`` (a key of :data:`ANTMAZES`) stored at
    ``minari_id`` or ``hdf5_path``: its ``AntMaze_*-v5`` env with the data's observation size,
    D4RL's reference returns and the re-cut of its episodes."""
    info = ANTMAZES[dataset]
    return DatasetSpec(
        name=name,
        env_id=info.env_id,
        minari_id=minari_id,
        hdf5_path=hdf5_path,
        ref_min_score=ANTMAZE_REF_MIN_SCORE,
        ref_max_score=ANTMAZE_REF_MAX_SCORE,
        ref_source="D4RL",
        env_kwargs=dict(ANTMAZE_ENV_KWARGS),
        recut=info.recut,
    )


def _resolve_minari_id(minari_id: str) -> DatasetSpec:
    antmaze = _ANTMAZE_MINARI_ID.match(minari_id)
    if antmaze and antmaze["dataset"] not in ANTMAZES:
        raise unknown_antmaze_error(minari_id)
    if not minari_dataset_exists(minari_id):
        raise TtrlError(
            f"Minari dataset {minari_id!r} is not in {minari_datasets_root()} (MINARI_DATASETS_PATH); "
            f"get it with `minari download {minari_id}` (needs network) or point MINARI_DATASETS_PATH at it"
        )
    if antmaze:  # D4RL/antmaze/<dataset>-v1, ttrl/antmaze/<dataset>-v0, ...
        return antmaze_spec(minari_id, antmaze["dataset"], minari_id=minari_id)
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
    antmaze = _ANTMAZE_FILE.match(path.stem.lower())
    if antmaze:  # antmaze-umaze-v2.hdf5, antmaze_medium_play.hdf5, ...
        dataset = antmaze["dataset"].replace("_", "-")
        if dataset not in ANTMAZES:
            raise unknown_antmaze_error(path.name)
        return antmaze_spec(str(path), dataset, hdf5_path=path)
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
