"""data stage: dataset names, loading, local collection, preprocessing and token windows."""

from ttrl.data.collect import (
    collect_dataset,
    collect_episodes,
    write_level_dataset,
    write_minari_dataset,
)
from ttrl.data.loading import (
    Transitions,
    load_d4rl_hdf5,
    load_minari,
    load_transitions,
    make_transitions,
    write_d4rl_hdf5,
)
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
    "TokenDataset",
    "Trajectories",
    "Transitions",
    "collect_dataset",
    "collect_episodes",
    "dataset_names",
    "env_names",
    "load_d4rl_hdf5",
    "load_minari",
    "load_transitions",
    "make_transitions",
    "official_minari_id",
    "preprocess",
    "resolve_dataset",
    "split_dataset_name",
    "ttrl_minari_id",
    "write_d4rl_hdf5",
    "write_level_dataset",
    "write_minari_dataset",
]
