"""Helpers shared by the scripts in ``scripts/``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ttrl.errors import TtrlError

F = TypeVar("F", bound=Callable[..., Any])


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
