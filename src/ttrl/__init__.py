"""ttrl: the Trajectory Transformer, offline RL as one big sequence-modelling problem."""

from __future__ import annotations

__version__ = "0.1.0"

from ttrl.errors import TtrlError

__all__ = ["TrajectoryTransformer", "TrajectoryTransformerConfig", "TtrlError", "__version__"]

# Exported lazily so that `import ttrl` does not import torch.
_LAZY_EXPORTS = {
    "TrajectoryTransformer": "ttrl.model",
    "TrajectoryTransformerConfig": "ttrl.model",
}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'ttrl' has no attribute {name!r}")
