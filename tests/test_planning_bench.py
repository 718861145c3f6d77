"""The planning benchmark prints one JSON line and checks the cached planner against the uncached
(or against another commit's); its multiply-add count is checked by hand and against torch's."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

from ttrl.errors import TtrlError
from ttrl.model import TrajectoryTransformerConfig
from ttrl.planning import BeamPlanner, PlannerConfig
from ttrl.planning.bench import (
    benchmark_planner,
    build_random_planner_inputs,
    compare_with_baseline,
    decision_multiply_adds,
)
from ttrl.planning.bench_worker import count_multiply_adds

BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def load_bench_script():
    spec = importlib.util.spec_from_file_location("bench_script", BENCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_benchmark_prints_one_json_line(capsys):
    bench = load_bench_script()
    bench.main(
        [
            "plan",
            "--env",
            "hopper",
            "--horizon",
            "2",
            "--beam-width",
            "2",
            "--n-expand",
            "2",
            "--context",
            "1",
            "--decisions",
            "1",
            "--uncached-decisions",
            "1",
            "--threads",
            "1",
            "--n-envs",
            "3",
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["benchmark"] == "plan" and result["env"] == "hopper"
    assert result["n_envs"] == 3 and result["device"] == "cpu"
    assert result["same_plan_cached_vs_uncached"] is True  # all three environments' plans
    assert result["cached_ms_per_decision"] > 0 and result["uncached_ms_per_decision"] > 0
    assert result["speedup"] == pytest.approx(
        result["uncached_ms_per_decision"] / result["cached_ms_per_decision"], rel=0.05
    )
    assert result["multiply_adds_per_decision"] > 0
    assert result["counted_multiply_adds_per_decision"] > 0
    assert result["achieved_gflops"] == pytest.approx(
        2 * result["multiply_adds_per_decision"] / result["cached_ms_per_decision"] / 1e6,
        rel=0.05,
    )


def test_plan_benchmark_rejects_unknown_env():
    with pytest.raises(TtrlError, match="unknown env 'ant'"):
        benchmark_planner(env="ant")


def test_multiply_adds_of_a_tiny_decision_by_hand():
    # T = 4 (s a r V), window 2 transitions = 7 tokens, prefix 1 transition + s = 5 tokens; d = 4,
    # 2 layers, 3 bins (4 logits). A token at window position p with k = p + 1 - (p + 1) // 4
    # visible keys costs 12*16 + 2*4*k = 192 + 8k per layer; in the last layer a token whose logits
    # are not read costs its key and value only, 2*16 = 32; reading logits costs 4*4 = 16.
    model = TrajectoryTransformerConfig(
        vocab_size=3,
        observation_dim=1,
        action_dim=1,
        transition_dim=4,
        block_size=7,
        n_layer=2,
        n_head=1,
        n_embd=4,
    )
    planner = PlannerConfig(horizon=2, beam_width=1, n_expand=2, window_transitions=2)

    def token(k: int) -> int:  # both layers, logits read
        return 2 * (192 + 8 * k) + 16

    # the prefix s a r V s (window positions 0-4, k = 1 2 3 3 4), logits of its last token
    prefix = 5 * 192 + 8 * (1 + 2 + 3 + 3 + 4) + 4 * 32 + (192 + 8 * 4) + 16
    # step 0: 2 candidates feed a_0 (position 5, k=5), then r_0 (position 6, k=6)
    step_0 = 2 * token(5) + 2 * token(6)
    # 8 tokens: the window slides to start at token 4 (s of the prefix): rebuild with the shared
    # part (s, window position 0, no logits), then the beam's a_0 r_0 V_0 (positions 1-3)
    rebuild = (192 + 8 * 1 + 32) + (3 * 192 + 8 * (2 + 3 + 3) + 2 * 32 + (192 + 8 * 3) + 16)
    # s_1 at position 4 (k=4) gives the logits of a_1; step 1: 2 candidates feed a_1 and r_1
    step_1 = token(4) + 2 * token(5) + 2 * token(6)
    by_hand = prefix + step_0 + rebuild + step_1
    assert by_hand == 6968
    assert decision_multiply_adds(model, planner, context_transitions=1) == by_hand
    assert decision_multiply_adds(model, planner, n_envs=3, context_transitions=1) == 3 * by_hand


def test_multiply_adds_are_what_the_planner_runs():
    """With one beam (no shared histories to skip) the count is what torch's flop counter sees the
    cached planner run, up to the products the decoder pads (masked scores in multi-token chunks,
    queries of the last layer's key-only tokens). If the planner's schedule changes (fewer
    rebuilds, say), update :func:`decision_multiply_adds` with it."""
    torch.manual_seed(0)
    model, discretizer, prefix = build_random_planner_inputs("hopper", context=2, n_envs=2)
    for window in (3, None):
        config = PlannerConfig(horizon=3, beam_width=1, n_expand=3, window_transitions=window)
        planner = BeamPlanner(model, discretizer, config)
        generator = torch.Generator().manual_seed(0)
        _, counted = count_multiply_adds(functools.partial(planner.plan, prefix, generator))
        expected = decision_multiply_adds(model.config, config, n_envs=2, context_transitions=2)
        assert 0.95 * expected <= counted <= 1.15 * expected, (window, counted, expected)


def _in_git_checkout() -> bool:
    result = subprocess.run(
        ["git", "-C", str(BENCH_SCRIPT.parent), "rev-parse", "HEAD"],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


needs_git = pytest.mark.skipif(not _in_git_checkout(), reason="--baseline needs a git checkout")


@needs_git
def test_plan_benchmark_against_a_baseline_commit(capsys):
    """``--baseline HEAD`` plans in two processes (the working tree's ttrl and HEAD's) in turns."""
    bench = load_bench_script()
    bench.main(
        [
            "plan",
            "--env",
            "hopper",
            "--horizon",
            "2",
            "--beam-width",
            "2",
            "--context",
            "1",
            "--decisions",
            "1",
            "--rounds",
            "2",
            "--baseline",
            "HEAD",
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["baseline"] == "HEAD" and len(result["baseline_commit"]) == 40
    assert result["torch_threads"] == 1  # one thread per process unless --threads says otherwise
    assert result["cached_ms_per_decision"] > 0 and result["baseline_ms_per_decision"] > 0
    assert len(result["cached_round_ms"]) == len(result["baseline_round_ms"]) == 2
    assert result["current_over_baseline"] == pytest.approx(
        result["cached_ms_per_decision"] / result["baseline_ms_per_decision"], rel=0.05
    )
    assert result["times_fewer_ms_than_baseline"] == pytest.approx(
        1 / result["current_over_baseline"], rel=0.05
    )
    assert result["same_inputs_current_vs_baseline"] is True  # both built from seed 0
    assert isinstance(result["same_first_actions_current_vs_baseline"], bool)
    assert result["baseline_counted_multiply_adds_per_decision"] > 0
    assert result["achieved_gflops"] > 0 and result["baseline_achieved_gflops"] > 0


@needs_git
def test_baseline_must_be_a_commit_with_the_benchmark():
    with pytest.raises(TtrlError, match="is not a commit"):
        compare_with_baseline("no-such-ref-anywhere")
    first = subprocess.run(
        ["git", "-C", str(BENCH_SCRIPT.parent), "rev-list", "--max-parents=0", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    with pytest.raises(TtrlError, match=r"has no src/ttrl/planning/bench\.py"):
        compare_with_baseline(first)


def test_baseline_times_cached_planners_only():
    bench = load_bench_script()
    args = bench_args(bench, ["plan", "--baseline", "HEAD", "--uncached-decisions", "1"])
    with pytest.raises(TtrlError, match="cached planners only"):
        args.run(args)


def bench_args(bench, argv: list[str]):
    """The parsed arguments of ``scripts/bench.py argv`` (without running the command)."""
    import argparse

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command", required=True)
    bench.add_train_command(subparsers)
    bench.add_plan_command(subparsers)
    return parser.parse_args(argv)
