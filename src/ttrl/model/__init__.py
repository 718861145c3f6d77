"""Model stage: the Trajectory Transformer, its key/value cache and checkpoint formats."""

from ttrl.model.config import TrajectoryTransformerConfig
from ttrl.model.transformer import (
    PastKeyValues,
    TrajectoryTransformer,
    TrajectoryTransformerOutput,
    past_length,
    reorder_cache,
)

__all__ = [
    "PastKeyValues",
    "TrajectoryTransformer",
    "TrajectoryTransformerConfig",
    "TrajectoryTransformerOutput",
    "past_length",
    "reorder_cache",
]
