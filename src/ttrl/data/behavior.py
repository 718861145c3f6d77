"""Moved to :mod:`ttrl.making.behavior` (making datasets is a stage of its own); kept importable."""

import warnings

from ttrl.making.behavior import *  # noqa: F403

warnings.warn(
    "ttrl.data.behavior moved to ttrl.making.behavior; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
