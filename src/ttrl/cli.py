"""Helpers shared by the scripts in ``scripts/``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ttrl.errors import TtrlError

F = TypeVar("F", bound=Callable[..., Any])


def exit_on_user_error(fn: F) -> F:
    """Turn a :class:`TtrlError` raised by ``fn`` into one ``error: ...`` line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TtrlError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
