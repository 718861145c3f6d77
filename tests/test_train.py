"""End-to-end training on tiny local datasets: checkpoints, exact resume, stop signals, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ttrl.checkpoint import load_bundle, save_bundle
from ttrl.config import compose_config
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.model import TrajectoryTransformer
from ttrl.training import train
from ttrl.training.logger import read_metrics
from ttrl.training.metrics import TOKEN_TYPES, evaluate, target_token_types

REPO = Path(__file__).resolve().parents[1]
# A tiny model and budget: a few seconds on one CPU core.
TINY = [
    "model=tiny",
    "logger=disabled",
    "device=cpu",
    "trainer.batch_size=8",
    "trainer.log_interval=2",
    "trainer.eval_interval=4",
    "trainer.val_batches=2",
    "trainer.progress=false",
    "data.val_fraction=0.25",
]


def tiny_cfg(dataset: str, *overrides: str):
    return compose_config(overrides=[*TINY, f"env.name={dataset}", *overrides])


def test_train_writes_bundles_that_rebuild_model_and_discretizer(tiny_dataset, tmp_path):
    metrics = train(tiny_cfg(tiny_dataset, "trainer.max_steps=6"), tmp_path)
    assert metrics["step"] == 6 and metrics["signal"] is None
    assert np.isfinite(metrics["val/loss"]) and metrics["best_val_loss"] <= metrics["val/loss"]
    for name in TOKEN_TYPES:
        assert 0.0 <= metrics[f"val/{name}_accuracy"] <= 1.0
    assert metrics["perf/tokens_per_s"] > 0 and np.isfinite(metrics["train/loss"])
    # the 6th step is still warming up over one epoch: lr = 6e-4 * 6 / (steps per epoch)
    warmup_steps = round(6 / metrics["train/epoch"])
    assert metrics["train/lr"] == pytest.approx(6e-4 * 6 / warmup_steps)
    for which in ("last", "best"):
        bundle = load_bundle(tmp_path, which=which)
        assert bundle["config"]["env"]["name"] == tiny_dataset
        assert bundle["model_config"]["block_size"] == 10 * 25 - 1
        model = TrajectoryTransformer.from_pretrained(tmp_path, which=which)
        assert (model.observation_dim, model.action_dim) == (17, 6)
        discretizer = Discretizer.from_state_dict(bundle["discretizer"])
        assert discretizer.n_bins == 100 and discretizer.transition_dim == 25
    last = load_bundle(tmp_path)
    assert last["trainer"]["step"] == 6
    model = TrajectoryTransformer.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, last["model"][key], rtol=0, atol=0)
    # every logged metric is in the run dir too (W&B is disabled here), and drawn
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6]
    assert [r["step"] for r in records if "val/loss" in r] == [4, 6]
    assert records[-1]["val/loss"] == metrics["val/loss"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_script_end_to_end(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/train.py",
            *TINY,
            "env=halfcheetah-random",
            "trainer.max_steps=4",
            f"run_dir={run_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert load_bundle(run_dir, which="best")["trainer"]["step"] == 4
    assert TrajectoryTransformer.from_pretrained(run_dir).block_size == 249


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_bundle(run_dir)["model"]


def logged_losses(run_dir: Path) -> list[tuple[int, str, float]]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return [
        (r["step"], key, value)
        for r in records
        for key, value in r.items()
        if key.startswith(("train/loss", "val/"))
    ]


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, "trainer.max_steps=10", "trainer.save_interval=1000")
    whole = train(cfg, tmp_path / "whole")

    def sigterm_at_step_5(step: int) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train(cfg, tmp_path / "split", on_step=sigterm_at_step_5)
    assert first["signal"] == signal.SIGTERM and first["step"] == 5
    assert load_bundle(tmp_path / "split")["trainer"]["step"] == 5
    # as if the process had logged past its checkpoint and died mid-line: the resumed run drops both
    with (tmp_path / "split" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "train/loss": 99.0}\n{"step": 7, "train/lo')
    second = train(cfg, tmp_path / "split")
    assert second["step"] == 10 and second["signal"] is None
    assert logged_losses(tmp_path / "split") == logged_losses(tmp_path / "whole")

    expected, resumed = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert expected.keys() == resumed.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, msg=key)
    assert second["val/loss"] == whole["val/loss"]
    assert second["best_val_loss"] == whole["best_val_loss"]
    # and training did change the weights (dropout and sampling really ran)
    start = train(tiny_cfg(tiny_dataset, "trainer.max_steps=0"), tmp_path / "start")
    assert start["step"] == 0
    assert not torch.equal(weights(tmp_path / "start")["head.weight"], expected["head.weight"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signals_end_the_step_and_save(tiny_dataset, tmp_path, signum):
    cfg = tiny_cfg(tiny_dataset, "trainer.max_steps=50", "trainer.save_interval=1000")
    before = signal.getsignal(signum)
    metrics = train(cfg, tmp_path, on_step=lambda step: step == 3 and os.kill(os.getpid(), signum))
    assert metrics["signal"] == signum and metrics["step"] == 3
    assert load_bundle(tmp_path)["trainer"]["step"] == 3
    assert signal.getsignal(signum) is before  # the handler is put back afterwards


def test_time_limit_stops_early_and_saves(tiny_dataset, tmp_path):
    metrics = train(
        tiny_cfg(tiny_dataset, "trainer.max_minutes=0", "trainer.max_steps=50"), tmp_path
    )
    assert metrics["signal"] is None and metrics["step"] == 1 and "val/loss" in metrics
    assert load_bundle(tmp_path)["trainer"]["step"] == 1


def test_sigterm_saves_and_exits_with_143(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.safetensors"
    process = subprocess.Popen(
        [
            sys.executable,
            "scripts/train.py",
            *TINY,
            "env=halfcheetah-random",
            "trainer.max_steps=1000000",
            "trainer.save_interval=1",
            f"run_dir={run_dir}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.is_file(), "training never saved a checkpoint"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "received SIGTERM" in output and "to resume" in output
    step = load_bundle(run_dir)["trainer"]["step"]
    assert 1 <= step < 1000000


def test_resuming_on_data_with_other_dims_is_refused(tiny_dataset, tiny_hopper, tmp_path):
    train(tiny_cfg(tiny_dataset, "trainer.max_steps=1"), tmp_path)
    with pytest.raises(TtrlError, match="cannot resume") as info:
        train(tiny_cfg(tiny_hopper, "trainer.max_steps=2"), tmp_path)
    assert "env.name 'halfcheetah-random' -> 'hopper-random'" in str(info.value)
    # a bundle without its config (e.g. written by hand) is still checked by its dims
    bundle = load_bundle(tmp_path)
    del bundle["config"]
    save_bundle(tmp_path / "checkpoints" / "last.safetensors", **bundle)
    with pytest.raises(TtrlError, match="does not fit this dataset") as info:
        train(tiny_cfg(tiny_hopper, "trainer.max_steps=2"), tmp_path)
    assert "observation_dim 17 vs 11" in str(info.value)


def test_block_size_too_small_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(TtrlError, match=r"block_size=100 is too small .* \(needs 249\)"):
        train(tiny_cfg(tiny_dataset, "model.block_size=100"), tmp_path)


@pytest.mark.filterwarnings("ignore:quantile discretizer")  # constant dims: all bins collapse
def test_dataset_without_a_window_is_refused(tmp_path):
    from ttrl.data import make_transitions, write_d4rl_hdf5

    n = 6  # every episode is a single step: no window of two transitions fits
    path = write_d4rl_hdf5(
        tmp_path / "one-step.hdf5",
        make_transitions(
            observations=np.zeros((n, 3)),
            actions=np.zeros((n, 1)),
            rewards=np.arange(n, dtype=float),
            terminals=np.ones(n, dtype=bool),
            timeouts=np.zeros(n, dtype=bool),
        ),
    )
    with pytest.raises(TtrlError, match="window"):
        train(tiny_cfg(str(path), "trainer.max_steps=1"), tmp_path / "run")


def test_under_torchrun_run_dir_must_be_given(monkeypatch):
    from ttrl.training import run_dir_from_hydra

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TtrlError, match="run_dir="):
        run_dir_from_hydra(compose_config())


def test_validation_metrics_by_token_type_match_a_direct_computation():
    # positions of targets: the target at p is transition dim (p + 1) mod T
    types = target_token_types(11, observation_dim=2, action_dim=1)
    assert types.tolist() == [0, 1, 2, 3, 0, 0, 1, 2, 3, 0, 0]

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x, targets, attention_mask):
            from ttrl.model import TrajectoryTransformerOutput

            return TrajectoryTransformerOutput(loss=torch.tensor(1.5), logits=self.logits)

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 11, 6, generator=generator)
    y = torch.randint(0, 6, (3, 11), generator=generator)
    mask = (torch.rand(3, 11, generator=generator) > 0.3).float()
    metrics = evaluate(Fixed(logits), [(y, y, mask)], observation_dim=2, action_dim=1)
    assert metrics["val/loss"] == 1.5
    for k, name in enumerate(TOKEN_TYPES):
        ce, hits, count = 0.0, 0.0, 0.0
        for b in range(3):
            for p in range(11):
                if types[p] == k and mask[b, p] > 0:
                    ce -= torch.log_softmax(logits[b, p], -1)[y[b, p]].item()
                    hits += float(logits[b, p].argmax() == y[b, p])
                    count += 1
        assert metrics[f"val/{name}_loss"] == pytest.approx(ce / count, rel=1e-5)
        assert metrics[f"val/{name}_accuracy"] == pytest.approx(hits / count)


def test_wandb_group_ignores_the_seed_and_the_run_dir():
    from omegaconf import OmegaConf

    from ttrl.training.logger import config_group

    def group(*overrides):
        return config_group(OmegaConf.to_container(compose_config(overrides=list(overrides))))

    assert group("seed=1", "run_dir=/a") == group("seed=2", "logger=disabled")
    assert group().startswith("halfcheetah-medium-")
    assert group("trainer.learning_rate=1e-3") != group()
    assert group("env.name=mujoco/hopper/medium-v0").startswith("mujoco-hopper-medium-v0-")


@pytest.mark.slow
def test_offline_wandb_run_resumes_the_same_run(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = tiny_cfg(tiny_dataset, "logger=offline", "trainer.max_steps=2")
    train(cfg, tmp_path)
    run_id = load_bundle(tmp_path)["trainer"]["wandb_run_id"]
    assert run_id
    train(tiny_cfg(tiny_dataset, "logger=offline", "trainer.max_steps=4"), tmp_path)
    assert load_bundle(tmp_path)["trainer"]["wandb_run_id"] == run_id
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(run_id in r.name for r in runs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_with_bf16_and_fused_adamw_resumes_and_saves_cpu_weights(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, "device=cuda", "trainer.max_steps=6")
    first = train(tiny_cfg(tiny_dataset, "device=cuda", "trainer.max_steps=3"), tmp_path)
    assert first["step"] == 3
    metrics = train(cfg, tmp_path)  # resumes on the GPU from a CPU-stored bundle
    assert metrics["step"] == 6 and np.isfinite(metrics["val/loss"])
    bundle = load_bundle(tmp_path)
    assert all(v.device.type == "cpu" for v in bundle["model"].values())
    model = TrajectoryTransformer.from_pretrained(tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())
