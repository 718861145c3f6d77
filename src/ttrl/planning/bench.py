"""Planner speed: milliseconds per decision of the cached planner and of the uncached algorithm.

A randomly initialised model with the environment's sizes (the paper's 4 layers, 4 heads, d=128,
10-transition block) and a discretiser fit on random data stand in for a trained one: the cost of a
decision depends only on the sizes and the planner settings, not on the weights.

:func:`decision_multiply_adds` counts the model's multiply-adds in one decision (the compute floor
the timings are set against); :func:`compare_with_baseline` times the planner of another commit
side by side with the current one (``bench.py plan --baseline REF``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ttrl.errors import TtrlError
from ttrl.planning.beam import BeamPlanner
from ttrl.planning.bench_worker import (
    REPLY,
    attention_implementation,
    count_multiply_adds,
    time_plan_calls,
)
from ttrl.planning.config import ControllerConfig, PlannerConfig
from ttrl.planning.context import PlanningContext
from ttrl.threads import torch_threads


def build_random_planner_inputs(
    env: str, context: int, seed: int = 0, training_transitions: int = 10, n_envs: int = 1
) -> tuple[Any, Any, torch.Tensor]:
    """A random model, a discretiser fit on random data and ``n_envs`` prefixes of ``context``
    transitions each (one row per environment)."""
    from ttrl.data.registry import ENVS
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
    discretizer, prefix = random_discretizer_and_prefix(config, context, n_envs, seed)
    return model, discretizer, prefix


def random_discretizer_and_prefix(
    config: Any, context: int, n_envs: int = 1, seed: int = 0
) -> tuple[Any, torch.Tensor]:
    """A discretiser fit on random rows of ``config``'s sizes and ``n_envs`` random prefixes of
    ``context`` transitions each (a planner's cost depends on their sizes, not their values)."""
    from ttrl.discretization import Discretizer

    S, A, T = config.observation_dim, config.action_dim, config.transition_dim
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
    return discretizer, planning_context.prefix()


def time_decisions(
    planner: BeamPlanner, prefix: torch.Tensor, decisions: int, seed: int
) -> dict[str, float]:
    """Milliseconds per ``plan`` call over ``decisions`` calls: mean and fastest wall-clock time, and
    the mean CPU time of this process (all its threads), which other processes inflate less."""
    timed = time_plan_calls(planner, prefix, decisions, seed)
    wall = timed["wall_ms"]
    return {"mean": sum(wall) / len(wall), "best": min(wall), "cpu": timed["cpu_ms"]}


def decision_multiply_adds(
    model: Any,
    planner: PlannerConfig,
    n_envs: int = 1,
    context_transitions: int = ControllerConfig.context_transitions,
) -> int:
    """Multiply-adds of the model's matrix products in one ``plan`` call of the cached planner.

    ``model`` is the model's config (``n_layer``, ``n_embd``, ``vocab_size`` and the transition
    sizes); ``n_envs`` environments are planned together, each after a prefix of
    ``context_transitions`` transitions (the controller's). This walks the token schedule of the beam
    search as :class:`~ttrl.planning.window.ModelWindow` feeds it to the cache:

    - the first call runs the cropped prefix once per environment;
    - per planning step, ``beam * n_expand`` rows per environment each take one incremental step
      per action token and one for the reward (the value's logits);
    - before every step but the first, ``beam`` rows take one step per observation token, and
      the first of these is a rebuild whenever the window slides (with a prefix longer than the
      window that is every step): the window's prefix part once per environment, then each row's
      own plan tokens in it, one transition per chunk. Every row's history is counted as distinct,
      so rebuilds are an upper bound (the planner runs beams that share a history once).

    A token at window position ``p`` costs, per layer, ``12 d^2`` (query/key/value ``3 d^2``,
    output projection ``d^2``, MLP ``8 d^2``) plus ``2 d k`` for the scores and the weighted sum
    over its ``k = p + 1 - (p + 1) // T`` visible keys (value-token keys are never attended); in
    the last layer only the token whose logits are read goes past its key and value (``2 d^2``);
    each read of logits adds ``d (N + 1)`` for the head. LayerNorm, GELU, softmax and embedding
    lookups are not multiply-adds of matrix products and are left out.
    """
    S, A, T = model.observation_dim, model.action_dim, model.transition_dim
    H, beam = planner.horizon, planner.beam_width
    candidates = beam * planner.n_expand
    window = planner.window_transitions
    max_window = None if window is None else window * T - 1
    prefix_length = context_transitions * T + S
    total = 0
    start: int | None = None  # window start held by the cache
    end = 0  # one past the last token fed

    def feed(rows: int, first: int, length: int, logits: bool) -> None:
        nonlocal total
        total += rows * _feed_multiply_adds(model, first, length, logits)

    def next_logits(length: int, rows: int) -> None:
        nonlocal start, end
        crop = _crop_start(length, max_window, T)
        if crop == start:
            feed(rows, end - crop, length - end, logits=True)
        else:  # rebuild: the prefix part once per environment, then each row's plan tokens
            start = crop
            shared_end = min(prefix_length, length)
            if crop < shared_end:
                feed(n_envs, 0, shared_end - crop, logits=shared_end == length)
            begin = max(crop, shared_end)
            cuts = [begin, *range((begin // T + 1) * T, length, T), length]
            for chunk_start, chunk_end in itertools.pairwise(cuts):
                if chunk_end > chunk_start:
                    feed(rows, chunk_start - crop, chunk_end - chunk_start, chunk_end == length)
        end = length

    length = prefix_length
    next_logits(length, n_envs)
    for t in range(H):
        for _ in range(A + 1):  # each action token, then the reward (for the value's logits)
            length += 1
            next_logits(length, n_envs * candidates)
        length += 1  # the value token: fed with the next observation's first call
        if t < H - 1:
            for _ in range(S + 1):  # logits of each observation token, then of the next action
                next_logits(length, n_envs * beam)
                length += 1
            length -= 1
    return total


def _compute_floor(
    model: Any,
    planner: PlannerConfig,
    n_envs: int,
    ms_per_decision: float,
    counted: int | None,
    context: int,
) -> dict[str, Any]:
    """The JSON fields that set a decision's time against its multiply-adds: the count of
    :func:`decision_multiply_adds`, the rate it gives at ``ms_per_decision``, and what the
    warm-up decision actually ran (``counted``, from torch's flop counter)."""
    multiply_adds = decision_multiply_adds(model, planner, n_envs, context)
    return {
        "multiply_adds_per_decision": multiply_adds,
        "achieved_gflops": round(2 * multiply_adds / (ms_per_decision / 1000.0) / 1e9, 2),
        "counted_multiply_adds_per_decision": counted,
    }


def _crop_start(length: int, max_window: int | None, transition_dim: int) -> int:
    """The planner's crop rule: the first token of the window, whole transitions dropped from the
    front so that at most ``max_window`` tokens remain (written out here so that the count is an
    independent check of the planner's schedule)."""
    if max_window is None or length <= max_window:
        return 0
    return -(-(length - max_window) // transition_dim) * transition_dim


def _feed_multiply_adds(model: Any, first: int, length: int, logits: bool) -> int:
    """Multiply-adds for one row of ``length`` tokens fed at window positions ``first, ...``
    (see :func:`decision_multiply_adds`)."""
    d, T = model.n_embd, model.transition_dim
    total = 0
    for p in range(first, first + length):
        keys = p + 1 - (p + 1) // T  # positions <= p that are not value tokens
        full = 12 * d * d + 2 * d * keys
        read = logits and p == first + length - 1
        total += (model.n_layer - 1) * full + (full if read else 2 * d * d)
    return total + (d * (model.vocab_size + 1) if logits else 0)


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
    settings = dict(horizon=horizon, beam_width=beam_width, n_expand=n_expand)
    cached = BeamPlanner(model, discretizer, PlannerConfig(**settings, use_cache=True))
    uncached = BeamPlanner(model, discretizer, PlannerConfig(**settings, use_cache=False))
    generator = torch.Generator(device).manual_seed(seed)
    first_plan, counted = count_multiply_adds(lambda: cached.plan(prefix, generator=generator))
    cached_plan = first_plan.tokens
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
        "cached_attention": attention_implementation(cached),
        **_compute_floor(model.config, cached.config, n_envs, cached_ms["mean"], counted, context),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
    }


WORKER = Path(__file__).with_name("bench_worker.py")
_RUN_WORKER = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


def compare_with_baseline(
    baseline: str,
    env: str = "halfcheetah",
    horizon: int = 5,
    beam_width: int = 32,
    n_expand: int = 2,
    context: int = 5,
    decisions: int = 1,
    rounds: int = 5,
    seed: int = 0,
    threads: int = 1,
    n_envs: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Time the cached planner of commit ``baseline`` side by side with the current one.

    ``baseline`` is a git ref of the checkout this ``ttrl`` is imported from; its ``src`` folder is
    exported (``git archive``) to a temporary folder. Each version plans in its own process
    (:mod:`ttrl.planning.bench_worker`) with ``threads`` torch threads, on inputs built by its own
    ``build_random_planner_inputs`` from ``seed``; after one untimed decision each, they take
    turns for ``rounds`` rounds of ``decisions`` decisions (which one goes first alternates), so
    that the machine's load falls on both alike. Decision ``i`` of the run is seeded ``seed + i``
    on both sides. Supported baselines: commits that have ``src/ttrl/planning/bench.py``;
    ``n_envs > 1`` needs one whose builder takes ``n_envs``.
    """
    for name, value in (("decisions", decisions), ("rounds", rounds), ("threads", threads)):
        if value < 1:
            raise TtrlError(f"--baseline needs {name} >= 1, got {value}")
    current_src = Path(__file__).resolve().parents[2]
    repo = Path(_git(current_src, "rev-parse", "--show-toplevel").strip())
    commit = _baseline_commit(repo, baseline)
    setup = dict(
        op="setup",
        env=env,
        horizon=horizon,
        beam_width=beam_width,
        n_expand=n_expand,
        context=context,
        seed=seed,
        n_envs=n_envs,
        device=device,
        threads=threads,
    )
    with tempfile.TemporaryDirectory(prefix="ttrl-baseline-") as folder:
        baseline_src = _export_src(repo, commit, Path(folder))
        with (
            _PlannerProcess("current", current_src, threads, folder) as current,
            _PlannerProcess(f"baseline {baseline}", baseline_src, threads, folder) as old,
        ):
            sides = (current, old)
            for side in sides:  # build both at once: nothing is timed yet
                side.send(setup)
            first = [side.receive() for side in sides]
            timings: list[list[dict]] = [[], []]
            for r in range(rounds):
                for i in (0, 1) if r % 2 == 0 else (1, 0):
                    sides[i].send(
                        dict(op="time", decisions=decisions, first_seed=seed + r * decisions)
                    )
                    timings[i].append(sides[i].receive())
    summary = [_summarise(rounds_of_side) for rounds_of_side in timings]
    ratios = [sum(a["wall_ms"]) / sum(b["wall_ms"]) for a, b in zip(*timings, strict=True)]
    mean_now, mean_then = summary[0]["mean"], summary[1]["mean"]
    floor_now, floor_then = (
        _compute_floor(
            SimpleNamespace(**side["model"]),
            PlannerConfig(
                horizon=horizon,
                beam_width=beam_width,
                n_expand=n_expand,
                window_transitions=side["window"],
            ),
            n_envs,
            summary_of_side["mean"],
            side["counted_multiply_adds"],
            context,
        )
        for side, summary_of_side in zip(first, summary, strict=True)
    )
    return {
        "benchmark": "plan",
        "env": env,
        "horizon": horizon,
        "beam_width": beam_width,
        "n_expand": n_expand,
        "context": context,
        "n_envs": n_envs,
        "window": first[0]["window"],
        "baseline_window": first[1]["window"],
        "decisions": decisions,
        "rounds": rounds,
        "baseline": baseline,
        "baseline_commit": commit,
        "current_commit": _git(repo, "rev-parse", "HEAD").strip(),
        "current_src_modified": bool(_git(repo, "status", "--porcelain", "--", "src").strip()),
        "cached_ms_per_decision": round(mean_now, 1),
        "cached_best_ms_per_decision": round(summary[0]["best"], 1),
        "cached_cpu_ms_per_decision": round(summary[0]["cpu"], 1),
        "baseline_ms_per_decision": round(mean_then, 1),
        "baseline_best_ms_per_decision": round(summary[1]["best"], 1),
        "baseline_cpu_ms_per_decision": round(summary[1]["cpu"], 1),
        "cached_round_ms": [round(ms, 1) for ms in summary[0]["rounds"]],
        "baseline_round_ms": [round(ms, 1) for ms in summary[1]["rounds"]],
        "current_over_baseline": round(mean_now / mean_then, 3),
        "current_over_baseline_median_round": round(statistics.median(ratios), 3),
        "times_fewer_ms_than_baseline": round(mean_then / mean_now, 3),
        "same_inputs_current_vs_baseline": first[0]["inputs_digest"] == first[1]["inputs_digest"],
        "same_first_actions_current_vs_baseline": (
            first[0]["first_action_tokens"] == first[1]["first_action_tokens"]
        ),
        "same_plan_current_vs_baseline": first[0]["plan_digest"] == first[1]["plan_digest"],
        "cached_attention": first[0].get("cached_attention", "torch"),
        "baseline_cached_attention": first[1].get("cached_attention", "torch"),
        **floor_now,
        "baseline_achieved_gflops": floor_then["achieved_gflops"],
        "baseline_counted_multiply_adds_per_decision": floor_then[
            "counted_multiply_adds_per_decision"
        ],
        "torch_threads": first[0]["torch_threads"],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "device": device if device == "cpu" else torch.cuda.get_device_name(torch.device(device)),
    }


def _summarise(rounds: list[dict]) -> dict[str, Any]:
    """Mean, fastest and per-round mean wall ms and mean CPU ms per decision of one side."""
    wall = [ms for timed in rounds for ms in timed["wall_ms"]]
    return {
        "mean": sum(wall) / len(wall),
        "best": min(wall),
        "cpu": sum(timed["cpu_ms"] for timed in rounds) / len(rounds),
        "rounds": [sum(timed["wall_ms"]) / len(timed["wall_ms"]) for timed in rounds],
    }


def _git(repo: Path, *args: str) -> str:
    """``git -C repo args`` 's output; a :class:`TtrlError` naming the command if it fails."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError as err:
        raise TtrlError("--baseline needs git on PATH") from err
    if result.returncode:
        raise TtrlError(
            f"git {' '.join(args)} failed in {repo}: {result.stderr.strip() or result.returncode}"
            f"; --baseline needs ttrl imported from a git checkout"
        )
    return result.stdout


def _baseline_commit(repo: Path, ref: str) -> str:
    """The commit ``ref`` names, checked to hold the planning benchmark."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except TtrlError:
        raise TtrlError(f"--baseline {ref!r} is not a commit of {repo}") from None
    try:
        _git(repo, "cat-file", "-e", f"{commit}:src/ttrl/planning/bench.py")
    except TtrlError:
        raise TtrlError(
            f"--baseline {ref!r} ({commit[:12]}) has no src/ttrl/planning/bench.py; compare with "
            f"a commit that has the planning benchmark"
        ) from None
    return commit


def _export_src(repo: Path, commit: str, folder: Path) -> Path:
    """Write ``commit``'s ``src`` folder under ``folder``; return its path."""
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", commit, "src"],
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        raise TtrlError(f"git archive {commit} src failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")
        else:  # Python without extraction filters; the archive is this repository's own
            tar.extractall(folder)
    return folder / "src"


class _PlannerProcess:
    """A :mod:`ttrl.planning.bench_worker` process planning with the ``ttrl`` under ``src``."""

    def __init__(self, name: str, src: Path, threads: int, cwd: str) -> None:
        self.name = name
        paths = [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
        environment = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(paths),
            TTRL_BENCH_SRC=str(src),
            OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads),
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RUN_WORKER, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=environment,
        )

    def __enter__(self) -> _PlannerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, request: dict) -> None:
        """Write one request line."""
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.receive()  # reports why the process ended

    def receive(self) -> dict:
        """The next reply; a :class:`TtrlError` if it is an error or the process ended."""
        for line in self.process.stdout:
            if not line.startswith(REPLY):
                sys.stderr.write(line)  # something the planner printed
                continue
            reply = json.loads(line[len(REPLY) :])
            if "error" in reply:
                raise TtrlError(f"{self.name} planner: {reply['error']}")
            return reply
        code = self.process.wait()
        raise TtrlError(f"{self.name} planner process ended (exit status {code}) without replying")

    def close(self) -> None:
        """Ask the process to quit; kill it if it does not within 10 s."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
