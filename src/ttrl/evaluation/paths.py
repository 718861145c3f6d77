"""The maze picture: executed and planned paths of goal-reaching episodes, drawn over the maze.

Goal episodes record their paths (:class:`~ttrl.evaluation.EpisodeResult` ``observations``,
``plan_steps``, ``planned_observations``). In PointMaze the first two observation dims are the
ball's ``(x, y)`` (gymnasium-robotics' ``observation`` field), which is what is drawn: walls as
grey cells, each episode's executed path as a line from its start (circle) to its end (a star when
it reached the goal, a cross otherwise), the goal as a disc of the env's success radius, and
every few plans the path that plan predicted, as a thin dashed line from where it was made.

``plot_maze_paths`` is called by :func:`~ttrl.evaluation.report.write_results` for maze envs
(``paths.png`` beside results.json); ``python -m ttrl.evaluation.paths <plan dir>`` draws it
again from a finished evaluation's episode files.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttrl.data.registry import MAZES, REWARD_TYPES, SUCCESS_DISTANCE
from ttrl.errors import TtrlError
from ttrl.evaluation.scores import EpisodeResult
from ttrl.plotting import pyplot, save_png

PATHS_PLOT = "paths.png"
XY = slice(0, 2)  # PointMaze's observation starts with the ball's (x, y)
DEFAULT_EPISODES = 4  # episodes drawn, the first ones by index
DEFAULT_PLANS = 8  # planned paths drawn per episode, spread evenly over its plans


def maze_of_env(env_id: str) -> str | None:
    """The maze name (umaze, medium, large, fourrooms) of a PointMaze env id; None for others."""
    for name, info in MAZES.items():
        if env_id in {info.env_id_for(reward) for reward in REWARD_TYPES}:
            return name
    return None


def has_paths(episodes: Sequence[EpisodeResult]) -> bool:
    """Whether the episodes recorded paths (goal episodes do)."""
    return bool(episodes) and all(len(e.observations) > 0 for e in episodes)


def plot_maze_paths(
    episodes: Sequence[EpisodeResult],
    maze: str | Any,
    path: str | os.PathLike,
    title: str = "",
    n_episodes: int = DEFAULT_EPISODES,
    n_plans: int = DEFAULT_PLANS,
) -> Path:
    """PNG of the first ``n_episodes`` episodes' executed and planned paths over ``maze``.

    Args:
        episodes: goal episodes with recorded paths (see the module docstring).
        maze: a maze name, a maze map, or a :class:`~ttrl.making.maze.MazeGrid`.
        path: the PNG to write (atomically).
        title: the figure's title.
        n_episodes: how many episodes to draw (the lowest indices).
        n_plans: how many of each episode's plans to draw, spread over the episode.

    Raises:
        TtrlError: no episode has a recorded path.
    """
    from ttrl.making.maze import MazeGrid

    drawn = sorted((e for e in episodes if e.observations), key=lambda e: e.episode)[:n_episodes]
    if not drawn:
        raise TtrlError("no episode recorded a path (only goal episodes do); nothing to draw")
    grid = MazeGrid.of(maze)
    plt = pyplot()
    rows, cols = grid.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * cols), 1.2 + 0.7 * rows + 0.25 * len(drawn)))
    _draw_walls(ax, grid)
    colours = plt.get_cmap("tab10")
    for k, episode in enumerate(drawn):
        _draw_episode(ax, episode, colours(k % 10), n_plans)
    ax.set_aspect("equal")
    half_w, half_h = cols * grid.scaling / 2, rows * grid.scaling / 2
    ax.set_xlim(-half_w, half_w)
    ax.set_ylim(-half_h, half_h)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize="small", frameon=False)
    ax.set_title(
        title or "executed (solid) and planned (dashed) paths", fontsize="small", wrap=True
    )
    fig.tight_layout()
    return save_png(fig, path)


def _draw_walls(ax: Any, grid: Any) -> None:
    from matplotlib.patches import Rectangle

    s = grid.scaling
    for i, j in zip(*np.nonzero(grid.walls), strict=True):
        x, y = grid.center((int(i), int(j)))
        ax.add_patch(Rectangle((x - s / 2, y - s / 2), s, s, color="0.55", linewidth=0))


def _draw_episode(ax: Any, episode: EpisodeResult, colour: Any, n_plans: int) -> None:
    from matplotlib.patches import Circle

    xy = np.asarray(episode.observations, dtype=np.float64)[:, XY]
    outcome = "reached" if episode.success else "not reached"
    label = f"episode {episode.episode}: {outcome}"
    if episode.success:
        label += f" in {episode.steps_to_goal} steps"
    ax.plot(xy[:, 0], xy[:, 1], color=colour, linewidth=1.6, label=label)
    ax.plot(*xy[0], marker="o", color=colour, markersize=6)
    ax.plot(*xy[-1], marker="*" if episode.success else "x", color=colour, markersize=10)
    if episode.goal:
        goal = np.asarray(episode.goal, dtype=np.float64)[XY]
        ax.add_patch(Circle(tuple(goal), SUCCESS_DISTANCE, color=colour, alpha=0.25, linewidth=0))
    plans = episode.planned_observations
    for index in _spread(len(plans), n_plans):
        planned = np.asarray(plans[index], dtype=np.float64)[:, XY]
        ax.plot(planned[:, 0], planned[:, 1], color=colour, linewidth=0.8, linestyle="--")


def _spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices of ``0 .. n - 1``, spread evenly (first and last included)."""
    if n <= 0 or k <= 0:
        return []
    return sorted(set(np.rint(np.linspace(0, n - 1, min(n, k))).astype(int).tolist()))


