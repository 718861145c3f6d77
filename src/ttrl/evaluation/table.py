"""The results table of many evaluations (``scripts/report.py``): normalised score per dataset.

Every ``results.json`` under the given folders is one evaluated model (one training seed, several
episodes). Per dataset the table gives two summaries of the normalised scores:

* **all episodes**: mean ± standard error over every episode of every seed pooled
  (n = seeds x episodes);
* **seed means**: each seed's mean over its episodes, then mean ± standard error across those
  means (n = seeds).

Evaluations are grouped by agent as well: a baseline's results.json says ``"agent": "bc"`` (the
transformer's say nothing, or ``"tt"``), and its rows read ``hopper-medium [bc]``, below the
transformer's row of the same dataset.

Goal-reaching evaluations (PointMaze: episodes with ``success`` and no normalised score) are
scored by success rate instead, in percent (``"metric": "success %"``); their rows are labelled
so, stay out of the normalised-score comparison, and get a table of their own
(:func:`goal_comparison_markdown`: TT, goal-conditioned BC and the waypoint controller side by side).

Where the dataset has a published Trajectory Transformer number (Janner et al. 2021, Table 1,
"TT (quantile)", D4RL v2, mean ± standard error over 15 runs) it is shown beside ours: for ttrl's
D4RL-style names (``hopper-medium``) and D4RL v2 HDF5 files (``.../hopper_medium-v2.hdf5``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttrl.errors import TtrlError
from ttrl.evaluation.report import RESULTS_JSON
from ttrl.evaluation.scores import mean_and_standard_error
from ttrl.io import atomic_write_text
from ttrl.plotting import pyplot, save_png

# Janner et al. 2021, Table 1, TT (quantile): mean and standard error, in the paper's row order.
PAPER_TT_QUANTILE: dict[str, tuple[float, float]] = {
    "halfcheetah-medium-expert": (95.0, 0.2),
    "hopper-medium-expert": (110.0, 2.7),
    "walker2d-medium-expert": (101.9, 6.8),
    "halfcheetah-medium": (46.9, 0.4),
    "hopper-medium": (61.1, 3.6),
    "walker2d-medium": (79.0, 2.8),
    "halfcheetah-medium-replay": (41.9, 2.5),
    "hopper-medium-replay": (91.5, 3.6),
    "walker2d-medium-replay": (82.6, 6.9),
}

TT_AGENT = "tt"  # the agent of a results.json that names none: the Trajectory Transformer
# The same table's BC column (D4RL v2; no standard error is given).
PAPER_BC: dict[str, float] = {
    "halfcheetah-medium-expert": 59.9,
    "hopper-medium-expert": 79.6,
    "walker2d-medium-expert": 36.6,
    "halfcheetah-medium": 43.1,
    "hopper-medium": 63.9,
    "walker2d-medium": 77.3,
    "halfcheetah-medium-replay": 4.3,
    "hopper-medium-replay": 27.6,
    "walker2d-medium-replay": 36.9,
}
COMPARED_AGENTS = ("bc", "iql", TT_AGENT)  # the comparison table's agent columns, in order
GOAL_AGENTS = (TT_AGENT, "gcbc", "waypoint")  # the goal-reaching table's columns, in order
SCORE_METRIC, SUCCESS_METRIC = "normalised score", "success %"
REPORT_MD = "report.md"
REPORT_CSV = "report.csv"
REPORT_PNG = "report.png"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PNG = "comparison.png"

COLUMN_NOTES = (
    "all episodes: mean ± standard error of the normalised score over every episode of every seed "
    "(n = seeds x episodes). seed means: mean ± standard error across seeds of each seed's mean "
    "score (n = seeds). TT paper: Janner et al. 2021, Table 1, TT (quantile), D4RL v2, "
    "mean ± standard error over 15 runs."
)


@dataclass(frozen=True)
class Evaluation:
    """One ``results.json``: the normalised score of every episode of one evaluated model."""

    path: Path
    dataset: str
    seed: int | None  # the training run's seed (None for a checkpoint without a training config)
    scores: list[float]
    agent: str = TT_AGENT  # what was evaluated: the transformer, or a baseline ("bc")
    metric: str = SCORE_METRIC  # or SUCCESS_METRIC: goal episodes, 100 * success each


@dataclass(frozen=True)
class DatasetRow:
    """The summary of one dataset over its evaluations (see the module docstring)."""

    dataset: str
    seeds: list[int | None]
    n_episodes: int
    episode_mean: float
    episode_se: float
    seed_mean: float
    seed_se: float
    paper_mean: float | None
    paper_se: float | None
    agent: str = TT_AGENT
    metric: str = SCORE_METRIC

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def label(self) -> str:
        """The dataset, the agent unless it is the transformer, and the metric unless it is the
        normalised score: ``hopper-medium [bc]``, ``pointmaze-umaze [gcbc] (success %)``."""
        label = self.dataset if self.agent == TT_AGENT else f"{self.dataset} [{self.agent}]"
        return label if self.metric == SCORE_METRIC else f"{label} ({self.metric})"


def find_results(paths: Iterable[str | os.PathLike], name: str | None = None) -> list[Path]:
    """Every ``results.json`` under ``paths`` (folders searched recursively, files taken as given).

    With ``name``, only those in a folder called ``name`` (e.g. ``final`` for ``plan/final/``).
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob(RESULTS_JSON)))
        else:
            raise TtrlError(
                f"{path} does not exist; pass sweep dirs, run dirs or results.json files"
            )
    if name is not None:
        found = [p for p in found if p.parent.name == name]
    if not found:
        where = ", ".join(map(str, paths))
        raise TtrlError(
            f"no {RESULTS_JSON}{f' in a folder named {name!r}' if name else ''} under {where}; "
            "train with evaluate.n_episodes=5 or run scripts/plan.py first"
        )
    return found


