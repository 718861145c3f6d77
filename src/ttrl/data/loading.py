"""Loading a dataset from disk into flat D4RL-style arrays (:class:`Transitions`).

Minari episodes and D4RL HDF5 files give the same view: one row per step, ``float32`` observations
(Minari stores float64), and ``terminals``/``timeouts`` flags. The last step of every episode has one of
the two flags set, so episodes never merge when they are split again. Nothing is downloaded.

Goal-conditioned datasets (PointMaze's dict observations ``observation`` / ``achieved_goal`` /
``desired_goal``) load with ``observation`` as the observations and the goal fields kept apart in
:attr:`Transitions.goals`, so the flat pipeline reads them as before and a goal-conditioned one can
ask for the goals (:meth:`Transitions.goal`).

A dataset whose spec has a :attr:`~ttrl.data.registry.DatasetSpec.recut` (AntMaze) is re-cut here,
once, for every stage that reads it (:func:`recut_episodes`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ttrl.data.registry import DatasetSpec, EpisodeRecut, minari_dataset_dir, resolve_dataset
from ttrl.errors import TtrlError

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
OBSERVATION_KEY = "observation"  # a dict observation's field that becomes the observation tokens
GOAL_KEYS = ("desired_goal", "achieved_goal")  # a dict observation's goal fields, kept as goals
GOALS_GROUP = "goals"  # the HDF5 group that holds them in write_d4rl_hdf5's files


@dataclass
class Transitions:
    """A dataset as flat arrays, one row per environment step (the D4RL layout).

    Attributes:
        observations: float32 ``[N, S]``, the observation the action was taken in.
        actions: float32 ``[N, A]``.
        rewards: float32 ``[N]``.
        terminals: bool ``[N]``, the env reached a terminal state at this step.
        timeouts: bool ``[N]``, the episode was cut here without terminating (time limit, end of data).
        goals: float32 ``[N, G]`` arrays by field (``desired_goal``, ``achieved_goal``) of the
            observation each action was taken in, for datasets with dict observations; else None.
        source: where the data came from, for error messages.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    goals: dict[str, np.ndarray] | None = None
    source: str = "dataset"

    def goal(self, key: str = "desired_goal") -> np.ndarray:
        """The goal field ``key`` (``[N, G]``); one :class:`TtrlError` line when the data has none.

        Raises:
            TtrlError: the dataset's observations are flat, or their dict lacks ``key``.
        """
        if self.goals is None or key not in self.goals:
            held = (
                f"its dict observations hold {', '.join(sorted(self.goals))}"
                if self.goals
                else "it has no goal fields"
            )
            raise TtrlError(
                f"{self.source} has no {key!r} field ({held}); a goal-conditioned run needs a dataset "
                f"whose dict observations hold {' and '.join(GOAL_KEYS)}, e.g. pointmaze-umaze"
            )
        return self.goals[key]

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def n_episodes(self) -> int:
        return int(np.count_nonzero(self.terminals | self.timeouts))

    def __len__(self) -> int:
        return len(self.rewards)


def make_transitions(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    source: str = "dataset",
    goals: dict[str, np.ndarray] | None = None,
) -> Transitions:
    """Check and convert raw arrays to :class:`Transitions` (float32, bool, last step closes an episode).

    ``goals`` (optional) are per-step goal arrays by field, checked like the observations.

    Raises:
        TtrlError: mismatched lengths, wrong ranks, NaN/inf values, or flags other than 0/1 (naming
            the key and the count).
    """
    goals = {key: np.asarray(value) for key, value in (goals or {}).items()}
    arrays = {
        "observations": np.asarray(observations),
        "actions": np.asarray(actions),
        "rewards": np.asarray(rewards).reshape(-1),
        "terminals": as_flags(terminals, "terminals", source),
        "timeouts": as_flags(timeouts, "timeouts", source),
        **goals,
    }
    for key in ("observations", "actions", *goals):
        if arrays[key].ndim != 2:
            raise TtrlError(
                f"{source}: {key} has shape {arrays[key].shape}, expected [steps, dim]; "
                f"ttrl supports flat Box observation and action spaces only"
            )
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise TtrlError(
            f"{source}: arrays have different lengths {lengths}; every key needs one row per step"
        )
    if lengths["rewards"] == 0:
        raise TtrlError(f"{source} holds no steps; create it again with more steps")
    for key in ("observations", "actions", "rewards", *goals):
        n_bad = int(np.count_nonzero(~np.isfinite(arrays[key])))
        if n_bad:
            raise TtrlError(
                f"{source}: {key} holds {n_bad} NaN/inf values; clean or recreate the dataset"
            )
    timeouts = arrays["timeouts"].copy()
    timeouts[-1] |= not arrays["terminals"][-1]  # data that ends mid-episode ends it here
    return Transitions(
        observations=arrays["observations"].astype(np.float32),
        actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32),
        terminals=arrays["terminals"],
        timeouts=timeouts,
        goals={key: value.astype(np.float32) for key, value in goals.items()} or None,
        source=source,
    )


