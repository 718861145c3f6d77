"""Log-likelihood and RMSE against the horizon, for one or several ``predictions.json``.

python -m ttrl.prediction.plots out.png full=<dir>/predictions.json markovian=<dir2>/predictions.json
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttrl.plotting import pyplot, save_png

PANELS = (
    ("log_likelihood", "log-likelihood of the true state"),
    ("rmse", "RMSE of the mean state"),
)


def plot_prediction_curves(
    results: Sequence[tuple[str | None, Mapping[str, Any]]], path: str | os.PathLike
) -> Path:
    """Every model of every labelled results document on two panels (mean ± standard error over
    start points); the discrete oracle of the first document is drawn dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    oracle_drawn, index = False, 0
    for label, document in results:
        for name, model in document["models"].items():
            per_step = model["per_step"]
            legend = name if label is None else f"{label}: {name}"
            color = colors[index % len(colors)]  # one colour per model in both panels
            index += 1
            for ax, (key, _) in zip(axes, PANELS, strict=True):
                _curve(ax, per_step[f"{key}_mean"], per_step[f"{key}_se"], legend, color)
            if "moment_matched_log_likelihood_mean" in per_step:
                _curve(
                    axes[0],
                    per_step["moment_matched_log_likelihood_mean"],
                    per_step["moment_matched_log_likelihood_se"],
                    f"{legend} (moment-matched)",
                    color,
                    linestyle=":",
                )
            if "oracle_log_likelihood_mean" in per_step and not oracle_drawn:
                oracle = np.array(per_step["oracle_log_likelihood_mean"], dtype=float)
                steps = np.arange(1, len(oracle) + 1)
                axes[0].plot(steps, oracle, "k--", lw=1, label="discrete oracle")
                oracle_drawn = True
    first = results[0][1]
    for ax, (_, title) in zip(axes, PANELS, strict=True):
        ax.set_xlabel("horizon step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nats (summed over state dims), symlog")
    axes[0].set_yscale("symlog", linthresh=100.0)  # a Gaussian far from the truth scores -1e5
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{first['dataset']}: open-loop predictions from {first['n_starts']} start points, "
        f"actions={first['settings']['actions']}",
        fontsize=10,
    )
    fig.tight_layout()
    return save_png(fig, path)


def _curve(
    ax: Any,
    mean: Sequence[float | None],
    se: Sequence[float | None],
    label: str,
    color: str,
    linestyle: str = "-",
) -> None:
    mean = np.array([np.nan if v is None else v for v in mean], dtype=float)
    se = np.array([np.nan if v is None else v for v in se], dtype=float)
    steps = np.arange(1, len(mean) + 1)
    ax.plot(steps, mean, linestyle, color=color, label=label)
    ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.2)


TABLE_STEPS = (1, 10, 50, 100)


def summary_table(results: Sequence[tuple[str | None, Mapping[str, Any]]]) -> str:
    """Markdown: one row per run and model, log-likelihood and RMSE (mean ± se) at a few steps."""
    header = ["run", "model"]
    header += [f"log-lik. @{s}" for s in TABLE_STEPS] + [f"RMSE @{s}" for s in TABLE_STEPS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, document in results:
        for name, model in document["models"].items():
            per_step = model["per_step"]
            cells = [label or "", name]
            for key in ("log_likelihood", "rmse"):
                cells += [_cell(per_step, key, step) for step in TABLE_STEPS]
            lines.append("| " + " | ".join(cells) + " |")
            if "moment_matched_log_likelihood_mean" in per_step:
                cells = [label or "", f"{name} (moment-matched)"]
                cells += [_cell(per_step, "moment_matched_log_likelihood", s) for s in TABLE_STEPS]
                cells += [""] * len(TABLE_STEPS)
                lines.append("| " + " | ".join(cells) + " |")
            if "oracle_log_likelihood_mean" in per_step:
                cells = [label or "", "discrete oracle"]
                cells += [_cell(per_step, "oracle_log_likelihood", s) for s in TABLE_STEPS]
                lines.append("| " + " | ".join(cells + [""] * len(TABLE_STEPS)) + " |")
    return "\n".join(lines)


def _cell(per_step: Mapping[str, Any], key: str, step: int) -> str:
    means, ses = per_step[f"{key}_mean"], per_step[f"{key}_se"]
    if step > len(means) or means[step - 1] is None:
        return ""
    mean, se = means[step - 1], ses[step - 1]
    digits = 2 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if se is not None else f"{mean:.{digits}f}"


def main(argv: Sequence[str]) -> None:
    """``out.png label=predictions.json ...``: several prediction runs on one figure and a table."""
    if len(argv) < 2:
        sys.exit("usage: python -m ttrl.prediction.plots out.png label=predictions.json ...")
    documents = []
    for item in argv[1:]:
        label, _, file = item.rpartition("=")
        file, _, keep = file.partition("@")
        document = json.loads(Path(file).read_text())
        if keep:
            names = keep.split(",")
            document = {**document, "models": {n: document["models"][n] for n in names}}
        documents.append((label or None, document))
    print(plot_prediction_curves(documents, argv[0]))
    print(summary_table(documents))


if __name__ == "__main__":
    main(sys.argv[1:])
