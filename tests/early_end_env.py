"""Test helper: gymnasium envs in which the episode reset with one seed ends early.

So that one episode of an evaluation finishes while the others still run. Used in-process
(monkeypatch ``gymnasium.make`` with :func:`make`) and in ``scripts/plan.py`` subprocesses, via a
``sitecustomize`` module that calls :func:`install` (the script itself runs unchanged).

Settings come from environment variables: ``TTRL_TEST_EARLY_SEED`` and ``TTRL_TEST_EARLY_STEPS``
(that episode terminates after so many steps); optionally ``TTRL_TEST_STEP_DELAY`` (seconds every
later step of the other episodes takes: time to signal the process) and ``TTRL_TEST_SELF_SIGNAL``
(a signal number the process sends itself as the early episode ends).
"""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium

_make = gymnasium.make


class EndsEarly(gymnasium.Wrapper):
    """Terminates the episode reset with ``TTRL_TEST_EARLY_SEED`` after ``TTRL_TEST_EARLY_STEPS``."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        self.early, self.steps = seed == int(os.environ["TTRL_TEST_EARLY_SEED"]), 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> Any:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        early_steps = int(os.environ["TTRL_TEST_EARLY_STEPS"])
        if self.early and self.steps == early_steps:
            terminated = True
            if os.environ.get("TTRL_TEST_SELF_SIGNAL"):
                os.kill(os.getpid(), int(os.environ["TTRL_TEST_SELF_SIGNAL"]))
        elif not self.early and self.steps > early_steps:
            time.sleep(float(os.environ.get("TTRL_TEST_STEP_DELAY", "0")))
        return observation, reward, terminated, truncated, info


def make(*args: Any, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make``, wrapped in :class:`EndsEarly`."""
    return EndsEarly(_make(*args, **kwargs))


def install() -> None:
    """Make every ``gymnasium.make`` of this process an :class:`EndsEarly` env."""
    gymnasium.make = make


# what sitecustomize.py runs in a subprocess (its folder and tests/ on PYTHONPATH)
SITECUSTOMIZE = "import early_end_env\n\nearly_end_env.install()\n"
