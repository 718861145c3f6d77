"""The Hydra configs compose for every group option and are checked against ttrl.config's schemas."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from ttrl.config import CONFIG_DIR, compose_config, compose_error_message, validate_train_config
from ttrl.errors import TtrlError
from ttrl.planning.config import PlannerConfig

REPO = Path(__file__).resolve().parents[1]
# the D4RL locomotion datasets' files; the PointMaze ones (goal reaching) are tested with goal
# training (tests/test_goal_training.py), the AntMaze ones in tests/test_antmaze.py
ENV_FILES = sorted(
    p.stem
    for p in (CONFIG_DIR / "env").glob("*.yaml")
    if not p.stem.startswith(("pointmaze-", "antmaze-"))
)

# The paper's per-dataset settings (Janner et al. 2021, appendix / released code), written out
# independently of the YAML files: planner changes from the defaults and n_epochs_ref.
PAPER_PLANNER = {
    "halfcheetah-medium": {"horizon": 5, "beam_width": 32},
    "halfcheetah-medium-replay": {"horizon": 5, "beam_width": 32},
    "halfcheetah-medium-expert": {"beam_width": 32},
    "walker2d-medium-expert": {"horizon": 5},
    "walker2d-medium-replay": {"horizon": 20, "beam_width": 32, "k_act": 40, "cdf_act": None},
}
PAPER_EPOCHS_80 = {"hopper-medium-replay", "walker2d-medium-replay"}


def test_one_env_file_per_d4rl_dataset():
    expected = {
        f"{env}-{level}"
        for env in ("halfcheetah", "hopper", "walker2d")
        for level in ("random", "medium", "medium-replay", "medium-expert", "expert")
    }
    assert set(ENV_FILES) == expected


@pytest.mark.parametrize("name", ENV_FILES)
def test_env_file_holds_the_papers_settings(name):
    cfg = compose_config(overrides=[f"env={name}"])
    validate_train_config(cfg)
    assert cfg.env.name == name
    assert cfg.env.n_epochs_ref == (80 if name in PAPER_EPOCHS_80 else 50)
    expected = dataclasses.asdict(PlannerConfig())  # the planner's own defaults ...
    expected.update(PAPER_PLANNER.get(name, {}))  # ... with the paper's changes for this dataset
    assert OmegaConf.to_container(cfg.planner) == expected


def test_command_line_beats_env_planner_settings():
    cfg = compose_config(overrides=["env=halfcheetah-medium", "planner.horizon=9"])
    assert cfg.planner.horizon == 9 and cfg.planner.beam_width == 32


@pytest.mark.parametrize(
    "override",
    [
        "discretizer=quantile",
        "discretizer=uniform",
        "logger=offline",
        "logger=online",
        "logger=disabled",
        "model=default",
        "model=tiny",
        "trainer=default",
        "planner=default",
    ],
)
def test_every_group_option_composes_and_validates(override):
    cfg = compose_config(overrides=[override])
    validate_train_config(cfg)
    group, option = override.split("=")
    if group == "discretizer":
        assert cfg.discretizer.kind == option and cfg.discretizer.n_bins == 100
    if group == "logger":
        assert cfg.logger.mode == option and cfg.logger.project == "ttrl"


def test_paper_defaults():
    cfg = compose_config()
    assert cfg.env.name == "halfcheetah-medium"
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (4, 4, 128)
    assert (cfg.model.action_weight, cfg.model.reward_weight, cfg.model.value_weight) == (5, 1, 1)
    assert cfg.trainer.batch_size == 256 and cfg.trainer.learning_rate == pytest.approx(6e-4)
    assert list(cfg.trainer.betas) == [0.9, 0.95] and cfg.trainer.weight_decay == 0.1
    assert cfg.data.discount == 0.99 and cfg.data.termination_penalty == -100
    assert cfg.data.sequence_length == 10 and cfg.data.max_path_length == 1000
    assert cfg.logger.mode == "offline"


def test_run_dir_pins_hydra_run_dir():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose("train", overrides=["env=hopper-medium"], return_hydra_config=True)
        pinned = compose("train", overrides=["run_dir=/tmp/x"], return_hydra_config=True)
        assert default.hydra.run.dir.startswith("outputs/train/hopper-medium/")
        # one sweep dir for a multirun over datasets (job subdirs: tests/test_sweep.py)
        assert default.hydra.sweep.dir.startswith("multirun/train/20")
        assert pinned.hydra.run.dir == "/tmp/x"
        for name, slug in [
            ("mujoco/hopper/medium-v0", "mujoco-hopper-medium-v0"),
            ("/data/d4rl/hopper_medium-v2.hdf5", "hopper_medium-v2"),
        ]:
            other = compose("train", overrides=[f"env.name={name}"], return_hydra_config=True)
            assert other.hydra.run.dir.startswith(f"outputs/train/{slug}/")


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("trainer.bacth_size=3", ["bacth_size", "TrainerConfig"]),
        ("model.n_layer=1.5", ["model.n_layer", "Integer"]),
        ("env=halfcheetah-medum", ["env/halfcheetah-medum"]),
    ],
)
def test_typos_and_wrong_types_fail_with_one_clear_line(override, words):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(overrides=[override])
    message = compose_error_message(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_typo_in_a_yaml_file_fails_against_the_schema(tmp_path):
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "trainer" / "default.yaml").write_text("batch_size: 8\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(config_dir=configs)
    assert "learning_rat" in compose_error_message(info.value)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("device=gpu", "device='gpu'"),
        ("discretizer.kind=kmeans", "discretizer.kind='kmeans'"),
        ("logger.mode=online2", "logger.mode='online2'"),
        ("trainer.batch_size=0", "trainer.batch_size=0"),
        ("data.val_fraction=1.0", "data.val_fraction=1.0"),
        ("trainer.betas=[0.9]", "trainer.betas=[0.9]"),
        ("trainer.decay_epochs=0.5", "trainer.decay_epochs=0.5"),
        ("trainer.max_steps=-1", "trainer.max_steps=-1"),
        ("planner.objective=reward", "objective='reward'"),
    ],
)
def test_bad_values_raise_ttrl_error(override, words):
    with pytest.raises(TtrlError) as info:
        validate_train_config(compose_config(overrides=[override]))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_train_script_prints_one_error_line_for_a_typo():
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "trainer.bacth_size=3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bacth_size" in lines[0]
