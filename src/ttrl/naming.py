"""Names derived from a dataset or a run's config: run-dir folders, W&B groups, run and artifact names.

Training names its W&B run and group with these, and evaluation joins that group, so both import them
from here.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

# Config sections that do not change what is trained, left out of the W&B group name.
GROUP_EXCLUDED_KEYS = ("seed", "run_dir", "device", "logger", "evaluate")


def dataset_slug(name: str) -> str:
    """A one-folder name for a dataset: a file's stem, or a Minari id with ``/`` turned into ``-``."""
    path = Path(name)
    if path.suffix in (".hdf5", ".h5"):
        return path.stem
    return name.strip("/").replace("/", "-")


def sanitize_artifact_name(name: str) -> str:
    """W&B names allow letters, digits, ``-``, ``_`` and ``.``; dataset ids may hold ``/``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def run_label(dataset: str) -> str:
    """A dataset name as W&B group/run/artifact names allow it (a file's stem for HDF5 paths)."""
    return sanitize_artifact_name(dataset_slug(dataset))


def config_group(config: dict[str, Any]) -> str:
    """A stable W&B group for runs that differ only in seed: ``<env>-<hash of the rest>``.

    The hash is of the layout ttrl first wrote, with the controller's settings inside
    ``planner``, so runs and evaluations from before and after the controller got its section
    share their group.
    """
    rest = {k: v for k, v in config.items() if k not in GROUP_EXCLUDED_KEYS}
    if isinstance(rest.get("controller"), dict) and isinstance(rest.get("planner"), dict):
        controller = rest.pop("controller")
        rest["planner"] = {**rest["planner"], **controller}
    digest = hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{run_label(config['env']['name'])}-{digest}"
