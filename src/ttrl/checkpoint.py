"""The checkpoint bundle: one file that rebuilds a trained model, its discretiser and its config.

A bundle is a ``torch.save``'d dict::

    {
      "format": "ttrl-bundle", "version": <ttrl version>,
      "model_config": {...TrajectoryTransformerConfig fields...},
      "model": <state dict>,
      "discretizer": <Discretizer.state_dict()> or None,
      "config": <resolved run config as plain dict> or None,
      "trainer": <optimizer, scheduler, step, RNG states, W&B run id, best val loss> or None,
    }

Training writes ``<run_dir>/checkpoints/last.pt`` and ``best.pt``; planning reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ttrl.errors import TtrlError
from ttrl.io import atomic_torch_save

BUNDLE_FORMAT = "ttrl-bundle"
CHECKPOINT_DIR = "checkpoints"


def save_bundle(path: str | os.PathLike, **parts: Any) -> Path:
    """Write a bundle holding ``parts`` (model_config, model, discretizer, config, trainer) atomically."""
    from ttrl import __version__

    bundle = {"format": BUNDLE_FORMAT, "version": __version__, **parts}
    return atomic_torch_save(bundle, path)


def find_bundle(path: str | os.PathLike, which: str = "last") -> Path:
    """Resolve a bundle file, a directory holding ``model.pt``, or a run dir to a bundle path."""
    path = Path(path)
    candidates = (
        [path]
        if path.is_file()
        else [
            path / CHECKPOINT_DIR / f"{which}.pt",
            path / "model.pt",
        ]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if not path.exists():
        raise TtrlError(f"{path} does not exist; pass a training run dir or a checkpoint file")
    raise TtrlError(
        f"no checkpoint in {path} (looked for {', '.join(str(c) for c in candidates)}); "
        f"train one with `python scripts/train.py` or pass the run dir that holds it"
    )


def load_bundle(path: str | os.PathLike, which: str = "last", map_location: Any = "cpu") -> dict:
    """Load a bundle from a file, a ``model.pt`` directory or a run dir, checking its format."""
    import torch

    file = find_bundle(path, which)
    try:
        bundle = torch.load(file, map_location=map_location, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise TtrlError(
            f"cannot read checkpoint {file}: {err}; it may be truncated or not a ttrl bundle"
        ) from err
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise TtrlError(
            f"{file} is not a ttrl checkpoint bundle; pass one written by scripts/train.py"
        )
    return bundle
