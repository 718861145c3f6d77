"""Evaluation results in W&B, next to the training run: same project and group, metrics under ``eval/``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ttrl.evaluation.rollout import EpisodeResults
from ttrl.naming import config_group


def wandb_settings(
    logger: Mapping[str, Any], train_config: Mapping[str, Any], trainer: Mapping[str, Any]
) -> dict[str, Any]:
    """``wandb.init`` settings: the plan config's logger section, falling back to the training run's.

    The evaluation joins the training run's project and group, and records the training run's id so
    the two can be matched in the W&B UI.
    """
    train_logger = train_config.get("logger") or {}

    def pick(key: str, default: Any = None) -> Any:
        value = logger.get(key)
        return value if value is not None else train_logger.get(key, default)

    group = pick("group")
    if group is None and train_config.get("env"):
        group = config_group(dict(train_config))  # the group training derived from its config
    return {
        "project": pick("project", "ttrl"),
        "group": group,
        "mode": pick("mode", "offline"),
        "entity": pick("entity"),
        "train_run_id": trainer.get("wandb_run_id"),
    }


def log_to_wandb(
    results: EpisodeResults,
    settings: Mapping[str, Any],
    config: Mapping[str, Any],
    out_dir: str,
    name: str | None = None,
    plot_path: str | None = None,
) -> None:
    """One W&B eval run: ``eval/*`` aggregates, a table of episodes, the plot and the video."""
    if settings.get("mode") == "disabled":
        return  # before importing wandb, which alone takes a second
    import wandb

    run = start_run_beside_training(settings, "eval", config, out_dir, name)
    try:
        metrics = {f"eval/{k}": v for k, v in results.aggregates.items() if v is not None}
        metrics.update({f"eval/{k}": v for k, v in results.timing.items()})
        rows = [e.row() for e in results.episodes]
        metrics["eval/episodes"] = wandb.Table(
            columns=list(rows[0]), data=[list(r.values()) for r in rows]
        )
        if plot_path is not None:
            metrics["eval/predictions"] = wandb.Image(str(plot_path))
        if results.video_path is not None:
            metrics["eval/video"] = wandb.Video(str(results.video_path), format="mp4")
        run.log(metrics)
        run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    finally:
        run.finish()


def start_run_beside_training(
    settings: Mapping[str, Any],
    job_type: str,
    config: Mapping[str, Any],
    out_dir: str,
    name: str | None = None,
) -> Any:
    """``wandb.init`` for a job that follows a training run (``settings``: :func:`wandb_settings`)."""
    import wandb

    return wandb.init(
        project=settings.get("project"),
        entity=settings.get("entity"),
        group=settings.get("group"),
        mode=settings.get("mode"),
        job_type=job_type,
        name=name,
        dir=out_dir,
        config={**config, "train_run_id": settings.get("train_run_id")},
    )