def as_flags(values: np.ndarray, key: str, source: str) -> np.ndarray:
    """Episode-end flags as a flat bool array; one :class:`TtrlError` line if any is not 0 or 1.

    ``astype(bool)`` alone would turn NaN (and 0.5, 2, ...) into True: every step an episode end.
    """
    values = np.asarray(values).reshape(-1)
    if values.dtype == bool:
        return values.copy()
    if not np.issubdtype(values.dtype, np.number):
        raise TtrlError(
            f"{source}: {key} has dtype {values.dtype}; it must hold 0/1 (or bool) per step"
        )
    n_nan = int(np.count_nonzero(np.isnan(values))) if values.dtype.kind in "fc" else 0
    if n_nan:
        raise TtrlError(
            f"{source}: {key} holds {n_nan} NaN value{'s' * (n_nan != 1)} (of {len(values)}); "
            f"each step needs 0 or 1, so fix or recreate that field"
        )
    bad = (values != 0) & (values != 1)
    if bad.any():
        raise TtrlError(
            f"{source}: {key} holds {int(bad.sum())} values other than 0 and 1 (the first is "
            f"{values[bad][0].item()!r} at step {int(np.flatnonzero(bad)[0])}); fix or recreate "
            f"that field"
        )
    return values.astype(bool)


def load_transitions(
    spec_or_name: DatasetSpec | str | os.PathLike, require_goals: bool = False
) -> Transitions:
    """Load a dataset (a :class:`DatasetSpec` or any name :func:`resolve_dataset` accepts).

    ``require_goals``: refuse a dataset without the goal fields :data:`GOAL_KEYS` (goal-conditioned use).

    The spec's :attr:`~ttrl.data.registry.DatasetSpec.recut` (AntMaze's episodes and terminals) is
    applied here, so the transformer, the baselines and summaries all read the same episodes.

    Raises:
        TtrlError: the dataset is missing (naming the command that makes it), malformed, holds NaN/inf,
            or lacks a goal field ``require_goals`` asks for.
    """
    spec = spec_or_name if isinstance(spec_or_name, DatasetSpec) else resolve_dataset(spec_or_name)
    if spec.hdf5_path is not None:
        transitions = load_d4rl_hdf5(spec.hdf5_path)
    elif spec.minari_id is None:
        raise TtrlError(f"dataset spec {spec.name!r} names neither a Minari id nor an HDF5 file")
    else:
        transitions = load_minari(spec.minari_id)
    if spec.recut is not None:
        transitions = recut_episodes(transitions, spec.recut)
    if require_goals:
        for key in GOAL_KEYS:
            transitions.goal(key)  # raises, naming the dataset and the fields it has
    return transitions


def recut_episodes(transitions: Transitions, recut: EpisodeRecut) -> Transitions:
    """``transitions`` with terminals cleared and every episode cut into ``recut.time_limit`` chunks.

    The stored timeouts stay episode ends (a stored end is a reset or a cut, so no chunk spans
    one); a step that ended its episode only by a terminal flag no longer does when terminals are
    cleared (in AntMaze's data the ant is not reset at its goal). Within each remaining episode
    every ``time_limit``-th step becomes a timeout. TT's loader counts its chunks over the whole
    dataset instead; the two agree wherever stored episodes are multiples of the limit long.
    """
    if recut.time_limit < 1:
        raise TtrlError(f"an episode re-cut needs time_limit >= 1, got {recut.time_limit}")
    terminals = (
        np.zeros_like(transitions.terminals) if recut.zero_terminals else transitions.terminals
    )
    ends = transitions.timeouts | terminals
    ends[-1] = True
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1])
    lengths = np.diff(np.append(starts, len(ends)))
    step = np.arange(len(ends)) - np.repeat(starts, lengths)  # step within its stored episode
    timeouts = transitions.timeouts | ((step + 1) % recut.time_limit == 0)
    timeouts[-1] |= not terminals[-1]  # the data's last step still ends an episode
    return replace(transitions, terminals=terminals, timeouts=timeouts)  # arrays shared, not copied


