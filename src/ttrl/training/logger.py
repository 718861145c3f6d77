"""Where training metrics go: ``<run dir>/metrics.jsonl`` always, and W&B when it is enabled.

The W&B adapter is small, so a disabled logger costs nothing and imports nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttrl.io import atomic_write_text

# W&B names are shared with evaluation (ttrl.naming); still importable from here
from ttrl.naming import config_group as config_group
from ttrl.naming import run_label as run_label
from ttrl.naming import sanitize_artifact_name

STEP_METRIC = "step"
METRICS_FILE = "metrics.jsonl"


class NullLogger:
    """Drops everything: the logger of ranks other than 0 and of ``logger.mode=disabled``."""

    run_id: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at optimiser step ``step``."""

    def log_artifact(self, path: Path, name: str, kind: str = "model") -> None:
        """Attach a file (a checkpoint) to the run."""

    def finish(self) -> None:
        """Close the run."""


class WandbLogger(NullLogger):
    """Logs to a W&B run (online or offline); every metric is plotted against ``step``."""

    def __init__(self, run: Any, mode: str) -> None:
        self.run = run
        self.mode = mode
        self.run_id = run.id
        run.define_metric(STEP_METRIC)
        for namespace in ("train", "val", "perf", "data"):
            run.define_metric(f"{namespace}/*", step_metric=STEP_METRIC)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, STEP_METRIC: step})

    def log_artifact(self, path: Path, name: str, kind: str = "model") -> None:
        # Offline, an artifact is a full copy of the file waiting for `wandb sync`: not worth it.
        if self.mode != "online":
            return
        import wandb

        artifact = wandb.Artifact(sanitize_artifact_name(name), type=kind)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self) -> None:
        self.run.finish()
        if self.mode == "offline":
            run_dir = self.run.dir.rsplit("/files", 1)[0]
            print(
                f"wandb: offline run; upload with `wandb sync {run_dir}` or train with logger=online"
            )


class MetricsFile:
    """Appends each ``log`` call as one JSON line ``{"step": ..., <metric>: ...}`` to ``path``.

    A resumed run first drops the lines logged after the checkpoint it resumes from (and any line
    cut short by a crash), since it trains and logs those steps again.
    """

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            kept = [r for r in read_metrics(path) if r[STEP_METRIC] <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, metrics: dict[str, float], step: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({STEP_METRIC: step, **metrics}) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The records of a ``metrics.jsonl`` in order, skipping a last line a crash cut short."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLogger(NullLogger):
    """Rank 0's logger: every metric to the run's ``metrics.jsonl`` and to W&B (or its no-op)."""

    def __init__(self, metrics_file: MetricsFile, wandb_logger: NullLogger) -> None:
        self.metrics_file = metrics_file
        self.wandb = wandb_logger
        self.run_id = wandb_logger.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.metrics_file.log(metrics, step)
        self.wandb.log(metrics, step)

    def log_artifact(self, path: Path, name: str, kind: str = "model") -> None:
        self.wandb.log_artifact(path, name, kind)

    def finish(self) -> None:
        self.wandb.finish()


def create_logger(
    config: dict[str, Any],
    run_dir: Path,
    resume_id: str | None,
    is_main: bool,
    resume_step: int = 0,
) -> NullLogger:
    """Rank 0: ``metrics.jsonl`` plus the W&B run the config asks for; other ranks: a no-op.

    ``resume_id``/``resume_step``: the W&B run and the step a resumed run continues.
    """
    if not is_main:
        return NullLogger()
    metrics_file = MetricsFile(run_dir / METRICS_FILE, resume_step)
    return RunLogger(metrics_file, create_wandb_logger(config, run_dir, resume_id))


def create_wandb_logger(config: dict[str, Any], run_dir: Path, resume_id: str | None) -> NullLogger:
    """The W&B logger the config asks for (resuming ``resume_id`` if given), or a no-op."""
    logger_cfg = config["logger"]
    if logger_cfg["mode"] == "disabled":
        return NullLogger()
    import wandb

    env, seed = config["env"]["name"], config["seed"]
    run = wandb.init(
        project=logger_cfg["project"],
        entity=logger_cfg["entity"],
        group=logger_cfg["group"] or config_group(config),
        name=logger_cfg["name"] or f"{run_label(env)}-s{seed}",
        tags=list(logger_cfg["tags"]),
        config=config,
        mode=logger_cfg["mode"],
        dir=str(run_dir),
        id=resume_id,
        resume="allow" if resume_id else None,
    )
    return WandbLogger(run, logger_cfg["mode"])
