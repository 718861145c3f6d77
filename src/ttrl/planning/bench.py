"""Planner speed: milliseconds per decision of the cached planner and of the uncached algorithm.

A randomly initialised model with the environment's sizes (the paper's 4 layers, 4 heads, d=128,
10-transition block) and a discretiser fit on random data stand in for a trained one: the cost of a
decision depends only on the sizes and the planner settings, not on the weights.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ttrl.errors import TtrlError
from ttrl.planning.beam import BeamPlanner
from ttrl.planning.config import PlannerConfig
from ttrl.planning.context import PlanningContext


def build_random_planner_inputs(
    env: str, context: int, seed: int = 0, training_transitions: int = 10, n_envs: int = 1
) -> tuple[Any, Any, torch.Tensor]:
    """A random model, a discretiser fit on random data and ``n_envs`` prefixes of ``context``
    transitions each (one row per environment)."""
    from ttrl.data.registry import ENVS
    from ttrl.discretization import Discretizer
    from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig

    if env not in ENVS:
        raise TtrlError(
            f"unknown env {env!r} for the planning benchmark; use one of {', '.join(ENVS)}"
        )
    info = ENVS[env]
    S, A = info.observation_dim, info.action_dim
    T = S + A + 2
    torch.manual_seed(seed)
    config = TrajectoryTransformerConfig(
        observation_dim=S, action_dim=A, transition_dim=T, block_size=training_transitions * T - 1
    )
    model = TrajectoryTransformer(config).eval()
    rng = np.random.default_rng(seed)
    discretizer = Discretizer.fit(rng.normal(size=(10_000, T)), n_bins=config.vocab_size)
    planning_context = PlanningContext(
        discretizer, S, A, n_envs=n_envs, context_transitions=context
    )
    planning_context.reset(rng.normal(size=(n_envs, S)))
    rows = list(range(n_envs))
    for _ in range(context):
        planning_context.append(
            rows,
            rng.normal(size=(n_envs, A)),
            rng.normal(size=n_envs),
            rng.normal(size=(n_envs, S)),
        )
    return model, discretizer, planning_context.prefix()


def time_decisions(
    planner: BeamPlanner, prefix: torch.Tensor, decisions: int, seed: int
) -> dict[str, float]:
    """Milliseconds per ``plan`` call over ``decisions`` calls: mean and fastest wall-clock time, and
    the mean CPU time of this process (all its threads), which other processes inflate less."""
    wall = []
    cpu_start = time.process_time()
    for i in range(decisions):
        start = time.perf_counter()
        generator = torch.Generator(prefix.device).manual_seed(seed + i)
        planner.plan(prefix, generator=generator).tokens.cpu()  # waits for the device
        wall.append((time.perf_counter() - start) * 1000.0)
    cpu = (time.process_time() - cpu_start) * 1000.0 / decisions
    return {"mean": sum(wall) / len(wall), "best": min(wall), "cpu": cpu}


def benchmark_planner(
    env: str = "halfcheetah",
    horizon: int = 5,
    beam_width: int = 32,
    n_expand: int = 2,
    context: int = 5,
    decisions: int = 3,
    uncached_decisions: int = 1,
    seed: int = 0,
    threads: int | None = None,
    n_envs: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Time the cached and the uncached planner on the same inputs; check they plan the same.

    The first plan of each (the comparison) is an untimed warm-up; ``uncached_decisions=0`` skips
    the uncached planner and the comparison. ``n_envs`` environments are planned together in one
    batch (each call is then one decision for each of them); ``threads`` sets torch's thread
    count (None: torch's default). The machine's load average is reported with the timings, since
    other processes on a small machine slow every number down.
    """
    with torch_threads(threads):
        return _time_both(
            env,
            horizon,
            beam_width,
            n_expand,
            context,
            decisions,
            uncached_decisions,
            seed,
            n_envs,
            torch.device(device),
        )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (None: leave as is), restoring the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_both(
    env: str,
    horizon: int,
    beam_width: int,
    n_expand: int,
    context: int,
    decisions: int,
    uncached_decisions: int,
    seed: int,
    n_envs: int,
    device: torch.device,
) -> dict[str, Any]:
    model, discretizer, prefix = build_random_planner_inputs(env, context, seed, n_envs=n_envs)
    model, prefix = model.to(device), prefix.to(device)
    settings = dict(
        horizon=horizon, beam_width=beam_width, n_expand=n_expand, context_transitions=context
    )
    cached = BeamPlanner(model, discretizer, PlannerConfig(**settings, use_cache=True))
    uncached = BeamPlanner(model, discretizer, PlannerConfig(**settings, use_cache=False))
    cached_plan = cached.plan(prefix, generator=torch.Generator(device).manual_seed(seed)).tokens
    same_plan = None  # checked only when the uncached planner is timed too (it is slow)
    if uncached_decisions:
        uncached_plan = uncached.plan(prefix, generator=torch.Generator(device).manual_seed(seed))
        same_plan = torch.equal(cached_plan, uncached_plan.tokens)
    cached_ms = time_decisions(cached, prefix, decisions, seed)
    uncached_ms = (
        time_decisions(uncached, prefix, uncached_decisions, seed)["mean"]
        if uncached_decisions
        else None
    )
    return {
        "benchmark": "plan",
        "env": env,
        "horizon": horizon,
        "beam_width": beam_width,
        "n_expand": n_expand,
        "context": context,
        "n_envs": n_envs,
        "window": cached.config.window_transitions,
        "decisions": decisions,
        "uncached_decisions": uncached_decisions,
        "cached_ms_per_decision": round(cached_ms["mean"], 1),
        "cached_best_ms_per_decision": round(cached_ms["best"], 1),
        "cached_cpu_ms_per_decision": round(cached_ms["cpu"], 1),
        "uncached_ms_per_decision": None if uncached_ms is None else round(uncached_ms, 1),
        "speedup": None if uncached_ms is None else round(uncached_ms / cached_ms["mean"], 1),
        # n_envs episodes of 1000 steps, replanning every step, at this speed
        "episodes_of_1000_steps_s": round(cached_ms["mean"], 1),
        "same_plan_cached_vs_uncached": same_plan,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
    }
