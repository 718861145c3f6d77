"""Long-horizon prediction: open-loop rollouts of a trained model scored against held-out data.

:func:`run_prediction` (``scripts/predict.py``) predicts ``horizon`` steps from start points spread
over a run's held-out episodes with the Trajectory Transformer (:class:`TransformerPredictor`) and
a probabilistic ensemble of one-step Gaussian MLPs (:class:`EnsemblePredictor`), and scores both
per step (:mod:`ttrl.prediction.metrics`). A new predictor is one class with the
:class:`OpenLoopPredictor` protocol.
"""

from ttrl.prediction.data import PredictionData, StartPoints, StartWindows, spread_start_points
from ttrl.prediction.predictors import (
    EnsemblePredictor,
    OpenLoopPredictor,
    StepScores,
    TransformerPredictor,
)
from ttrl.prediction.runner import run_prediction

__all__ = [
    "EnsemblePredictor",
    "OpenLoopPredictor",
    "PredictionData",
    "StartPoints",
    "StartWindows",
    "StepScores",
    "TransformerPredictor",
    "run_prediction",
    "spread_start_points",
]
