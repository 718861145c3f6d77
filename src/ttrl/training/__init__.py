"""Training stage: the data pipeline, AdamW + LR schedule, the loop, checkpoints, resume and DDP."""

from ttrl.training.optim import LRSchedule, build_optimizer, decay_parameter_names
from ttrl.training.trainer import (
    hand_over_stop_signal,
    preempted_exit_code,
    run_dir_from_hydra,
    train,
)

__all__ = [
    "LRSchedule",
    "build_optimizer",
    "decay_parameter_names",
    "hand_over_stop_signal",
    "preempted_exit_code",
    "run_dir_from_hydra",
    "train",
]