def load_minari(minari_id: str) -> Transitions:
    """Flatten a local Minari dataset's episodes (``obs[:-1]``, terminations, truncations)."""
    import minari

    try:
        dataset = minari.load_dataset(minari_id)
        episodes = list(dataset.iterate_episodes())
    except FileNotFoundError as err:
        raise TtrlError(
            f"Minari dataset {minari_id!r} is not on disk; get it with `minari download {minari_id}` "
            f"(needs network) or point MINARI_DATASETS_PATH at the folder that holds it"
        ) from err
    except (OSError, KeyError, ValueError) as err:
        raise TtrlError(
            f"cannot read Minari dataset {minari_id!r}: {err}; delete its folder and create it again"
        ) from err
    if not episodes:
        raise TtrlError(f"Minari dataset {minari_id!r} holds no episodes; create it again")
    source = f"Minari dataset {minari_id} ({minari_dataset_dir(minari_id)})"
    observations, goals = _split_observations(episodes, source)
    terminals = as_flags(np.concatenate([e.terminations for e in episodes]), "terminations", source)
    timeouts = as_flags(np.concatenate([e.truncations for e in episodes]), "truncations", source)
    # an episode stored with neither flag (e.g. cut by the end of collection) still ends here
    ends = np.cumsum([len(e.terminations) for e in episodes]) - 1
    timeouts[ends] |= ~terminals[ends]
    return make_transitions(
        observations=observations,
        actions=np.concatenate([e.actions for e in episodes]),
        rewards=np.concatenate([e.rewards for e in episodes]),
        terminals=terminals,
        timeouts=timeouts,
        source=source,
        goals=goals,
    )


def _split_observations(
    episodes: list, source: str
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Episodes' observations (final ones dropped) as ``[N, S]`` and, for dict ones, their goals.

    A dict observation gives its ``observation`` field as the observations and keeps the goal
    fields (:data:`GOAL_KEYS`) it holds; other fields are dropped.
    """
    first = episodes[0].observations
    if isinstance(first, np.ndarray):
        return np.concatenate([e.observations[:-1] for e in episodes]), None
    if not isinstance(first, dict):
        raise TtrlError(
            f"{source} has {type(first).__name__} observations; ttrl reads flat Box observations "
            f"or dict ones with an {OBSERVATION_KEY!r} field"
        )
    if OBSERVATION_KEY not in first or not isinstance(first[OBSERVATION_KEY], np.ndarray):
        raise TtrlError(
            f"{source} has dict observations without a flat {OBSERVATION_KEY!r} field (it holds "
            f"{', '.join(sorted(first))}); ttrl reads the {OBSERVATION_KEY!r} field as the observation"
        )
    keys = [OBSERVATION_KEY] + [key for key in GOAL_KEYS if key in first]
    stacked = {key: np.concatenate([e.observations[key][:-1] for e in episodes]) for key in keys}
    observations = stacked.pop(OBSERVATION_KEY)
    return observations, stacked


def load_d4rl_hdf5(path: str | Path) -> Transitions:
    """Read a D4RL-format HDF5 file (keys observations, actions, rewards, terminals, timeouts)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as file:
            missing = [key for key in D4RL_KEYS if key not in file]
            if missing:
                raise TtrlError(
                    f"{path} lacks the D4RL keys {', '.join(missing)}; a D4RL HDF5 file needs "
                    f"{', '.join(D4RL_KEYS)}"
                )
            arrays = {key: file[key][()] for key in D4RL_KEYS}
            if GOALS_GROUP in file:
                arrays["goals"] = {key: value[()] for key, value in file[GOALS_GROUP].items()}
    except OSError as err:
        raise TtrlError(
            f"cannot read {path} as HDF5 ({err}); pass a D4RL-format .hdf5 file"
        ) from err
    return make_transitions(**arrays, source=str(path))


def write_d4rl_hdf5(path: str | Path, transitions: Transitions) -> Path:
    """Write ``transitions`` as a D4RL-format HDF5 file (atomically); return its path.

    Goal arrays, when there are any, go to the group ``goals`` (which :func:`load_d4rl_hdf5` reads).
    """
    import h5py

    from ttrl.io import atomic_write

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as file:
            for key in D4RL_KEYS:
                file.create_dataset(key, data=getattr(transitions, key))
            for key, value in (transitions.goals or {}).items():
                file.create_dataset(f"{GOALS_GROUP}/{key}", data=value)

    return atomic_write(path, write)