def load_evaluation(path: str | os.PathLike) -> Evaluation | None:
    """The dataset, training seed and episode scores of a results.json (None: no scores, or partial)."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
        dataset = results["dataset"]
        episodes = results["episodes"]
        scores = [episode["normalized_score"] for episode in episodes]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TtrlError(
            f"{path} is not a ttrl results.json ({err}); remove it or pass other dirs"
        ) from err
    if results.get("complete") is False:  # a stopped evaluation: its scores would bias the table
        warnings.warn(
            f"{path}: partial results ({len(scores)} of {results.get('n_episodes_total')} "
            "episodes; the evaluation was stopped); skipped: run it again to finish it",
            stacklevel=2,
        )
        return None
    metric = SCORE_METRIC
    if scores and all(s is None for s in scores) and all("success" in e for e in episodes):
        scores, metric = [100.0 * bool(e["success"]) for e in episodes], SUCCESS_METRIC
    if not scores or any(s is None for s in scores):
        warnings.warn(
            f"{path}: no normalised scores (dataset {dataset!r} has no reference returns); skipped",
            stacklevel=2,
        )
        return None
    train_config = (results.get("config") or {}).get("train_config") or {}
    agent = str(results.get("agent") or TT_AGENT)
    return Evaluation(
        path=path,
        dataset=dataset,
        seed=train_config.get("seed"),
        scores=scores,
        agent=agent,
        metric=metric,
    )


def summarize(evaluations: Sequence[Evaluation]) -> list[DatasetRow]:
    """One row per dataset and agent, in the paper's order first, then the others alphabetically;
    the transformer's row of a dataset comes before its baselines'."""
    groups: dict[tuple[str, str], list[Evaluation]] = defaultdict(list)
    for evaluation in evaluations:
        groups[evaluation.dataset, evaluation.agent].append(evaluation)
    for (dataset, agent), group in groups.items():
        if len({e.metric for e in group}) > 1:
            raise TtrlError(
                f"{dataset} [{agent}]: some results are scored by success, others by normalised "
                f"score ({', '.join(str(e.path) for e in group[:2])}); report them apart"
            )

    def order(key: tuple[str, str]) -> tuple[tuple[int, str], bool, str]:
        dataset, agent = key
        return _order(dataset), agent != TT_AGENT, agent

    return [summarize_dataset(d, groups[d, a], agent=a) for d, a in sorted(groups, key=order)]


def summarize_dataset(
    dataset: str, evaluations: Sequence[Evaluation], agent: str = TT_AGENT
) -> DatasetRow:
    """Both summaries of one dataset's evaluations of ``agent``, with the paper's TT number if
    it has one (for the transformer's row only)."""
    seeds = [e.seed for e in evaluations]
    known = [s for s in seeds if s is not None]
    if len(set(known)) < len(known):
        warnings.warn(
            f"{dataset}: several evaluations of the same training seed ({sorted(known)}); each is "
            "counted as a seed (pass --name to keep one evaluation per run)",
            stacklevel=2,
        )
    all_scores = [s for e in evaluations for s in e.scores]
    episode_mean, episode_se = mean_and_standard_error(all_scores)
    seed_mean, seed_se = mean_and_standard_error([np.mean(e.scores) for e in evaluations])
    paper = PAPER_TT_QUANTILE.get(paper_dataset(dataset) or "") if agent == TT_AGENT else None
    paper_mean, paper_se = paper or (None, None)
    return DatasetRow(
        dataset=dataset,
        seeds=seeds,
        n_episodes=len(all_scores),
        episode_mean=episode_mean,
        episode_se=episode_se,
        seed_mean=seed_mean,
        seed_se=seed_se,
        paper_mean=paper_mean,
        paper_se=paper_se,
        agent=agent,
        metric=evaluations[0].metric if evaluations else SCORE_METRIC,
    )


def format_score(mean: float | None, se: float | None) -> str:
    """``46.9 ± 0.4``; ``-`` when there is no number, ``n/a`` for the se of a single value."""
    if mean is None:
        return "-"
    if se is None or not math.isfinite(se):
        return f"{mean:.1f} ± n/a"
    return f"{mean:.1f} ± {se:.1f}"


def _seed_list(seeds: Sequence[int | None]) -> str:
    return ",".join("?" if s is None else str(s) for s in seeds)


def to_markdown(rows: Sequence[DatasetRow]) -> str:
    """The table as Markdown, with a line saying what each column is."""
    lines = [
        "| dataset | seeds | episodes | all episodes | seed means | TT paper (quantile) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {row.n_seeds} ({_seed_list(row.seeds)}) | {row.n_episodes} | "
            f"{format_score(row.episode_mean, row.episode_se)} | "
            f"{format_score(row.seed_mean, row.seed_se)} | "
            f"{format_score(row.paper_mean, row.paper_se)} |"
        )
    return "\n".join(lines) + f"\n\n{COLUMN_NOTES}\n"


def to_csv(rows: Sequence[DatasetRow]) -> str:
    """The table as CSV (empty cells where there is no number)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "dataset",
            "n_seeds",
            "seeds",
            "n_episodes",
            "episode_mean",
            "episode_se",
            "seed_mean",
            "seed_se",
            "paper_tt_quantile_mean",
            "paper_tt_quantile_se",
            "agent",
            "metric",
        ]
    )
    for row in rows:
        writer.writerow(
            [
                row.dataset,
                row.n_seeds,
                _seed_list(row.seeds),
                row.n_episodes,
                *(
                    "" if v is None or not math.isfinite(v) else v
                    for v in (
                        row.episode_mean,
                        row.episode_se,
                        row.seed_mean,
                        row.seed_se,
                        row.paper_mean,
                        row.paper_se,
                    )
                ),
                row.agent,
                row.metric,
            ]
        )
    return buffer.getvalue()


def plot_table(rows: Sequence[DatasetRow], path: str | os.PathLike) -> Path:
    """Bar chart: ours (seed means ± se) beside the paper's TT (quantile) where it has a number."""
    plt = pyplot()

    x = np.arange(len(rows))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.5))
    ours = [r.seed_mean for r in rows]
    ours_err = [r.seed_se if math.isfinite(r.seed_se) else 0.0 for r in rows]
    ax.bar(x - width / 2, ours, width, yerr=ours_err, capsize=3, label="ttrl (seed means ± se)")
    paper = [(i, r) for i, r in enumerate(rows) if r.paper_mean is not None]
    if paper:
        ax.bar(
            [i + width / 2 for i, _ in paper],
            [r.paper_mean for _, r in paper],
            width,
            yerr=[r.paper_se for _, r in paper],
            capsize=3,
            color="lightgray",
            edgecolor="black",
            hatch="//",
            label="TT paper (quantile)",
        )
    ax.set_xticks(x)
    ax.set_xticklabels([r.label for r in rows], rotation=30, ha="right")
    metrics = sorted({r.metric for r in rows})
    ax.set_ylabel(" / ".join(metrics))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


