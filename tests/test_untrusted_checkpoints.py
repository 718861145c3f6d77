"""Checkpoints are untrusted input: loading one never runs code from it, at any entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ttrl.checkpoint import decode_bundle, encode_bundle, load_bundle, save_bundle
from ttrl.errors import TtrlError
from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig

REPO = Path(__file__).resolve().parents[1]

TINY = dict(
    observation_dim=2,
    action_dim=1,
    transition_dim=5,
    vocab_size=5,
    block_size=9,
    n_layer=1,
    n_head=1,
    n_embd=8,
)


class WritesMarker:
    """Unpickling this object writes a marker file: what a crafted checkpoint would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_bundle(path: Path, marker: Path) -> Path:
    """A torch pickle that looks like a ttrl bundle and runs a command when unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "ttrl-bundle", "model": WritesMarker(marker)}, path)
    return path


def test_the_crafted_file_really_runs_code_when_unpickled(tmp_path):
    # Guards the tests below: without weights_only the same file writes its marker.
    marker = tmp_path / "marker"
    file = crafted_bundle(tmp_path / "evil.pt", marker)
    torch.load(file, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "name", ["checkpoints/last.pt", "checkpoints/last.safetensors", "ttrl_model.safetensors"]
)
def test_load_bundle_refuses_a_crafted_pickle_without_running_it(tmp_path, name):
    marker = tmp_path / "marker"
    crafted_bundle(tmp_path / "run" / name, marker)
    with pytest.raises(TtrlError) as info:
        load_bundle(tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_a_crafted_hf_weights_file_is_refused(tmp_path):
    marker = tmp_path / "marker"
    hf = tmp_path / "hf"
    TrajectoryTransformer(TrajectoryTransformerConfig(**TINY)).save_pretrained(hf, hf_format=True)
    (hf / "model.safetensors").unlink()
    torch.save({"tok_emb.weight": WritesMarker(marker)}, hf / "pytorch_model.bin")
    with pytest.raises(TtrlError, match=r"pytorch_model\.bin"):
        TrajectoryTransformer.from_pretrained(hf)
    assert not marker.exists()


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
    )


@pytest.mark.parametrize(
    ("script", "layout", "args"),
    [
        ("scripts/plan.py", "checkpoints/last.pt", ["run_dir={dir}"]),
        (
            "scripts/plan.py",
            "ttrl_model.safetensors",
            ["checkpoint={dir}", "env=halfcheetah-random"],
        ),
        ("scripts/train.py", "checkpoints/last.pt", ["run_dir={dir}", "logger=disabled"]),
    ],
    ids=["plan-run_dir", "plan-checkpoint", "train-resume"],
)
def test_every_entry_point_refuses_a_crafted_checkpoint(
    tiny_dataset, tmp_path, script, layout, args
):
    marker = tmp_path / "marker"
    run = tmp_path / "shared_run"
    crafted_bundle(run / layout, marker)
    proc = run_script(script, *(a.format(dir=run) for a in args), "device=cpu")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "could run code" in lines[0] or "cannot read checkpoint" in lines[0]
    assert not marker.exists()


def test_bundles_hold_tensors_and_json_only(tmp_path):
    # Everything the trainer stores: int-keyed optimiser state, tuples, numpy RNG state, inf.
    bundle = {
        "format": "ttrl-bundle",
        "model": {"w": torch.randn(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)},
        "trainer": {
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1.0}]},
            "rng": [{"numpy": np.random.default_rng(0).bit_generator.state, "python": (3, (1, 2))}],
            "legacy_numpy": ("MT19937", np.arange(4, dtype=np.uint32), 1, 0, 0.0),
            "best_val_loss": float("inf"),
        },
    }
    file = tmp_path / "b.safetensors"
    file.write_bytes(encode_bundle(bundle))
    header = json.loads(file.read_bytes()[8 : 8 + int.from_bytes(file.read_bytes()[:8], "little")])
    assert set(header["__metadata__"]) == {"ttrl_tree"}  # no other place for anything to hide
    loaded = decode_bundle(file)
    assert torch.equal(loaded["model"]["w"], bundle["model"]["w"])
    assert loaded["model"]["b"].dtype == torch.bfloat16
    assert loaded["trainer"]["optimizer"]["state"][0]["step"].item() == 3.0
    assert loaded["trainer"]["rng"][0]["python"] == (3, (1, 2))
    legacy = loaded["trainer"]["legacy_numpy"]
    assert legacy[1].dtype == np.uint32 and legacy[1].tolist() == [0, 1, 2, 3]
    assert loaded["trainer"]["best_val_loss"] == float("inf")


def test_bundles_of_ttrl_0_1_still_load_through_the_safe_unpickler(tmp_path):
    # ttrl 0.1 wrote bundles with torch.save; their only non-tensor objects are numpy RNG states.
    old = {
        "format": "ttrl-bundle",
        "model": {"w": torch.ones(2)},
        "trainer": {"rng": [{"numpy": np.random.RandomState(0).get_state()}], "step": 7},
    }
    (tmp_path / "checkpoints").mkdir()
    torch.save(old, tmp_path / "checkpoints" / "last.pt")
    loaded = load_bundle(tmp_path)
    assert loaded["trainer"]["step"] == 7
    assert np.array_equal(
        loaded["trainer"]["rng"][0]["numpy"][1], old["trainer"]["rng"][0]["numpy"][1]
    )
    # the new format is preferred once it exists beside the old one
    save_bundle(tmp_path / "checkpoints" / "last.safetensors", model={"w": torch.zeros(2)})
    assert torch.equal(load_bundle(tmp_path)["model"]["w"], torch.zeros(2))


def test_a_truncated_bundle_is_one_line(tmp_path):
    file = save_bundle(tmp_path / "checkpoints" / "last.safetensors", model={"w": torch.ones(9)})
    file.write_bytes(file.read_bytes()[:-5])
    with pytest.raises(TtrlError, match="truncated") as info:
        load_bundle(tmp_path)
    assert "\n" not in str(info.value)
