"""PointMaze environments and datasets, made locally with the recipe of Minari's ``D4RL/pointmaze/*``.

The recipe (Minari's dataset-generation scripts, after D4RL's maze2d):

- a waypoint planner: Q-iteration (value iteration) over the maze's grid cells toward the goal's cell
  gives, for every cell, the next cell on a shortest path (:class:`MazeGrid`);
- a PD controller tracks the next waypoint: ``action = p * (waypoint - pos) + d * velocity`` with
  ``p = 10``, ``d = -1``; the last waypoint is the goal itself (:class:`WaypointController`);
- Gaussian action noise ``sigma = 0.5``, clipped to the action space ``[-1, 1]^2``;
- a continuing task: the env draws a new goal each time the ball gets within 0.45 of the goal
  (``continuing_task=True, reset_target=True``), so episodes are cut only by the time limit;
- 1M steps per dataset.

Datasets are ``ttrl/pointmaze/<maze>[-dense]-v0`` (names ``pointmaze-<maze>[-dense]``, see
:mod:`ttrl.data.registry`) with Minari's pointmaze structure: dict observations ``observation``
(x, y, vx, vy), ``achieved_goal`` (x, y), ``desired_goal`` (x, y); rewards as the env computes them
(sparse: 1 within 0.45 of the goal, else 0; dense: ``exp(-distance)``); no terminations; truncations
at the time limit; and the env spec the data was made with, so ``dataset.recover_environment()``
rebuilds the env (for fourrooms with its maze map).

Mazes: ``umaze``, ``medium``, ``large`` (gymnasium-robotics' ``PointMaze_UMaze/Medium/Large-v3`` maps)
and ``fourrooms`` (:data:`FOURROOMS_MAP`).

Differences from Minari's scripts (the recorded fields are the same; trajectories differ in detail):
the controller's noise and waypoint jitter come from its own seeded generator (not numpy's global
one); it plans again from the ball's cell when noise or a collision has pushed the ball off its path
(Minari's keeps steering at the old waypoint); the env is seeded once, later resets continuing its
RNG (Minari reseeds each reset with seed + 1); no ``infos`` (Minari's hold success, qpos, qvel, goal)
and no reference scores or single-goal evaluation env (Minari's rate its expert on one).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttrl.data.registry import (
    MAZE_ENV,
    MAZES,
    REWARD_TYPES,
    SUCCESS_DISTANCE,  # noqa: F401 (re-exported: the maze recipe's goal radius)
    minari_datasets_root,
    split_maze_name,
    ttrl_minari_id,
)
from ttrl.errors import TtrlError
from ttrl.making.collect import (
    check_free_space,
    check_make_options,
    collect_episodes,
    dataset_writer,
    estimate_dataset_bytes,
    rollout_bytes,
    write_minari_dataset,
)

MazeMap = list[list[int | str]]  # rows of cells: 1 wall, 0 free, "g"/"r"/"c" goal/reset/both cells

# Sutton, Precup & Singh's (1999) four-rooms gridworld as a PointMaze map: 13 x 13 cells with the
# outer wall, 104 free cells in four rooms (5x5 top left, 6x5 top right, 5x5 bottom left, 4x5 bottom
# right) joined by four one-cell doorways, the horizontal walls offset by one row as in the original.
# Every free cell can hold the goal or the ball's start. Its time limit is the large maze's 800 steps
# (MAZES): its longest shortest path is 20 cells (the large maze's 19), and the noiseless controller
# took at most 444 steps from 30 random starts to their goals (the large maze: 496).
FOURROOMS_MAP: MazeMap = [
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
]
MAZE_NAMES = tuple(MAZES)  # umaze, medium, large, fourrooms
GAINS = {"p": 10.0, "d": -1.0}  # Minari's PD gains
ACTION_NOISE = 0.5  # Minari's Gaussian action noise
WAYPOINT_THRESHOLD = 0.1  # Minari's: move on to the next waypoint within this distance of it
WAYPOINT_JITTER = 0.2  # Minari's: later waypoints are the cell centre minus U[0, 0.2)^2
# Minari's cell moves, in its order (argmax ties go to the first): (row, column) steps
MOVES = np.array([(0, 1), (0, -1), (-1, 0), (1, 0)])
DISCOUNT = 0.99  # Minari's Q-iteration discount
_NOISE_STREAM = 0x7474726C  # keeps the controller's RNG apart from the env's one of the same seed


def _robotics() -> Any:
    """Import gymnasium-robotics (registering its envs) without its import-time notice on stderr."""
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    return gymnasium_robotics


def maze_map(maze: str) -> MazeMap:
    """The cell map of the maze ``maze`` (umaze, medium, large, fourrooms), as a fresh list.

    Raises:
        TtrlError: unknown maze name (listing the known ones).
    """
    if maze == "fourrooms":
        return [list(row) for row in FOURROOMS_MAP]
    maps = _robotics().envs.maze.maps
    known = {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE, "large": maps.LARGE_MAZE}
    if maze not in known:
        raise TtrlError(f"unknown maze {maze!r}; use one of {', '.join(MAZE_NAMES)}")
    return [list(row) for row in known[maze]]


def register_maze_envs() -> None:
    """Register gymnasium-robotics' envs and ttrl's ``PointMaze_FourRooms[Dense]-v3`` (idempotent)."""
    import gymnasium as gym

    _robotics()
    info = MAZES["fourrooms"]
    for reward_type in REWARD_TYPES:
        env_id = info.env_id_for(reward_type)
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="gymnasium_robotics.envs.maze.point_maze:PointMazeEnv",
                kwargs={"maze_map": maze_map("fourrooms"), "reward_type": reward_type},
                max_episode_steps=info.max_episode_steps,
            )


def maze_env_args(
    maze: str | MazeMap,
    reward_type: str = "sparse",
    continuing_task: bool = True,
    reset_target: bool = True,
) -> tuple[str, dict[str, Any]]:
    """The gymnasium id and ``gym.make`` kwargs of a named maze or a custom map.

    A custom map is made as ``PointMaze_UMaze[Dense]-v3`` with ``maze_map`` set (300-step limit).
    The defaults are the continuing task with a new goal each time one is reached, as the datasets
    were collected.

    Raises:
        TtrlError: unknown maze or reward type.
    """
    if reward_type not in REWARD_TYPES:
        raise TtrlError(
            f"unknown reward type {reward_type!r}; use one of {', '.join(REWARD_TYPES)}"
        )
    kwargs: dict[str, Any] = {"continuing_task": continuing_task, "reset_target": reset_target}
    if isinstance(maze, str):
        if maze not in MAZES:
            raise TtrlError(f"unknown maze {maze!r}; use one of {', '.join(MAZE_NAMES)}")
        return MAZES[maze].env_id_for(reward_type), kwargs
    custom = {"maze_map": [list(row) for row in maze]}
    return MAZES["umaze"].env_id_for(reward_type), {**kwargs, **custom}


def make_maze_env(
    maze: str | MazeMap,
    reward_type: str = "sparse",
    continuing_task: bool = True,
    reset_target: bool = True,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> Any:
    """A PointMaze env for a named maze or a custom map (``gym.make``, with its time limit).

    Args:
        maze: umaze, medium, large, fourrooms, or a maze map (list of rows of 0/1/"g"/"r"/"c").
        reward_type: ``"sparse"`` (1 within 0.45 of the goal) or ``"dense"`` (``exp(-distance)``).
        continuing_task: reaching the goal does not end the episode.
        reset_target: with ``continuing_task``, a new goal is drawn when the goal is reached.
        max_episode_steps: override the time limit (300/600/800/800 for umaze/medium/large/fourrooms).
        kwargs: more ``gym.make`` arguments (e.g. ``render_mode``).

    Raises:
        TtrlError: unknown maze or reward type.
    """
    import gymnasium as gym

    env_id, env_kwargs = maze_env_args(maze, reward_type, continuing_task, reset_target)
    register_maze_envs()
    return gym.make(env_id, max_episode_steps=max_episode_steps, **env_kwargs, **kwargs)


@dataclass
class MazeGrid:
    """A maze's cells and, per goal cell, the next cell of a shortest path from every cell.

    Coordinates follow gymnasium-robotics' ``Maze``: cell ``(i, j)`` (row, column) has its centre at
    ``x = (j + 0.5) * s - width * s / 2``, ``y = height * s / 2 - (i + 0.5) * s`` (``s`` the cell size,
    1 for PointMaze, 4 for AntMaze).

    Attributes:
        maze_map: rows of cells, 1 for walls.
        scaling: the cell size ``s``.
    """

    maze_map: MazeMap
    scaling: float = 1.0
    _next: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.maze_map, str):  # a maze name
            self.maze_map = maze_map(self.maze_map)
        self.walls = np.array([[cell == 1 for cell in row] for row in self.maze_map])
        if self.walls.ndim != 2 or self.walls.all():
            raise TtrlError("a maze map needs equal-length rows and at least one free (non-1) cell")

    @classmethod
    def of(cls, maze: str | MazeMap | Any) -> MazeGrid:
        """A grid from a maze name, a maze map, or an object with ``maze_map`` (e.g. ``env.unwrapped.maze``)."""
        if isinstance(maze, MazeGrid):
            return maze
        if isinstance(maze, str):
            return cls(maze_map(maze))
        if hasattr(maze, "maze_map"):
            return cls(maze.maze_map, float(getattr(maze, "maze_size_scaling", 1.0)))
        return cls([list(row) for row in maze])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.walls.shape

    def cell_of(self, xy: np.ndarray) -> tuple[int, int]:
        """The ``(row, column)`` cell holding the point ``xy`` (clamped into the map)."""
        rows, cols = self.shape
        i = math.floor((rows * self.scaling / 2 - xy[1]) / self.scaling)
        j = math.floor((xy[0] + cols * self.scaling / 2) / self.scaling)
        return min(max(i, 0), rows - 1), min(max(j, 0), cols - 1)

    def center(self, cell: tuple[int, int]) -> np.ndarray:
        """The ``(x, y)`` centre of a cell."""
        rows, cols = self.shape
        return np.array(
            [
                (cell[1] + 0.5) * self.scaling - cols * self.scaling / 2,
                rows * self.scaling / 2 - (cell[0] + 0.5) * self.scaling,
            ]
        )

    def next_cell(self, cell: tuple[int, int], goal_cell: tuple[int, int]) -> tuple[int, int]:
        """The neighbour of ``cell`` on a shortest path to ``goal_cell`` (``goal_cell`` itself there)."""
        if cell == goal_cell:
            return goal_cell
        table = self._next.get(goal_cell)
        if table is None:
            table = self._next[goal_cell] = self._q_iteration(goal_cell)
        return int(table[cell][0]), int(table[cell][1])

    def _q_iteration(self, goal_cell: tuple[int, int]) -> np.ndarray:
        """Minari's Q-iteration toward ``goal_cell``: ``[rows, cols, 2]`` next cell of every cell.

        Reward 1 for a move into the goal cell, discount 0.99, moves into walls or off the map
        impossible; iterated to convergence (Minari stops after 50 sweeps, enough for its mazes).
        """
        rows, cols = self.shape
        if self.walls[goal_cell]:
            raise TtrlError(f"goal cell {goal_cell} is a wall of the maze")
        cells = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1)
        targets = cells[:, :, None, :] + MOVES  # [rows, cols, moves, 2]
        inside = (
            (targets[..., 0] >= 0)
            & (targets[..., 0] < rows)
            & (targets[..., 1] >= 0)
            & (targets[..., 1] < cols)
        )
        ti, tj = np.clip(targets[..., 0], 0, rows - 1), np.clip(targets[..., 1], 0, cols - 1)
        valid = inside & ~self.walls[ti, tj]
        reward = ((ti == goal_cell[0]) & (tj == goal_cell[1])).astype(np.float64)
        value = np.zeros((rows, cols))
        for _ in range(rows * cols + 1):  # a shortest path visits each cell at most once
            q = np.where(valid, reward + DISCOUNT * value[ti, tj], -np.inf)
            new_value = np.where(self.walls, 0.0, q.max(axis=-1))
            if np.array_equal(new_value, value):
                break
            value = new_value
        best = q.argmax(axis=-1)
        return np.take_along_axis(targets, best[:, :, None, None], axis=2)[:, :, 0]


class WaypointController:
    """Minari's PointMaze expert: Q-iteration waypoints tracked by a PD controller.

    Usable as a policy (``controller.act(obs)`` or ``controller(obs)``) on PointMaze's dict
    observations; it plans again whenever ``desired_goal`` moves, so it follows continuing tasks and
    resets without being told. With ``noise=0`` and ``seed`` fixed it is deterministic.

    Args:
        maze: a maze name, a maze map, a :class:`MazeGrid`, or ``env.unwrapped.maze``.
        noise: standard deviation of the Gaussian action noise (0.5 makes the datasets).
        seed: seeds the noise and the waypoint jitter.
        p, d: PD gains (Minari's 10 and -1).
        waypoint_threshold: distance to a waypoint at which the next one becomes the target.
        action_low, action_high: the action space's bounds (PointMaze's -1 and 1).
    """

    def __init__(
        self,
        maze: str | MazeMap | MazeGrid | Any,
        noise: float = 0.0,
        seed: int | None = None,
        p: float = GAINS["p"],
        d: float = GAINS["d"],
        waypoint_threshold: float = WAYPOINT_THRESHOLD,
        action_low: float = -1.0,
        action_high: float = 1.0,
    ) -> None:
        if noise < 0:
            raise TtrlError(f"noise={noise} must be >= 0")
        self.grid = MazeGrid.of(maze)
        self.noise = noise
        self.p, self.d = p, d
        self.waypoint_threshold = waypoint_threshold
        self.action_low, self.action_high = action_low, action_high
        self.rng = np.random.default_rng(None if seed is None else [seed, _NOISE_STREAM])
        self.reset()

    def reset(self) -> None:
        """Forget the current goal and path (the next call plans from scratch)."""
        self._goal: np.ndarray | None = None
        self._goal_cell: tuple[int, int] = (-1, -1)
        self._from: tuple[int, int] = (-1, -1)  # the cell the ball is leaving
        self._waypoint: tuple[int, int] = (-1, -1)  # the cell it is heading for
        self._target = np.zeros(2)  # the point it steers at: the waypoint (jittered) or the goal

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The action for a PointMaze observation dict (``observation``, ``achieved_goal``,
        ``desired_goal``): float32 ``[2]``, noise added and clipped to the action bounds."""
        pos = np.asarray(observation["achieved_goal"], dtype=np.float64)
        velocity = np.asarray(observation["observation"], dtype=np.float64)[2:4]
        goal = np.asarray(observation["desired_goal"], dtype=np.float64)
        if self._goal is None or np.linalg.norm(goal - self._goal) > 1e-3:
            self._plan(pos, goal)
        cell = self.grid.cell_of(pos)
        if cell not in (self._from, self._waypoint):  # pushed off the path: plan from here
            self._plan(pos, goal)
        elif (
            self._waypoint != self._goal_cell
            and np.linalg.norm(self._target - pos) <= self.waypoint_threshold
        ):
            self._head_for(self.grid.next_cell(self._waypoint, self._goal_cell), jitter=True)
        action = self.p * (self._target - pos) + self.d * velocity
        if self.noise:
            action = action + self.rng.normal(0.0, self.noise, size=2)
        return np.clip(action, self.action_low, self.action_high).astype(np.float32)

    __call__ = act

    def _plan(self, pos: np.ndarray, goal: np.ndarray) -> None:
        self._goal = goal.copy()
        self._goal_cell = self.grid.cell_of(goal)
        self._waypoint = self.grid.cell_of(pos)
        self._head_for(self.grid.next_cell(self._waypoint, self._goal_cell), jitter=False)

    def _head_for(self, cell: tuple[int, int], jitter: bool) -> None:
        self._from, self._waypoint = self._waypoint, cell
        if cell == self._goal_cell:
            self._target = self._goal  # the last waypoint is the goal itself
        elif jitter:  # as Minari: later waypoints are jittered toward -x, -y
            self._target = self.grid.center(cell) - self.rng.uniform(size=2) * WAYPOINT_JITTER
        else:
            self._target = self.grid.center(cell)


