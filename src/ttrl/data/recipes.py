"""Moved to :mod:`ttrl.making.recipes` (making datasets is a stage of its own); kept importable."""

import warnings

from ttrl.making.recipes import *  # noqa: F403

warnings.warn(
    "ttrl.data.recipes moved to ttrl.making.recipes; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