@dataclass(frozen=True)
class ComparisonRow:
    """One dataset: its own average score, every agent's row, and the paper's TT and BC."""

    dataset: str
    data_mean: float | None
    data_se: float | None
    data_episodes: int | None
    agents: dict[str, DatasetRow]
    paper_tt: tuple[float, float] | None
    paper_bc: float | None


def compare(
    rows: Sequence[DatasetRow], data_score: Callable[[str], Any] | None = None
) -> list[ComparisonRow]:
    """One row per dataset with each agent's summary side by side.

    ``data_score(dataset)`` gives the dataset's own average (a :class:`ttrl.data.summary.DatasetScore`;
    default: computed from the dataset on disk); a dataset that is not on disk gets ``-`` and a
    warning.
    """
    if data_score is None:
        from ttrl.data.summary import dataset_score as data_score
    by_dataset: dict[str, dict[str, DatasetRow]] = defaultdict(dict)
    for row in rows:
        if row.metric == SCORE_METRIC:  # success rates have their own table
            by_dataset[row.dataset][row.agent] = row
    compared = []
    for dataset, agents in by_dataset.items():
        try:
            score = data_score(dataset)
        except TtrlError as err:
            warnings.warn(f"{dataset}: no data average ({err})", stacklevel=2)
            score = None
        name = paper_dataset(dataset) or ""
        compared.append(
            ComparisonRow(
                dataset=dataset,
                data_mean=getattr(score, "normalized_mean", None),
                data_se=getattr(score, "normalized_se", None),
                data_episodes=getattr(score, "n_episodes", None),
                agents=agents,
                paper_tt=PAPER_TT_QUANTILE.get(name),
                paper_bc=PAPER_BC.get(name),
            )
        )
    return compared