def maze_env_spec(
    maze: str, reward_type: str = "sparse", max_episode_steps: int | None = None
) -> Any:
    """The ``EnvSpec`` a maze dataset records: the continuing task with a new goal when reached."""
    env = make_maze_env(maze, reward_type, max_episode_steps=max_episode_steps)
    try:
        return env.spec
    finally:
        env.close()


def collect_maze_episodes(
    maze: str,
    n_steps: int,
    seed: int = 0,
    reward_type: str = "sparse",
    noise: float = ACTION_NOISE,
    progress: bool = True,
    max_episode_steps: int | None = None,
) -> list:
    """``n_steps`` of the noisy waypoint controller in ``maze``'s continuing task (Minari's recipe).

    The env is seeded once (``reset(seed=seed)``; later resets continue its RNG) and so is the
    controller's noise. Episodes end only at the time limit (and the last one at ``n_steps``).

    Returns:
        Minari ``EpisodeBuffer`` s with dict observations.
    """
    env_id, env_kwargs = maze_env_args(maze, reward_type)
    register_maze_envs()
    controller = WaypointController(maze, noise=noise, seed=seed)
    return collect_episodes(
        env_id, controller, n_steps, seed, progress, max_episode_steps, env_kwargs=env_kwargs
    )


# x, y, vx, vy plus two goals of x, y: the bytes per step of a dataset's observations
MAZE_OBSERVATION_DIM = 8
MAZE_ACTION_DIM = 2


