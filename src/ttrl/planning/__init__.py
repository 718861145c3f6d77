"""Planning stage: exact, cached, batched beam search over a trained Trajectory Transformer."""

from ttrl.planning.beam import BeamPlanner, Plan
from ttrl.planning.config import PlannerConfig
from ttrl.planning.context import PlanningContext

__all__ = ["BeamPlanner", "Plan", "PlannerConfig", "PlanningContext"]
