"""baselines stage: small models trained on the same transitions as the transformer.

- :mod:`~ttrl.baselines.ensemble`: a PETS probabilistic ensemble of Gaussian MLPs (dynamics and
  reward), for prediction and planning comparisons.
- :mod:`~ttrl.baselines.bc`: behaviour cloning (CORL's BC), the offline-RL policy baseline.
- :mod:`~ttrl.baselines.iql`: implicit Q-learning, a policy baseline and the Q-function that guides
  the planner's ``q`` scorer.
- :mod:`~ttrl.baselines.mlp`: what they share: MLP builder, normaliser, minibatch loop and
  one-bundle save/load.
- ``scripts/train_baseline.py algo=<name>``: :mod:`~ttrl.baselines.runner` trains a registered
  :class:`~ttrl.baselines.algorithms.BaselineAlgorithm` with the transformer's run-dir, resume and
  logging conventions and evaluates it as ``plan.py`` does (:mod:`~ttrl.baselines.evaluate`).
"""

from ttrl.baselines.bc import BCConfig, BCPolicy, train_bc
from ttrl.baselines.ensemble import (
    EnsembleConfig,
    GaussianEnsemble,
    GaussianPrediction,
    gaussian_log_density,
    train_ensemble,
)
from ttrl.baselines.iql import IQLConfig, IQLModel, train_iql
from ttrl.baselines.mlp import (
    BaselineModule,
    Normalizer,
    fit_minibatches,
    load_module,
    mlp,
    save_module,
)

__all__ = [
    "BCConfig",
    "BCPolicy",
    "BaselineModule",
    "EnsembleConfig",
    "GaussianEnsemble",
    "GaussianPrediction",
    "IQLConfig",
    "IQLModel",
    "Normalizer",
    "fit_minibatches",
    "gaussian_log_density",
    "load_module",
    "mlp",
    "save_module",
    "train_bc",
    "train_ensemble",
    "train_iql",
]
