#!/usr/bin/env python
"""Results table of many evaluations: normalised score per dataset, beside the paper's numbers.

    python scripts/report.py multirun/train/<time>                 # a sweep with evaluate.n_episodes
    python scripts/report.py runs/a runs/b --name final --out report/

Finds every results.json under the given dirs (or takes results.json files as given), groups them
by dataset and agent (TT, or a baseline from scripts/train_baseline.py) and writes into --out
(default: the first dir) report.md (the comparison of each dataset's own average, BC, IQL and TT
with the paper's TT and BC; for goal-reaching datasets the success rates of TT, goal-conditioned BC
and the waypoint controller; then one row per dataset and agent), report.csv, report.png,
comparison.csv and comparison.png, printing both tables. See ttrl.evaluation.table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttrl.cli import exit_on_user_error
from ttrl.evaluation.table import (
    compare,
    comparison_markdown,
    find_results,
    goal_comparison_markdown,
    load_evaluation,
    summarize,
    to_markdown,
    write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="sweep dirs, run dirs or results.json files")
    parser.add_argument(
        "--name", default=None, help="only results.json in folders of this name (e.g. final)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: the first dir)")
    parser.add_argument(
        "--no-data-average",
        action="store_true",
        help="skip the comparison table's data-average column (it reads each dataset from disk)",
    )
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    evaluations = [load_evaluation(p) for p in find_results(args.paths, args.name)]
    rows = summarize([e for e in evaluations if e is not None])
    first = Path(args.paths[0])
    out_dir = Path(args.out) if args.out else (first if first.is_dir() else first.parent)
    comparison = compare(rows, (lambda _: None) if args.no_data_average else None)
    paths = write_report(rows, out_dir, comparison)
    if comparison:
        print(comparison_markdown(comparison))
    if goals := goal_comparison_markdown(rows):
        print(goals)
    print(to_markdown(rows))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
