"""Helpers shared by the scripts in ``scripts/``.

Importing this module (every script does, before torch loads) makes idle OpenMP threads sleep
instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless set already): with torch's default two
threads and one other busy process on a 2-core machine, spinning threads fight that process for
the cores and training slows several-fold; passive waiting costs little when the machine is idle
(figures in docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ttrl.errors import TtrlError

F = TypeVar("F", bound=Callable[..., Any])
THREAD_WAIT_POLICY = "PASSIVE"


def prefer_passive_thread_waits() -> None:
    """Set ``OMP_WAIT_POLICY`` for torch's OpenMP threads unless the user chose one; before torch loads."""
    if "torch" in sys.modules:
        return  # OpenMP has read its settings already; changing them now would only mislead
    os.environ.setdefault("OMP_WAIT_POLICY", THREAD_WAIT_POLICY)


prefer_passive_thread_waits()


def exit_on_user_error(fn: F) -> F:
    """Turn a :class:`TtrlError` raised by ``fn`` into one ``error: ...`` line and exit status 2.

    In a Hydra multirun the error is printed and raised instead, so only this job fails and the
    launcher goes on with the next one (Hydra reports the first failure at the end).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TtrlError as err:
            print(f"error: {err}", file=sys.stderr)
            if in_hydra_multirun():
                raise
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def in_hydra_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
