"""making stage: datasets made locally, apart from reading them (:mod:`ttrl.data`).

- :mod:`ttrl.making.collect`: roll out a policy in a gymnasium env and write the episodes as a Minari
  dataset, atomically, one writer per dataset, refusing a disk too full for it.
- :mod:`ttrl.making.behavior`: SAC behaviour policies (training with stable-baselines3, snapshots,
  loading the shipped actors without it).
- :mod:`ttrl.making.recipes`: D4RL's levels (random, medium, medium-replay, expert, medium-expert)
  from those policies, as ``ttrl/<env>/<level>-v0``.
- :mod:`ttrl.making.maze`: PointMaze datasets (``pointmaze-<maze>[-dense]``) from a waypoint
  controller, the recipe of Minari's ``D4RL/pointmaze``, with dict observations.
- :mod:`ttrl.making.antmaze`: a small AntMaze dataset (``antmaze-<dataset>``) of random actions with
  the structure of Minari's ``D4RL/antmaze``: test data for the loading and training path only.

Entry points: ``scripts/make_dataset.py`` and ``scripts/train_behavior.py``. Only the collection API is
imported here; ``behavior`` and ``recipes`` import torch and gymnasium, so they load on their own.
"""

from ttrl.making.collect import (
    collect_dataset,
    collect_episodes,
    write_level_dataset,
    write_minari_dataset,
)

__all__ = [
    "collect_dataset",
    "collect_episodes",
    "write_level_dataset",
    "write_minari_dataset",
]
