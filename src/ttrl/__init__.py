"""ttrl: the Trajectory Transformer, offline RL as one big sequence-modelling problem."""

from __future__ import annotations

__version__ = "0.1.0"

from ttrl.errors import TtrlError  # noqa: E402

__all__ = ["TtrlError", "__version__"]
