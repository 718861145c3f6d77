"""What the model predicted before an episode ended: predicted against realised rewards and values.

    python -m ttrl.evaluation.diagnostics <plan dir>/predictions.csv ends.png [--last 150]

Every episode of an evaluation that ended before the time limit (a fall) is aligned at its last
step; the figure shows the predicted and realised value (and reward) over its last steps, so one
can see whether the model saw the fall coming (its values fall with the realised ones) or not.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ttrl.errors import TtrlError
from ttrl.plotting import pyplot, save_png

PREDICTION_COLUMNS = ("episode", "step", "predicted_reward", "reward", "predicted_value", "value")


def read_predictions(path: str | os.PathLike) -> dict[int, dict[str, np.ndarray]]:
    """``predictions.csv`` of an evaluation as per-episode arrays, in step order."""
    path = Path(path)
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError as err:
        raise TtrlError(
            f"cannot read {path} ({err}); pass an evaluation's predictions.csv"
        ) from err
    if not rows or any(c not in rows[0] for c in PREDICTION_COLUMNS):
        raise TtrlError(
            f"{path} is not an evaluation's predictions.csv (columns {', '.join(PREDICTION_COLUMNS)})"
        )
    episodes: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(rows, key=lambda r: (int(r["episode"]), int(r["step"]))):
        for column in PREDICTION_COLUMNS[1:]:
            episodes[int(row["episode"])][column].append(float(row[column]))
    return {e: {k: np.asarray(v) for k, v in cols.items()} for e, cols in episodes.items()}


def plot_episode_ends(
    episodes: dict[int, dict[str, np.ndarray]],
    path: str | os.PathLike,
    last: int = 150,
    time_limit: int = 1000,
    title: str | None = None,
) -> Path:
    """The last ``last`` steps of every episode shorter than ``time_limit``, aligned at its end."""
    ended = {e: cols for e, cols in episodes.items() if len(cols["step"]) < time_limit}
    if not ended:
        raise TtrlError(f"no episode ended before the time limit of {time_limit} steps")
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (episode, cols) in enumerate(sorted(ended.items())):
        color = colors[i % len(colors)]
        n = min(last, len(cols["step"]))
        before_end = np.arange(-n + 1, 1)
        for ax, key in zip(axes, ("value", "reward"), strict=True):
            ax.plot(before_end, cols[key][-n:], color=color, lw=1.5, label=f"episode {episode}")
            ax.plot(before_end, cols[f"predicted_{key}"][-n:], color=color, lw=1, ls="--")
    axes[0].set_ylabel("value (solid realised, dashed predicted)")
    axes[1].set_ylabel("reward")
    axes[1].set_xlabel("steps before the episode ended")
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"the last {last} steps of the {len(ended)} episodes that ended early")
    fig.tight_layout()
    return save_png(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="an evaluation's predictions.csv")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--last", type=int, default=150, help="steps before the end to show")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    print(
        plot_episode_ends(read_predictions(args.predictions), args.out, args.last, title=args.title)
    )


if __name__ == "__main__":
    main()
