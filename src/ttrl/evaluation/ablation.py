"""Score against planning cost: evaluations of one model under different planner settings.

    python -m ttrl.evaluation.ablation <plan dirs or results.json files> --out <dir>

Each ``results.json`` (of ``scripts/plan.py`` or a training run's final evaluation) is one point:
its planner's horizon and beam width, the normalised score (mean ± standard error over its
episodes) and the planner's seconds per environment step (``timing.plan_seconds`` over
``timing.decisions``; episodes planned together share model calls, so compare points planned with
the same ``n_episodes`` where cost matters). Writes ``ablation.csv``, ``ablation.md`` and
``ablation.png`` (score against cost, log scale) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ttrl.errors import TtrlError
from ttrl.evaluation.report import write_csv
from ttrl.evaluation.scores import mean_and_standard_error
from ttrl.evaluation.table import find_results, format_score
from ttrl.io import atomic_write_text
from ttrl.plotting import pyplot, save_png

ABLATION_STEM = "ablation"


@dataclass(frozen=True)
class PlannerPoint:
    """One evaluation: its planner settings, score and cost."""

    path: str
    dataset: str
    horizon: int
    beam_width: int
    n_episodes: int
    score_mean: float
    score_se: float
    seconds_per_step: float  # planner time per environment step
    mean_length: float  # environment steps per episode

    @property
    def label(self) -> str:
        return f"H={self.horizon}, beam {self.beam_width}"


def load_point(path: str | os.PathLike) -> PlannerPoint:
    """The :class:`PlannerPoint` of one complete ``results.json``; one line for anything else."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
        planner = results["config"]["planner"]
        timing = results["timing"]
        episodes = results["episodes"]
        scores = [float(e["normalized_score"]) for e in episodes]
        lengths = [float(e["length"]) for e in episodes]
        horizon, beam = int(planner["horizon"]), int(planner["beam_width"])
        seconds = float(timing["plan_seconds"]) / max(int(timing["decisions"]), 1)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TtrlError(
            f"{path} is not a complete ttrl results.json with normalised scores, planner settings "
            f"and timing ({type(err).__name__}: {err}); pass plan dirs of scripts/plan.py"
        ) from err
    if results.get("complete") is False or not scores:
        raise TtrlError(f"{path} holds partial results; finish that evaluation first")
    mean, se = mean_and_standard_error(scores)
    return PlannerPoint(
        path=str(path),
        dataset=str(results["dataset"]),
        horizon=horizon,
        beam_width=beam,
        n_episodes=len(scores),
        score_mean=mean,
        score_se=se,
        seconds_per_step=seconds,
        mean_length=sum(lengths) / len(lengths),
    )


def load_points(paths: Sequence[str | os.PathLike]) -> list[PlannerPoint]:
    """Every evaluation under ``paths``, cheapest planner first; one line if they mix datasets."""
    points = sorted(
        (load_point(p) for p in find_results(paths)),
        key=lambda p: (p.seconds_per_step, p.horizon, p.beam_width),
    )
    datasets = sorted({p.dataset for p in points})
    if len(datasets) > 1:
        raise TtrlError(
            f"these evaluations are of {', '.join(datasets)}; an ablation compares one dataset's"
        )
    return points


def ablation_markdown(points: Sequence[PlannerPoint]) -> str:
    """A Markdown table, one row per point."""
    lines = [
        "| planner | episodes | normalised score | mean length | planner s per step |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p.label} | {p.n_episodes} | {format_score(p.score_mean, p.score_se)} | "
            f"{p.mean_length:.0f} | {p.seconds_per_step:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot_ablation(points: Sequence[PlannerPoint], path: str | os.PathLike) -> Path:
    """Score (± se) against planner seconds per step, each point labelled with its settings."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for horizon in sorted({p.horizon for p in points}):
        group = [p for p in points if p.horizon == horizon]
        ax.errorbar(
            [p.seconds_per_step for p in group],
            [p.score_mean for p in group],
            yerr=[p.score_se for p in group],
            marker="o",
            capsize=3,
            label=f"horizon {horizon}",
        )
        for p in group:
            ax.annotate(
                f"beam {p.beam_width}",
                (p.seconds_per_step, p.score_mean),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_xlabel("planner seconds per environment step (log)")
    ax.set_ylabel("normalised score (mean ± se)")
    ax.set_title(f"{points[0].dataset}: score against planning cost")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def write_ablation(points: Sequence[PlannerPoint], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``ablation.csv``, ``ablation.md`` and ``ablation.png`` in ``out_dir``."""
    if not points:
        raise TtrlError("no evaluations to compare")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(p), "label": p.label} for p in points]
    return {
        "csv": write_csv(out_dir / f"{ABLATION_STEM}.csv", rows),
        "markdown": atomic_write_text(out_dir / f"{ABLATION_STEM}.md", ablation_markdown(points)),
        "plot": plot_ablation(points, out_dir / f"{ABLATION_STEM}.png"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="plan dirs, run dirs or results.json files")
    parser.add_argument("--out", required=True, help="folder for ablation.csv/.md/.png")
    args = parser.parse_args(argv)
    try:
        points = load_points(args.paths)
        written = write_ablation(points, args.out)
    except TtrlError as err:
        raise SystemExit(f"error: {err}") from None
    print(ablation_markdown(points), end="")
    for path in written.values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
