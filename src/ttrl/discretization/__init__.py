"""discretization stage: per-dimension bins that turn transitions into tokens and back."""

from ttrl.discretization.discretizer import Discretizer, quantile_thresholds, uniform_thresholds

__all__ = ["Discretizer", "quantile_thresholds", "uniform_thresholds"]
