"""Training curves from a run's ``metrics.jsonl``, drawn as one PNG beside it."""

from __future__ import annotations

import os
from pathlib import Path

from ttrl.plotting import pyplot, save_png
from ttrl.training.logger import STEP_METRIC, read_metrics
from ttrl.training.metrics import TOKEN_TYPES

CURVES_FILE = "curves.png"


def metric_series(records: list[dict[str, float]], name: str) -> tuple[list[float], list[float]]:
    """Steps and values of one metric, from the records that hold it."""
    pairs = [(r[STEP_METRIC], r[name]) for r in records if name in r]
    return [s for s, _ in pairs], [v for _, v in pairs]


def plot_training_curves(
    metrics_path: str | os.PathLike, path: str | os.PathLike, title: str = ""
) -> Path | None:
    """PNG of the training and validation loss (top) and the validation loss of each token type
    (bottom) against the step; None when no loss was logged yet."""
    records = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    if not any("train/loss" in r or "val/loss" in r for r in records):
        return None
    plt = pyplot()

    fig, (ax_total, ax_types) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, label in (("train/loss", "train"), ("val/loss", "validation")):
        steps, values = metric_series(records, name)
        if steps:
            ax_total.plot(steps, values, label=label, marker="." if label != "train" else None)
    ax_total.set_ylabel("weighted loss")
    ax_total.legend(loc="best", fontsize="small")
    for token_type in TOKEN_TYPES:
        steps, values = metric_series(records, f"val/{token_type}_loss")
        if steps:
            ax_types.plot(steps, values, label=token_type, marker=".")
    ax_types.set_ylabel("validation loss per token")
    ax_types.set_xlabel("step")
    if ax_types.has_data():
        ax_types.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
