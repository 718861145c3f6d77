"""The schema of ``configs/predict.yaml`` (``predict_schema`` in Hydra's ConfigStore) and its checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from ttrl.baselines import BCConfig, EnsembleConfig
from ttrl.config import DEVICES
from ttrl.errors import TtrlError
from ttrl.evaluation.config import CHECKPOINTS, PlanLoggerConfig
from ttrl.prediction.data import EPISODE_CHOICES

ACTION_SOURCES = ("data", "model")


@dataclass
class PredictConfig:
    """Open-loop prediction of a training run, scored on its held-out episodes (``predict.py``)."""

    run_dir: str | None = None  # a training run dir (null: the newest under outputs/)
    which: str = "last"  # last | best checkpoint
    actions: str = (
        "data"  # data: the dataset's actions are fed in | model: each model picks its own
    )
    horizon: int = 100  # predicted transitions after each start (H)
    # real transitions before each start; the model sees at most context + 1 transitions while it
    # predicts (1: the Markovian ablation); null: as many as its block holds, minus one
    context: int | None = None
    n_starts: int = 32  # start points, spread evenly over the scored episodes
    n_samples: int = 16  # sampled futures per start point (TT samples, ensemble particles)
    episodes: str = "held_out"  # held_out: the run's validation episodes | all
    batch_starts: int = 8  # start points per model batch (x n_samples rows)
    seed: int = 0
    baseline: bool = True  # also score the Gaussian ensemble (and BC for actions=model)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    render: bool = True  # a picture (and video) of one predicted trajectory beside the real one
    device: str = "auto"
    progress: bool = True
    name: str = "${actions}-h${horizon}-c${ttrl.if_none:${context},full}"
    overwrite: bool = False  # replace results of other settings in the same folder
    logger: PlanLoggerConfig = field(default_factory=PlanLoggerConfig)


def validate_predict_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`TtrlError` (one line) for settings that cannot work, before anything loads."""
    problems = []
    for key, low in (("horizon", 1), ("n_starts", 1), ("n_samples", 1), ("batch_starts", 1)):
        value = cfg.get(key)
        if not _is_int(value) or value < low:
            problems.append(f"{key}={value!r} must be an integer >= {low}")
    context = cfg.get("context")
    if context is not None and (not _is_int(context) or context < 1):
        problems.append(f"context={context!r} must be an integer >= 1 (1: Markovian), or null")
    seed = cfg.get("seed")
    if not _is_int(seed) or seed < 0:
        problems.append(f"seed={seed!r} must be an integer >= 0")
    choices = [
        ("actions", cfg.get("actions"), ACTION_SOURCES),
        ("episodes", cfg.get("episodes"), EPISODE_CHOICES),
        ("which", cfg.get("which"), CHECKPOINTS),
        ("device", cfg.get("device"), DEVICES),
    ]
    problems += [
        f"{key}={value!r} is not one of {', '.join(allowed)}"
        for key, value, allowed in choices
        if value not in allowed
    ]
    name = cfg.get("name")
    if not isinstance(name, str) or not name.strip() or name.strip("/.") == "":
        problems.append(f"name={name!r} must name a folder (e.g. name=markovian)")
    if problems:
        raise TtrlError("bad predict config: " + "; ".join(problems))
    EnsembleConfig(**cfg.get("ensemble", {})).validate()
    BCConfig(**cfg.get("bc", {})).validate()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


ConfigStore.instance().store(name="predict_schema", node=PredictConfig)
