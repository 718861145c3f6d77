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
