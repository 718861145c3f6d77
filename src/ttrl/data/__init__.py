"""data stage: reading datasets: names, loading, preprocessing and token windows.

Making datasets is a stage of its own, :mod:`ttrl.making`, which this package does not import.
"""

from ttrl.data.loading import (
    Transitions,
    load_d4rl_hdf5,
    load_minari,
    load_transitions,
    make_transitions,
    write_d4rl_hdf5,
)
from ttrl.data.pipeline import FittedData, load_and_fit, load_preprocessed
from ttrl.data.preprocess import Trajectories, preprocess
from ttrl.data.registry import (
    ENVS,
    LEVELS,
    DatasetSpec,
    dataset_names,
    env_names,
    official_minari_id,
    resolve_dataset,
    split_dataset_name,
    ttrl_minari_id,
)
from ttrl.data.sequences import TokenDataset

__all__ = [
    "ENVS",
    "LEVELS",
    "DatasetSpec",
    "FittedData",
    "TokenDataset",
    "Trajectories",
    "Transitions",
    "dataset_names",
    "env_names",
    "load_and_fit",
    "load_d4rl_hdf5",
    "load_minari",
    "load_preprocessed",
    "load_transitions",
    "make_transitions",
    "official_minari_id",
    "preprocess",
    "resolve_dataset",
    "split_dataset_name",
    "ttrl_minari_id",
    "write_d4rl_hdf5",
]

# Names that moved to the making stage: still importable from here, with a warning naming the new place.
MOVED_TO_MAKING = {
    "collect_dataset": "ttrl.making",
    "collect_episodes": "ttrl.making",
    "write_level_dataset": "ttrl.making",
    "write_minari_dataset": "ttrl.making",
}


def __getattr__(name: str):
    if name in MOVED_TO_MAKING:
        import importlib
        import warnings

        new = MOVED_TO_MAKING[name]
        warnings.warn(
            f"ttrl.data.{name} moved to {new}.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new), name)
    raise AttributeError(f"module 'ttrl.data' has no attribute {name!r}")
