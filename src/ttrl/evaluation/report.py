"""Results files of an evaluation: results.json, results.csv, predictions.csv and the prediction plot."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from ttrl.evaluation.rollout import EpisodeResults
from ttrl.evaluation.scores import EpisodeResult
from ttrl.io import atomic_write_json, atomic_write_text
from ttrl.plotting import pyplot, save_png

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_PLOT = "predictions.png"


def results_dict(results: EpisodeResults, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything about an evaluation as JSON-ready data (NaN, e.g. the se of one episode, is null).

    ``complete`` is False for the partial results of a stopped evaluation: ``aggregates`` then
    cover the ``aggregates.n_episodes`` finished of the ``n_episodes_total`` asked for.
    """
    return _json_safe(
        {
            "dataset": results.dataset,
            "env_id": results.env_id,
            "complete": results.complete,
            "n_episodes_total": results.n_episodes or len(results.episodes),
            "reference_scores": results.reference,
            "aggregates": results.aggregates,
            "episodes": [e.row() for e in results.episodes],
            "timing": results.timing,
            "video": str(results.video_path) if results.video_path else None,
            "config": config or {},
        }
    )


def write_results(
    results: EpisodeResults, out_dir: str | os.PathLike, config: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write results.json, results.csv, predictions.csv and predictions.png into ``out_dir``, and
    for PointMaze evaluations paths.png (:mod:`ttrl.evaluation.paths`)."""
    out_dir = Path(out_dir)
    paths = {
        "json": atomic_write_json(out_dir / RESULTS_JSON, results_dict(results, config)),
        "csv": write_csv(out_dir / RESULTS_CSV, [e.row() for e in results.episodes]),
        "predictions": write_csv(out_dir / PREDICTIONS_CSV, prediction_rows(results.episodes)),
        "plot": plot_predictions(results.episodes[0], out_dir / PREDICTIONS_PLOT, results.dataset),
    }
    # imported here: `python -m ttrl.evaluation.paths` must not find itself loaded by the package
    from ttrl.evaluation.paths import PATHS_PLOT, has_paths, maze_of_env, plot_maze_paths

    maze = maze_of_env(results.env_id)
    if maze is not None and has_paths(results.episodes):
        title = f"{results.dataset}: executed (solid), planned (dashed); goal discs"
        paths["paths"] = plot_maze_paths(results.episodes, maze, out_dir / PATHS_PLOT, title)
    if results.video_path is not None:
        paths["video"] = results.video_path
    return paths


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts with the same keys) as CSV with a header, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def prediction_rows(episodes: list[EpisodeResult]) -> list[dict[str, Any]]:
    """Per step of every episode: predicted and realised reward and value."""
    return [
        {
            "episode": e.episode,
            "step": t,
            "predicted_reward": e.predicted_rewards[t],
            "reward": e.rewards[t],
            "predicted_value": e.predicted_values[t],
            "value": e.values[t],
        }
        for e in episodes
        for t in range(e.length)
    ]


def plot_predictions(episode: EpisodeResult, path: str | os.PathLike, title: str = "") -> Path:
    """PNG of predicted vs realised reward (top) and value (bottom) along one episode."""
    plt = pyplot()

    fig, (ax_r, ax_v) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    steps = range(episode.length)
    for ax, realised, predicted, what in (
        (ax_r, episode.rewards, episode.predicted_rewards, "reward"),
        (ax_v, episode.values, episode.predicted_values, "value"),
    ):
        ax.plot(steps, realised, label=f"realised {what}", color="black", linewidth=1.2)
        ax.plot(steps, predicted, label=f"predicted {what}", color="tab:orange", linewidth=1.0)
        ax.set_ylabel(what)
        ax.legend(loc="best", fontsize="small")
    ax_v.set_xlabel("step")
    fig.suptitle(
        f"{title} episode {episode.episode} (seed {episode.seed}): return {episode.total_return:.1f}"
    )
    fig.tight_layout()
    return save_png(fig, path)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