def _agent_cell(row: DatasetRow | None) -> str:
    if row is None:
        return "-"
    return f"{format_score(row.episode_mean, row.episode_se)} ({row.n_seeds}x{row.n_episodes // max(row.n_seeds, 1)})"


def comparison_markdown(rows: Sequence[ComparisonRow]) -> str:
    """The comparison as Markdown: data average, BC, IQL and TT on the same data, then the paper."""
    lines = [
        "| dataset | data average | BC | IQL | TT (ours) | TT paper (D4RL v2) | BC paper (D4RL v2) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        data = format_score(row.data_mean, row.data_se) if row.data_mean is not None else "-"
        cells = [_agent_cell(row.agents.get(agent)) for agent in COMPARED_AGENTS]
        paper_tt = format_score(*row.paper_tt) if row.paper_tt else "-"
        paper_bc = f"{row.paper_bc:.1f}" if row.paper_bc is not None else "-"
        lines.append(f"| {row.dataset} | {data} | {' | '.join(cells)} | {paper_tt} | {paper_bc} |")
    return "\n".join(lines) + "\n\n" + COMPARISON_NOTES + "\n"


def goal_comparison_markdown(rows: Sequence[DatasetRow]) -> str:
    """Goal reaching as Markdown: per dataset the success rate of TT, goal-conditioned BC and the
    waypoint controller (other agents after them); "" when no row is scored by success."""
    by_dataset: dict[str, dict[str, DatasetRow]] = defaultdict(dict)
    for row in rows:
        if row.metric == SUCCESS_METRIC:
            by_dataset[row.dataset][row.agent] = row
    if not by_dataset:
        return ""
    found = {agent for agents in by_dataset.values() for agent in agents}
    agents = [*GOAL_AGENTS, *sorted(found - set(GOAL_AGENTS))]
    names = {TT_AGENT: "TT (ours)", "gcbc": "GC-BC", "waypoint": "waypoint controller"}
    header = " | ".join(names.get(a, a) for a in agents)
    lines = [f"| dataset | {header} |", "|---" * (len(agents) + 1) + "|"]
    for dataset, by_agent in by_dataset.items():
        cells = " | ".join(_agent_cell(by_agent.get(agent)) for agent in agents)
        lines.append(f"| {dataset} | {cells} |")
    return "\n".join(lines) + "\n\n" + GOAL_NOTES + "\n"


GOAL_NOTES = (
    "Success rate in percent (the env's info['success'], within 0.45 of the goal): mean ± standard "
    "error over every episode of every seed (seeds x episodes per seed in brackets). Episode i of "
    "every agent starts from the same reset (seed + i), so the goals are the same."
)


COMPARISON_NOTES = (
    "Scores are normalised (D4RL references); agents: mean ± standard error over every episode of "
    "every seed (seeds x episodes per seed in brackets). data average: the dataset's own whole "
    "episodes. The paper's columns are Janner et al. 2021, Table 1, on D4RL v2 data: other data "
    "than ttrl's locally made datasets, so they are a reference, not a target."
)


def comparison_csv(rows: Sequence[ComparisonRow]) -> str:
    """The comparison as CSV, one row per dataset (empty cells where there is no number)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["dataset", "data_mean", "data_se", "data_episodes"]
    for agent in COMPARED_AGENTS:
        header += [f"{agent}_mean", f"{agent}_se", f"{agent}_seeds", f"{agent}_episodes"]
    writer.writerow([*header, "paper_tt_mean", "paper_tt_se", "paper_bc"])
    for row in rows:
        cells: list[Any] = [row.dataset, row.data_mean, row.data_se, row.data_episodes]
        for agent in COMPARED_AGENTS:
            a = row.agents.get(agent)
            cells += [a.episode_mean, a.episode_se, a.n_seeds, a.n_episodes] if a else [None] * 4
        cells += [*(row.paper_tt or (None, None)), row.paper_bc]
        writer.writerow(["" if _missing(c) else c for c in cells])
    return buffer.getvalue()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def plot_comparison(rows: Sequence[ComparisonRow], path: str | os.PathLike) -> Path:
    """Grouped bars per dataset: data average, BC, IQL, TT (mean ± se), the paper's TT hatched."""
    plt = pyplot()
    series = [("data average", lambda r: (r.data_mean, r.data_se))]
    for agent, label in (("bc", "BC"), ("iql", "IQL"), (TT_AGENT, "TT (ours)")):
        series.append(
            (
                label,
                lambda r, a=agent: (
                    (r.agents[a].episode_mean, r.agents[a].episode_se)
                    if a in r.agents
                    else (None, None)
                ),
            )
        )
    series.append(("TT paper (D4RL v2)", lambda r: r.paper_tt or (None, None)))
    x = np.arange(len(rows))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 2), 4.5))
    for i, (label, value) in enumerate(series):
        means, errors, where = [], [], []
        for j, row in enumerate(rows):
            mean, se = value(row)
            if mean is not None:
                where.append(j + (i - (len(series) - 1) / 2) * width)
                means.append(mean)
                errors.append(se if se is not None and math.isfinite(se) else 0.0)
        if means:
            hatch = "//" if "paper" in label else None
            ax.bar(where, means, width, yerr=errors, capsize=2, label=label, hatch=hatch)
    ax.set_xticks(x)
    ax.set_xticklabels([r.dataset for r in rows], rotation=30, ha="right")
    ax.set_ylabel("normalised score")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