def episodes_of(plan_dir: str | os.PathLike) -> list[EpisodeResult]:
    """The finished episodes an evaluation left in ``<plan_dir>/episodes/`` (JSON, never pickle)."""
    from ttrl.evaluation.store import EPISODES_DIR

    files = sorted(Path(plan_dir, EPISODES_DIR).glob("episode*.json"))
    if not files:
        raise TtrlError(f"{plan_dir} holds no episodes/episode<i>.json; evaluate it first")
    try:
        return [EpisodeResult(**json.loads(f.read_text())["result"]) for f in files]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TtrlError(
            f"cannot read the episodes in {plan_dir}: {type(err).__name__}: {err}"
        ) from err


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m ttrl.evaluation.paths <plan dir> [--maze umaze] [--episodes 4] [--out paths.png]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan_dir", help="an evaluation's folder, <run_dir>/plan/<name>/")
    parser.add_argument("--maze", default=None, help="maze name (default: from results.json)")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    parser.add_argument("--plans", type=int, default=DEFAULT_PLANS)
    parser.add_argument("--out", default=None, help=f"PNG (default: <plan_dir>/{PATHS_PLOT})")
    args = parser.parse_args(argv)
    try:
        maze = args.maze or maze_of_env(_env_id(args.plan_dir))
        if maze is None:
            raise TtrlError(f"{args.plan_dir} is not a PointMaze evaluation; pass --maze")
        out = plot_maze_paths(
            episodes_of(args.plan_dir),
            maze,
            args.out or Path(args.plan_dir, PATHS_PLOT),
            n_episodes=args.episodes,
            n_plans=args.plans,
        )
    except TtrlError as err:
        raise SystemExit(f"error: {err}") from None
    print(out)


def _env_id(plan_dir: str | os.PathLike) -> str:
    try:
        return str(json.loads(Path(plan_dir, "results.json").read_text())["env_id"])
    except (OSError, ValueError, KeyError) as err:
        raise TtrlError(
            f"cannot read the env id from {plan_dir}/results.json; pass --maze"
        ) from err


if __name__ == "__main__":
    main()
