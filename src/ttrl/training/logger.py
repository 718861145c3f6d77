"""A small adapter over Weights & Biases, so a disabled logger costs nothing and imports nothing."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

# Config sections that do not change what is trained, left out of the W&B group name.
GROUP_EXCLUDED_KEYS = ("seed", "run_dir", "device", "logger", "evaluate")
STEP_METRIC = "step"


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


def config_group(config: dict[str, Any]) -> str:
    """A stable W&B group for runs that differ only in seed: ``<env>-<hash of the rest>``."""
    rest = {k: v for k, v in config.items() if k not in GROUP_EXCLUDED_KEYS}
    digest = hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{run_label(config['env']['name'])}-{digest}"


def run_label(dataset: str) -> str:
    """A dataset name as W&B group/run/artifact names allow it (a file's stem for HDF5 paths)."""
    from ttrl.config import dataset_slug

    return sanitize_artifact_name(dataset_slug(dataset))


def sanitize_artifact_name(name: str) -> str:
    """W&B names allow letters, digits, ``-``, ``_`` and ``.``; dataset ids may hold ``/``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def create_logger(
    config: dict[str, Any], run_dir: Path, resume_id: str | None, is_main: bool
) -> NullLogger:
    """The W&B logger the config asks for (resuming ``resume_id`` if given) on rank 0, else a no-op."""
    logger_cfg = config["logger"]
    if not is_main or logger_cfg["mode"] == "disabled":
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