def write_report(
    rows: Sequence[DatasetRow],
    out_dir: str | os.PathLike,
    comparison: Sequence[ComparisonRow] | None = None,
) -> dict[str, Path]:
    """Write report.md, report.csv and report.png into ``out_dir`` (and, with ``comparison``,
    its table in report.md and comparison.csv / comparison.png)."""
    out_dir = Path(out_dir)
    markdown = to_markdown(rows)
    goals = goal_comparison_markdown(rows)
    if goals:
        markdown = goals + "\n" + markdown
    written = {}
    if comparison:
        markdown = comparison_markdown(comparison) + "\n" + markdown
        written["comparison_csv"] = atomic_write_text(
            out_dir / COMPARISON_CSV, comparison_csv(comparison)
        )
        written["comparison_plot"] = plot_comparison(comparison, out_dir / COMPARISON_PNG)
    return {
        "markdown": atomic_write_text(out_dir / REPORT_MD, markdown),
        "csv": atomic_write_text(out_dir / REPORT_CSV, to_csv(rows)),
        "plot": plot_table(rows, out_dir / REPORT_PNG),
        **written,
    }


def paper_dataset(dataset: str) -> str | None:
    """The paper's name for ``dataset``: a D4RL-style name itself, a D4RL v2 HDF5 file's by its stem.

    ``/data/hopper_medium_replay-v2.hdf5`` -> ``hopper-medium-replay``; Minari ids and other
    versions have no paper number (the official Minari datasets are not D4RL's).
    """
    path = Path(dataset)
    if path.suffix in (".hdf5", ".h5"):
        stem = path.stem.replace("_", "-")
        name = stem.removesuffix("-v2") if stem.endswith("-v2") else None
    else:
        name = dataset
    return name if name in PAPER_TT_QUANTILE else None


def _order(dataset: str) -> tuple[int, str]:
    paper = list(PAPER_TT_QUANTILE)
    name = paper_dataset(dataset)
    return (paper.index(name), dataset) if name else (len(paper), dataset)
