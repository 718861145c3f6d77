"""Score against planning cost and training budget: evaluations of one dataset's models.

    python -m ttrl.evaluation.ablation <plan dirs or results.json files> --out <dir>

Each training budget (``trainer.max_steps``) and planner setting (horizon, beam width) is one
point, pooling every ``results.json`` (of ``scripts/plan.py`` or a training run's final
evaluation) planned with it: the normalised score (mean ± standard error over the episodes) and
the planner's seconds per environment step (``timing.plan_seconds`` over ``timing.decisions``;
episodes planned together share model calls, so compare points planned with the same
``n_episodes`` where cost matters). Writes ``ablation.csv``, ``ablation.md`` and
``ablation.png`` (score against cost, log scale, and with several budgets score against training
steps) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttrl.errors import TtrlError
from ttrl.evaluation.report import write_csv
from ttrl.evaluation.scores import mean_and_standard_error
from ttrl.evaluation.table import find_results, format_score
from ttrl.io import atomic_write_text
from ttrl.planning.config import migrate_controller_settings
from ttrl.plotting import pyplot, save_png

ABLATION_STEM = "ablation"


@dataclass(frozen=True)
class PlannerPoint:
    """One training budget and planner setting: its pooled score and cost."""

    path: str
    dataset: str
    train_steps: int | None  # the model's training budget (trainer.max_steps), when recorded
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

    @property
    def planner(self) -> tuple[int, int]:
        return self.horizon, self.beam_width


@dataclass(frozen=True)
class _Evaluation:
    """What one results.json holds for the ablation."""

    path: str
    dataset: str
    train_steps: int | None
    horizon: int
    beam_width: int
    scores: list[float]
    lengths: list[float]
    controller: str  # its controller settings (context, replanning), as JSON
    plan_seconds: float
    decisions: int


def _load_evaluation(path: str | os.PathLike) -> _Evaluation:
    """One complete ``results.json``; one line for anything else."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
        config = migrate_controller_settings(results["config"])
        planner = config["planner"]
        timing = results["timing"]
        trainer = (results["config"].get("train_config") or {}).get("trainer") or {}
        evaluation = _Evaluation(
            path=str(path),
            dataset=str(results["dataset"]),
            train_steps=None if trainer.get("max_steps") is None else int(trainer["max_steps"]),
            horizon=int(planner["horizon"]),
            beam_width=int(planner["beam_width"]),
            scores=[float(e["normalized_score"]) for e in results["episodes"]],
            lengths=[float(e["length"]) for e in results["episodes"]],
            plan_seconds=float(timing["plan_seconds"]),
            decisions=int(timing["decisions"]),
            controller=json.dumps(config.get("controller") or {}, sort_keys=True),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TtrlError(
            f"{path} is not a complete ttrl results.json with normalised scores, planner settings "
            f"and timing ({type(err).__name__}: {err}); pass plan dirs of scripts/plan.py"
        ) from err
    if results.get("complete") is False or not evaluation.scores:
        raise TtrlError(f"{path} holds partial results; finish that evaluation first")
    return evaluation


def _pooled(evaluations: Sequence[_Evaluation]) -> PlannerPoint:
    """One point from evaluations of the same settings: their episodes and timing together."""
    scores = [s for e in evaluations for s in e.scores]
    lengths = [n for e in evaluations for n in e.lengths]
    mean, se = mean_and_standard_error(scores)
    first = evaluations[0]
    return PlannerPoint(
        path=";".join(e.path for e in evaluations),
        dataset=first.dataset,
        train_steps=first.train_steps,
        horizon=first.horizon,
        beam_width=first.beam_width,
        n_episodes=len(scores),
        score_mean=mean,
        score_se=se,
        seconds_per_step=sum(e.plan_seconds for e in evaluations)
        / max(sum(e.decisions for e in evaluations), 1),
        mean_length=sum(lengths) / len(lengths),
    )


def load_points(paths: Sequence[str | os.PathLike]) -> list[PlannerPoint]:
    """One point per training budget and planner setting under ``paths``, by budget then cost.

    Evaluations with the same budget, horizon and beam width are pooled (``seed=0 n_episodes=2``
    and ``seed=2 n_episodes=3`` are episodes 0-4); one line if they mix datasets."""
    evaluations = [_load_evaluation(p) for p in find_results(paths)]
    datasets = sorted({e.dataset for e in evaluations})
    if len(datasets) > 1:
        raise TtrlError(
            f"these evaluations are of {', '.join(datasets)}; an ablation compares one dataset's"
        )
    controllers = sorted({e.controller for e in evaluations})
    if len(controllers) > 1:
        raise TtrlError(
            f"these evaluations use different controller settings ({'; '.join(controllers)}); "
            f"an ablation compares planner settings under one controller"
        )
    groups: dict[tuple[int | None, int, int], list[_Evaluation]] = defaultdict(list)
    for e in evaluations:
        groups[(e.train_steps, e.horizon, e.beam_width)].append(e)
    return sorted(
        (_pooled(group) for group in groups.values()),
        key=lambda p: (p.train_steps or 0, p.seconds_per_step, p.horizon, p.beam_width),
    )


def ablation_markdown(points: Sequence[PlannerPoint]) -> str:
    """A Markdown table, one row per point."""
    lines = [
        "| training steps | planner | episodes | normalised score | mean length | "
        "planner s per step |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        steps = "-" if p.train_steps is None else str(p.train_steps)
        lines.append(
            f"| {steps} | {p.label} | {p.n_episodes} | {format_score(p.score_mean, p.score_se)} | "
            f"{p.mean_length:.0f} | {p.seconds_per_step:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _score_line(ax: Any, xs: Sequence[float], points: Sequence[PlannerPoint], label: Any) -> None:
    """The points' scores (± se) at ``xs``, joined by a line."""
    ax.errorbar(
        xs,
        [p.score_mean for p in points],
        yerr=[p.score_se for p in points],
        marker="o",
        capsize=3,
        label=label,
    )


def plot_ablation(
    points: Sequence[PlannerPoint],
    path: str | os.PathLike,
    references: Mapping[str, float] | None = None,
) -> Path:
    """Score (± se) against planner seconds per step, one line per training budget; with several
    budgets, also score against training steps, one line per planner setting. ``references``
    (label -> score, e.g. the data's average or BC on the same data) are drawn as dashed lines."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    budgets = sorted({p.train_steps for p in points if p.train_steps is not None})
    panels = 2 if len(budgets) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    cost = axes[0][0]
    for steps in sorted({p.train_steps for p in points}, key=lambda s: s or 0):
        group = sorted(
            (p for p in points if p.train_steps == steps), key=lambda p: p.seconds_per_step
        )
        label = f"{steps} training steps" if steps is not None else None
        _score_line(cost, [p.seconds_per_step for p in group], group, label)
        for p in group:
            cost.annotate(
                p.label,
                (p.seconds_per_step, p.score_mean),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    cost.set_xscale("log")
    cost.set_xlabel("planner seconds per environment step (log)")
    cost.set_ylabel("normalised score (mean ± se)")
    cost.set_title(f"{points[0].dataset}: score against planning cost", fontsize=10)
    if panels == 2:
        budget = axes[0][1]
        for planner in sorted({p.planner for p in points}):
            group = sorted(
                (p for p in points if p.planner == planner and p.train_steps is not None),
                key=lambda p: p.train_steps or 0,
            )
            if len(group) > 1:
                _score_line(budget, [p.train_steps for p in group], group, group[0].label)
        budget.set_xscale("log", base=2)
        budget.set_xlabel("training steps (log)")
        budget.set_ylabel("normalised score (mean ± se)")
        budget.set_title(f"{points[0].dataset}: score against training budget", fontsize=10)
    for ax in axes[0]:
        ax.xaxis.set_minor_formatter(NullFormatter())
        for i, (label, score) in enumerate((references or {}).items()):
            ax.axhline(score, linestyle="--", color=f"C{i + 5}", linewidth=1, label=label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


def write_ablation(
    points: Sequence[PlannerPoint],
    out_dir: str | os.PathLike,
    references: Mapping[str, float] | None = None,
) -> dict[str, Path]:
    """``ablation.csv``, ``ablation.md`` and ``ablation.png`` (with ``references``) in ``out_dir``."""
    if not points:
        raise TtrlError("no evaluations to compare")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(p), "label": p.label} for p in points]
    return {
        "csv": write_csv(out_dir / f"{ABLATION_STEM}.csv", rows),
        "markdown": atomic_write_text(out_dir / f"{ABLATION_STEM}.md", ablation_markdown(points)),
        "plot": plot_ablation(points, out_dir / f"{ABLATION_STEM}.png", references),
    }


def parse_references(items: Sequence[str]) -> dict[str, float]:
    """``["data=34.3", "BC=53.7"]`` -> ``{"data": 34.3, "BC": 53.7}``; one line for a bad item."""
    references = {}
    for item in items:
        label, _, value = item.rpartition("=")
        try:
            score = float(value)
        except ValueError:
            score = None
        if score is None or not label.strip():
            raise TtrlError(f"--reference {item!r} must be LABEL=SCORE, e.g. 'data average=34.3'")
        references[label.strip()] = score
    return references


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="plan dirs, run dirs or results.json files")
    parser.add_argument("--out", required=True, help="folder for ablation.csv/.md/.png")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=SCORE",
        help="a dashed line on the plot, e.g. 'data average=34.3' (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        references = parse_references(args.reference)
        points = load_points(args.paths)
        written = write_ablation(points, args.out, references)
    except TtrlError as err:
        raise SystemExit(f"error: {err}") from None
    print(ablation_markdown(points), end="")
    for path in written.values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
