"""One side of ``bench.py plan --baseline``: a process that plans and times decisions on request.

``bench.py plan --baseline REF`` runs two of these, one with ``PYTHONPATH`` at the current ``src``
folder and one at a copy of ``REF``'s, and asks them in turn to time decisions, so that both
planners run on the same inputs under the same machine load. The parent starts this file by its
path, never as ``ttrl.planning.bench_worker``: the ``ttrl`` it plans with is whichever ``src`` the
``PYTHONPATH`` names, and nothing here imports ``ttrl`` at module level. The timing and counting
helpers are imported by :mod:`ttrl.planning.bench` too, so both modes measure the same way.

Protocol: one JSON request per line on stdin (``setup``, ``time``, ``quit``); one JSON reply per
request on stdout, on a line that starts with :data:`REPLY` (other output is passed to stderr).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPLY = "@ttrl-bench-worker "


def time_plan_calls(planner: Any, prefix: torch.Tensor, decisions: int, first_seed: int) -> dict:
    """Wall-clock ms of each of ``decisions`` ``plan`` calls (decision ``i`` seeded ``first_seed + i``)
    and the mean CPU ms of this process (all its threads) per call."""
    wall = []
    cpu_start = time.process_time()
    for i in range(decisions):
        start = time.perf_counter()
        generator = torch.Generator(prefix.device).manual_seed(first_seed + i)
        planner.plan(prefix, generator=generator).tokens.cpu()  # waits for the device
        wall.append((time.perf_counter() - start) * 1000.0)
    cpu = (time.process_time() - cpu_start) * 1000.0 / max(decisions, 1)
    return {"wall_ms": wall, "cpu_ms": cpu}


def count_multiply_adds(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()``'s result and the multiply-adds of the matrix products it ran (torch's
    ``FlopCounterMode``: linear layers, matmuls, attention; what actually ran, padding included)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, int(counter.get_total_flops()) // 2


def attention_implementation(planner: Any) -> str:
    """How the planner's cache ran its attention: ``compiled`` (the CPU kernel) or ``torch``
    (also for checkouts from before the kernel)."""
    decoder = getattr(planner, "_cached_decoder", None)
    return "compiled" if getattr(decoder, "kernel", None) is not None else "torch"


def inputs_digest(model: Any, discretizer: Any, prefix: torch.Tensor) -> str:
    """A hash of the weights, bin edges and prefix: equal digests mean both sides plan the same inputs."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    thresholds = getattr(discretizer, "thresholds", None)
    if thresholds is not None:
        digest.update(np.ascontiguousarray(thresholds).tobytes())
    digest.update(prefix.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Side:
    """The planner and inputs of one checkout, built by its own ``build_random_planner_inputs``."""

    def __init__(self, request: dict) -> None:
        import ttrl
        from ttrl.planning.beam import BeamPlanner
        from ttrl.planning.bench import build_random_planner_inputs
        from ttrl.planning.config import PlannerConfig

        expected = os.environ.get("TTRL_BENCH_SRC")
        package = Path(ttrl.__file__).resolve().parent
        self.package = str(package)
        if expected and not package.is_relative_to(Path(expected).resolve()):
            raise RuntimeError(f"imported ttrl from {self.package}, not from {expected}")
        torch.set_num_threads(request["threads"])
        kwargs = {}
        if "n_envs" in inspect.signature(build_random_planner_inputs).parameters:
            kwargs["n_envs"] = request["n_envs"]
        elif request["n_envs"] != 1:
            raise RuntimeError("this checkout's benchmark plans one environment only (no n_envs)")
        model, discretizer, prefix = build_random_planner_inputs(
            request["env"], request["context"], request["seed"], **kwargs
        )
        device = torch.device(request["device"])
        self.model, self.prefix = model.to(device), prefix.to(device)
        self.digest = inputs_digest(model, discretizer, prefix)
        settings = dict(
            horizon=request["horizon"],
            beam_width=request["beam_width"],
            n_expand=request["n_expand"],
            use_cache=True,
        )
        if "context_transitions" in inspect.signature(PlannerConfig).parameters:
            settings["context_transitions"] = request["context"]  # a checkout before the controller
        config = PlannerConfig(**settings)
        self.planner = BeamPlanner(self.model, discretizer, config)
        self.window = getattr(config, "window_transitions", None)
        sizes = (
            "observation_dim",
            "action_dim",
            "transition_dim",
            "n_layer",
            "n_embd",
            "vocab_size",
        )
        self.sizes = {name: getattr(model.config, name) for name in sizes}
        self.observation_dim = model.config.observation_dim
        self.action_dim = model.config.action_dim

    def first_plan(self, seed: int) -> dict:
        """The untimed warm-up plan from ``seed``, with the multiply-adds it ran."""
        generator = torch.Generator(self.prefix.device).manual_seed(seed)
        plan, multiply_adds = count_multiply_adds(
            lambda: self.planner.plan(self.prefix, generator=generator)
        )
        tokens = plan.tokens.cpu()
        S, A = self.observation_dim, self.action_dim
        return {
            "ttrl": self.package,
            "inputs_digest": self.digest,
            "plan_digest": hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16],
            "first_action_tokens": tokens[:, 0, S : S + A].tolist(),
            "counted_multiply_adds": multiply_adds,
            "window": self.window,
            "model": self.sizes,
            "torch_threads": torch.get_num_threads(),
            "cached_attention": attention_implementation(self.planner),
        }


def serve(requests: Any, reply: Callable[[dict], None]) -> None:
    """Answer ``requests`` (JSON lines) until ``quit`` or their end; an error is the last reply."""
    side = None
    for line in requests:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "quit":
                return
            if op == "setup":
                side = _Side(request)
                reply(side.first_plan(request["seed"]))
            elif op == "time":
                reply(
                    time_plan_calls(
                        side.planner, side.prefix, request["decisions"], request["first_seed"]
                    )
                )
            else:
                raise RuntimeError(f"unknown request {op!r}")
        except Exception as err:  # any failure: reported to the parent, which names the side
            reply({"error": f"{type(err).__name__}: {err}"})
            return


def main() -> None:
    """Serve stdin; replies go to the real stdout, anything else printed goes to stderr."""
    out = sys.stdout
    sys.stdout = sys.stderr

    def reply(message: dict) -> None:
        out.write(REPLY + json.dumps(message) + "\n")
        out.flush()

    serve(sys.stdin, reply)


if __name__ == "__main__":
    main()
