"""The planning benchmark prints one JSON line and checks the cached planner against the uncached."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ttrl.errors import TtrlError
from ttrl.planning.bench import benchmark_planner

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


def test_plan_benchmark_rejects_unknown_env():
    with pytest.raises(TtrlError, match="unknown env 'ant'"):
        benchmark_planner(env="ant")
