"""How many torch threads a piece of work gets.

The scripts make idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``, see :mod:`ttrl.cli`), so
that a shared machine does not collapse. The price is paid by small operations: every op that
splits its work wakes the sleeping threads first. The planner's incremental steps run thousands of
such ops per decision (a few dozen rows each), and on two passive threads a decision took 1.4-1.6x
as long as on one (docs/benchmarks.md). So a model call on fewer than
:data:`SPLIT_MIN_ROW_TOKENS` row-tokens runs on one thread while threads wait passively; bigger
calls, and every call when threads spin (``OMP_WAIT_POLICY=ACTIVE`` or unset), keep torch's count.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

# Rows x tokens of one model call from which two passive threads beat one (cpu-4, halfcheetah sizes):
# 25 environments' 800-row steps gained, 8 environments' 512-row steps lost.
SPLIT_MIN_ROW_TOKENS = 768


def threads_wait_passively() -> bool:
    """Whether idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``), so each split op wakes them."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (None: leave as is), restoring the count afterwards."""
    before = torch.get_num_threads()
    if not threads or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def threads_for_call(row_tokens: int, passive: bool) -> int | None:
    """The torch thread count for a model call on ``row_tokens`` rows x tokens (None: torch's own):
    one for a small call while idle threads wait ``passive``-ly."""
    if passive and row_tokens < SPLIT_MIN_ROW_TOKENS and torch.get_num_threads() > 1:
        return 1
    return None
