"""The planner cache's attention as one compiled CPU call (``cached_attention.cpp``), built on first use.

On the CPU, the per-token attention of beam search is hundreds of tiny products per decision, and
torch spends most of their time dispatching small ops. :class:`~ttrl.planning.decoder.CachedDecoder`
therefore runs each layer's attention (storing the new keys/values and attending over the shared,
parent and own segments) as one call of a small C++ extension when it is available, and with torch
ops otherwise. Both compute the same thing; tests hold them to each other and to the plain model.

``TTRL_CACHED_ATTENTION`` picks the implementation:

- ``auto`` (default): the compiled kernel on the CPU when it builds, else torch ops (one warning);
- ``torch``: torch ops only (no compiler needed);
- ``compiled``: the compiled kernel, or one line saying why it cannot be built.

The extension is compiled once per machine kind into ``$TTRL_KERNEL_DIR`` (see :mod:`ttrl.compiled`,
which builds both of ttrl's CPU extensions).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from ttrl import compiled

SOURCE = Path(__file__).with_name("cached_attention.cpp")
CHOICES = compiled.CHOICES
ENV_VAR = "TTRL_CACHED_ATTENTION"

_loaded: dict[str, ModuleType | None] = {}


def choice() -> str:
    """The implementation ``TTRL_CACHED_ATTENTION`` asks for (one line if it is not a choice)."""
    return compiled.choice(ENV_VAR)


def kernel_for(device: torch.device, dtype: torch.dtype) -> ModuleType | None:
    """The compiled kernel for a cache on ``device`` in ``dtype``, or None for torch ops."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return None
    return compiled.load_chosen(
        _loaded,
        ENV_VAR,
        lambda: load_extension(),
        "the planner's compiled attention",
        "planning with torch ops",
    )


def extension_name() -> str:
    """The build's name: what it is compiled from and for."""
    return compiled.build_name(SOURCE, "ttrl_cached_attention")


def load_extension() -> ModuleType:
    """Import the built kernel, building it first if this machine kind has none yet."""
    return compiled.load(SOURCE, extension_name(), "the planner's attention kernel")
