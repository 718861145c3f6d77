"""The training benchmark prints one JSON line, times the transformers port beside ttrl, and profiles."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ttrl.errors import TtrlError
from ttrl.model.bench import benchmark_training

BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def run_bench_script(argv: list[str], capsys) -> dict:
    spec = importlib.util.spec_from_file_location("bench_script", BENCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_train_benchmark_prints_tokens_per_second_and_the_ratio_to_the_port(capsys):
    pytest.importorskip("transformers")
    argv = ["train", "--env", "hopper", "--batch-size", "2", "--steps", "2", "--warmup", "1"]
    result = run_bench_script([*argv, "--threads", "1", "--breakdown"], capsys)
    assert result["bench"] == "train" and result["env"] == "hopper"
    assert result["seq_len"] == 10 * (11 + 3 + 2) - 1  # the paper's block of 10 transitions
    tokens_per_step = 2 * result["seq_len"]
    assert result["tokens_per_s"] == pytest.approx(
        tokens_per_step / (result["ms_per_step"] / 1000), rel=0.01
    )
    assert result["ttrl_over_hf"] == pytest.approx(
        result["hf_ms_per_step"] / result["ms_per_step"], rel=0.01
    )
    for prefix in ("", "hf_"):
        kinds = result[f"{prefix}profiled_ms_per_step_by_kind"]
        assert set(kinds) == {"matmul", "dropout_masks", "softmax", "other"}
        assert kinds["matmul"] > 0 and kinds["dropout_masks"] > 0  # the paper's model has dropout


def test_train_benchmark_rejects_bad_sizes_and_gpu_breakdown():
    with pytest.raises(TtrlError, match="unknown env 'ant'"):
        benchmark_training(env="ant")
    with pytest.raises(TtrlError, match="at least 1"):
        benchmark_training(env="hopper", batch_size=0)
    with pytest.raises(TtrlError, match="CPU ops only"):
        benchmark_training(env="hopper", device="cuda", breakdown=True)