def make_maze_dataset(
    name: str,
    n_steps: int = 1_000_000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    max_episode_steps: int | None = None,
) -> Path:
    """Make the PointMaze dataset ``name`` (e.g. ``pointmaze-umaze-dense``) as ``ttrl/pointmaze/...-v0``.

    Args:
        name: ``pointmaze-<maze>`` or ``pointmaze-<maze>-dense``, maze one of umaze, medium, large,
            fourrooms.
        n_steps: env steps to collect (Minari's datasets hold 1M).
        seed: seeds the env (goals, starts) and the controller's noise.
        overwrite: replace an existing dataset.
        progress: show a tqdm bar.
        max_episode_steps: override the maze's time limit (short episodes for quick tests).

    Returns:
        The dataset's folder.

    Raises:
        TtrlError: unknown name or options out of range, the dataset exists and not ``overwrite``,
            another process is making it (naming it), or too little free disk space.
    """
    maze, reward_type = split_maze_name(name)
    check_make_options(n_steps, seed, max_episode_steps)
    dataset_id = ttrl_minari_id(name)
    with dataset_writer(dataset_id, overwrite):  # from before collecting to the end of writing
        time_limit = max_episode_steps or MAZES[maze].max_episode_steps
        n_episodes = math.ceil(n_steps / time_limit)
        need = rollout_bytes(n_steps, n_episodes, MAZE_OBSERVATION_DIM, MAZE_ACTION_DIM)
        check_free_space(
            minari_datasets_root(), estimate_dataset_bytes(need, n_episodes), dataset_id
        )
        episodes = collect_maze_episodes(
            maze, n_steps, seed, reward_type, ACTION_NOISE, progress, max_episode_steps
        )
        spec = maze_env_spec(maze, reward_type, max_episode_steps)
        metadata = {
            "name": name,
            "recipe": "Minari D4RL/pointmaze: Q-iteration waypoints, PD controller, noisy actions",
            "policy": "WaypointController",
            "maze": maze,
            "reward_type": reward_type,
            "gains": GAINS,
            "action_noise": ACTION_NOISE,
            "seed": seed,
            "max_episode_steps": time_limit,
        }
        return write_minari_dataset(
            dataset_id,
            episodes,
            spec.id,
            None,  # no reference returns: goal reaching is scored by success, not return
            None,
            metadata=metadata,
            overwrite=overwrite,
            description=(
                f"{name}: {MAZE_ENV} {maze} ({reward_type} reward) made locally by ttrl with the "
                f"recipe of Minari's D4RL/pointmaze datasets"
            ),
            env_spec=spec,
        )
