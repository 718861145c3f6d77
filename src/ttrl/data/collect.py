"""Moved to :mod:`ttrl.making.collect` (making datasets is a stage of its own); kept importable."""

import warnings

from ttrl.making.collect import *  # noqa: F403

warnings.warn(
    "ttrl.data.collect moved to ttrl.making.collect; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
