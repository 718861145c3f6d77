"""Stop signals, recorded instead of obeyed at once, so long work can end its step and keep it.

Training (checkpoint) and planning (finished episodes) both stop this way: the first stop signal is
recorded and the loop ends after its current step; a Ctrl-C while a stop is already pending raises
KeyboardInterrupt at once (the user insists). The process then exits with ``128 + signum``, as a
process killed by that signal would report.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def stop_exit_code(signum: int) -> int:
    """Exit status after a stop signal: ``128 + signum`` (143 for SIGTERM, 130 for Ctrl-C)."""
    return 128 + signum


@contextmanager
def recorded_stop_signals(
    signals: Sequence[int], on_interrupt: str | None = None
) -> Iterator[dict[str, int | None]]:
    """Record the first of ``signals`` in ``state["signum"]`` for the ``with`` body.

    ``on_interrupt`` is printed to stderr on the first Ctrl-C. Outside the main thread, where
    handlers cannot be installed, nothing changes. The previous handlers come back afterwards.
    """
    state: dict[str, int | None] = {"signum": None}

    def record(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and state["signum"] is not None:
            raise KeyboardInterrupt
        state["signum"] = state["signum"] or signum
        if signum == signal.SIGINT and on_interrupt:
            print(f"\n{on_interrupt}", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {sig: signal.signal(sig, record) for sig in signals}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
