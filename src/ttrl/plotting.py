"""Headless matplotlib for every plot ttrl writes: the Agg backend and atomic PNG files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ttrl.io import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, so plots need no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG atomically, then close it."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        pyplot().close(fig)
