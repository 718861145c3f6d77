"""What a training checkpoint holds beyond the model: RNG streams and the trainer's state.

Restoring the torch/numpy/python RNGs (dropout) and the batch-sampling generator together with the
optimiser and scheduler makes a resumed run continue exactly as an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# checkpoint file names belong to the bundle (ttrl.checkpoint); still importable from here
from ttrl.checkpoint import checkpoint_path as checkpoint_path
from ttrl.checkpoint import resume_checkpoint as resume_checkpoint
from ttrl.errors import TtrlError

# Model-config fields that must match the dataset for a checkpoint to be resumed on it.
DATA_DIM_FIELDS = ("observation_dim", "action_dim", "transition_dim", "vocab_size", "block_size")
# Settings that give a checkpoint's weights, tokens and optimiser state their meaning: a resumed run
# must keep them (the budget, intervals, logging, device and evaluation may change).
# Fixed settings newer than some saved runs, with the value those runs had in effect.
ADDED_SETTINGS = {"data.hidden_observation_fraction": 0.0, "data.goal": None}

FIXED_ON_RESUME = (
    "env.name",
    "data",
    "model",
    "discretizer",
    "seed",
    "trainer.batch_size",
    "trainer.learning_rate",
    "trainer.betas",
    "trainer.weight_decay",
    "trainer.grad_clip",
    "trainer.lr_decay",
    "trainer.warmup_epochs",
    "trainer.decay_epochs",
    "trainer.min_lr_ratio",
)


def stream_seeds(seed: int, rank: int) -> tuple[int, int]:
    """Independent seeds for (dropout RNG, batch sampling) of one rank, derived from the run seed."""
    dropout, sampling = np.random.SeedSequence([seed, rank]).generate_state(2)
    return int(dropout), int(sampling)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global state that libraries may use)
    torch.manual_seed(seed)


def capture_rng(sampler: torch.Generator) -> dict[str, Any]:
    """The RNG states of this process: torch (CPU and CUDA), numpy, python and the batch sampler."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),  # noqa: NPY002
        "python": random.getstate(),
        "sampler": sampler.get_state(),
    }


def restore_rng(state: dict[str, Any], sampler: torch.Generator) -> None:
    """Put back the states :func:`capture_rng` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    sampler.set_state(state["sampler"])


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(config, dict):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def changed_fixed_settings(
    saved: dict[str, Any], now: dict[str, Any], fixed_keys: Sequence[str] = FIXED_ON_RESUME
) -> list[str]:
    """``key saved -> now`` for each setting under ``fixed_keys`` that differs."""
    before, after = flatten(saved), flatten(now)

    def fixed(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in fixed_keys)

    # settings added since a run was saved count as their default there
    before = {**{k: v for k, v in ADDED_SETTINGS.items() if k in after}, **before}
    keys = sorted(k for k in before.keys() | after.keys() if fixed(k))
    return [
        f"{k} {before.get(k, '<unset>')!r} -> {after.get(k, '<unset>')!r}"
        for k in keys
        if before.get(k) != after.get(k)
    ]


def check_resume_config(bundle: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """Raise :class:`TtrlError` naming the settings that changed since ``path`` was saved."""
    saved = bundle.get("config")
    if not isinstance(saved, dict):
        return  # a bundle without its config: the dims check below is all there is
    changed = changed_fixed_settings(saved, config)
    if changed:
        raise TtrlError(
            f"cannot resume {path}: it was trained with other settings ({'; '.join(changed)}); "
            f"these cannot change in a resumed run (the budget, intervals, logging and device "
            f"can): run again with the checkpoint's values, or pass a new run_dir"
        )


def check_resumable(bundle: dict[str, Any], model_config: dict[str, Any], path: Path) -> None:
    """Raise :class:`TtrlError` if the checkpoint was trained on data with other dims."""
    if not isinstance(bundle.get("trainer"), dict):
        raise TtrlError(
            f"{path} holds no trainer state, so training cannot resume from it; "
            "use a checkpoint written by scripts/train.py or a new run_dir"
        )
    saved = bundle.get("model_config") or {}
    mismatched = [
        f"{name} {saved.get(name)} vs {model_config[name]}"
        for name in DATA_DIM_FIELDS
        if saved.get(name) != model_config[name]
    ]
    if mismatched:
        raise TtrlError(
            f"checkpoint {path} does not fit this dataset/config (checkpoint vs now: "
            f"{', '.join(mismatched)}); use the same env/data settings or a new run_dir"
        )
