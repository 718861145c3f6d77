"""Dataset names and loading: three ways to name the same data give identical arrays; bad input fails clearly."""

from __future__ import annotations

import json

import h5py
import minari
import numpy as np
import pytest

from ttrl.data import dataset_names, load_transitions, resolve_dataset
from ttrl.errors import TtrlError
from ttrl.making import write_minari_dataset

KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def d4rl_arrays_by_hand(minari_id: str) -> dict[str, np.ndarray]:
    """The D4RL view of a Minari dataset, step by step from its raw episodes."""
    columns: dict[str, list] = {key: [] for key in KEYS}
    for episode in minari.load_dataset(minari_id).iterate_episodes():
        for t in range(len(episode.rewards)):
            last = t == len(episode.rewards) - 1
            columns["observations"].append(episode.observations[t])
            columns["actions"].append(episode.actions[t])
            columns["rewards"].append(episode.rewards[t])
            columns["terminals"].append(bool(episode.terminations[t]))
            ended = episode.terminations[t] or episode.truncations[t]
            columns["timeouts"].append(bool(episode.truncations[t]) or (last and not ended))
    dtypes = {"terminals": bool, "timeouts": bool}
    return {
        key: np.array(value, dtype=dtypes.get(key, np.float32)) for key, value in columns.items()
    }


def write_hdf5(path, arrays: dict) -> None:
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)


@pytest.mark.parametrize("fixture", ["tiny_dataset", "tiny_hopper"])
def test_minari_id_d4rl_name_and_hdf5_file_load_identically(fixture, request, tmp_path):
    name = request.getfixturevalue(fixture)
    env = name.split("-")[0]
    by_name = load_transitions(name)
    by_id = load_transitions(f"ttrl/{env}/random-v0")
    by_hand = d4rl_arrays_by_hand(f"ttrl/{env}/random-v0")
    write_hdf5(tmp_path / f"{env}-random.hdf5", by_hand)
    by_file = load_transitions(tmp_path / f"{env}-random.hdf5")
    for key in KEYS:
        for loaded in (by_name, by_id, by_file):
            value = getattr(loaded, key)
            assert value.dtype == by_hand[key].dtype, key
            np.testing.assert_array_equal(value, by_hand[key], err_msg=key)
    assert by_name.n_episodes == len(minari.load_dataset(f"ttrl/{env}/random-v0"))
    assert (by_name.terminals | by_name.timeouts)[-1]


def test_resolve_d4rl_name(tiny_dataset):
    spec = resolve_dataset(tiny_dataset)
    assert (spec.env_id, spec.minari_id, spec.hdf5_path) == (
        "HalfCheetah-v5",
        "ttrl/halfcheetah/random-v0",
        None,
    )
    assert (spec.ref_min_score, spec.ref_max_score, spec.ref_source) == (
        -280.178953,
        12135.0,
        "D4RL",
    )
    assert spec.normalized_score(-280.178953) == 0.0
    np.testing.assert_allclose(spec.normalized_score(np.array([12135.0, 5927.41])), [100.0, 50.0])


def test_resolve_minari_id_reads_env_and_scores_from_metadata(tiny_dataset):
    spec = resolve_dataset("ttrl/halfcheetah/random-v0")
    assert spec.env_id == "HalfCheetah-v5"
    assert (spec.ref_min_score, spec.ref_max_score) == (-280.178953, 12135.0)
    assert spec.ref_source == "minari metadata"


def test_resolve_hdf5_infers_env_from_sizes_and_name(tmp_path, tiny_dataset):
    arrays = d4rl_arrays_by_hand("ttrl/halfcheetah/random-v0")
    write_hdf5(tmp_path / "halfcheetah_medium-v2.hdf5", arrays)
    write_hdf5(tmp_path / "data.hdf5", arrays)  # 17/6 dims fit halfcheetah and walker2d
    assert resolve_dataset(str(tmp_path / "halfcheetah_medium-v2.hdf5")).env_id == "HalfCheetah-v5"
    unknown = resolve_dataset(str(tmp_path / "data.hdf5"))
    assert unknown.env_id is None and unknown.ref_source == "none"
    with pytest.raises(TtrlError, match="no reference scores"):
        unknown.normalized_score(1.0)
    hopper_like = {
        **arrays,
        "observations": arrays["observations"][:, :11],
        "actions": arrays["actions"][:, :3],
    }
    write_hdf5(tmp_path / "data2.h5", hopper_like)
    assert resolve_dataset(str(tmp_path / "data2.h5")).env_id == "Hopper-v5"


def test_unknown_name_lists_the_valid_ones(minari_root):
    with pytest.raises(TtrlError) as err:
        resolve_dataset("halfcheetah-mediocre")
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in dataset_names())
    assert list(minari_root.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "official"),
    [
        ("hopper-medium", "mujoco/hopper/medium-v0"),
        ("walker2d-medium-replay", None),
        ("halfcheetah-random", None),
    ],
)
def test_missing_dataset_names_the_commands_without_downloading(minari_root, name, official):
    with pytest.raises(TtrlError) as err:
        load_transitions(name)
    message = str(err.value)
    assert "\n" not in message
    assert f"python scripts/make_dataset.py env={name}" in message
    assert (f"minari download {official}" in message) == (official is not None)
    assert list(minari_root.iterdir()) == []  # nothing was created or fetched


def test_sources_choose_between_ttrl_and_official(minari_root, tiny_dataset):
    assert resolve_dataset(tiny_dataset, source="ttrl").minari_id == "ttrl/halfcheetah/random-v0"
    with pytest.raises(TtrlError, match="publishes no"):
        resolve_dataset(tiny_dataset, source="official")
    with pytest.raises(TtrlError, match="source"):
        resolve_dataset(tiny_dataset, source="hub")
    with pytest.raises(TtrlError, match="minari download mujoco/hopper/expert-v0"):
        resolve_dataset("mujoco/hopper/expert-v0")


def test_official_dataset_is_used_when_ttrl_has_none(minari_root, tiny_dataset):
    from ttrl.data import load_minari

    episodes = list(minari.load_dataset("ttrl/halfcheetah/random-v0").iterate_episodes())
    write_minari_dataset("mujoco/halfcheetah/medium-v0", episodes, "HalfCheetah-v5", None, None)
    spec = resolve_dataset("halfcheetah-medium")
    assert spec.minari_id == "mujoco/halfcheetah/medium-v0" and spec.ref_source == "D4RL"
    # the official datasets carry no reference scores: a Minari id falls back to D4RL's for its env
    assert resolve_dataset("mujoco/halfcheetah/medium-v0").ref_max_score == 12135.0
    np.testing.assert_array_equal(
        load_transitions(spec).observations, load_minari("ttrl/halfcheetah/random-v0").observations
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.pop("timeouts"), "lacks the D4RL keys timeouts"),
        (lambda a: a.update(rewards=a["rewards"][:-3]), "different lengths"),
        (lambda a: a["rewards"].__setitem__(slice(5, 8), np.nan), "rewards holds 3 NaN/inf"),
        (lambda a: a["observations"].__setitem__((0, 0), np.inf), "observations holds 1 NaN/inf"),
        (lambda a: a.update(observations=a["observations"][:, 0]), r"expected \[steps, dim\]"),
    ],
)
def test_malformed_hdf5_is_rejected(tmp_path, change, match):
    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.normal(size=(50, 4)).astype(np.float32),
        "actions": rng.normal(size=(50, 2)).astype(np.float32),
        "rewards": rng.normal(size=50).astype(np.float32),
        "terminals": np.zeros(50, bool),
        "timeouts": np.zeros(50, bool),
    }
    change(arrays)
    write_hdf5(tmp_path / "bad.hdf5", arrays)
    with pytest.raises(TtrlError, match=match):
        load_transitions(str(tmp_path / "bad.hdf5"))


@pytest.mark.parametrize("key", ["terminals", "timeouts"])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.nan, r"holds 3 NaN values \(of 50\); each step needs 0 or 1"),
        (0.5, r"holds 3 values other than 0 and 1 \(the first is 0\.5 at step 10\)"),
        (2, r"holds 3 values other than 0 and 1 \(the first is 2(\.0)? at step 10\)"),
    ],
)
def test_flags_that_are_not_0_or_1_name_the_field_and_the_file(tmp_path, key, bad, match):
    """astype(bool) would read NaN flags as 50 one-step episodes; the message names them instead."""
    rng = np.random.default_rng(0)
    flags = np.zeros(50, dtype=np.float32 if isinstance(bad, float) else np.int64)
    flags[[10, 20, 30]] = bad
    arrays = {
        "observations": rng.normal(size=(50, 4)).astype(np.float32),
        "actions": rng.normal(size=(50, 2)).astype(np.float32),
        "rewards": rng.normal(size=50).astype(np.float32),
        "terminals": np.zeros(50, np.float32),
        "timeouts": np.zeros(50, np.float32),
        key: flags,
    }
    write_hdf5(tmp_path / "flags.hdf5", arrays)
    with pytest.raises(TtrlError, match=match) as err:
        load_transitions(str(tmp_path / "flags.hdf5"))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'flags.hdf5'}: {key} holds 3 ") and "\n" not in message


def test_float_flags_of_0_and_1_still_load(tmp_path):
    arrays = {
        "observations": np.zeros((6, 4), np.float32),
        "actions": np.zeros((6, 2), np.float32),
        "rewards": np.zeros(6, np.float32),
        "terminals": np.array([0, 0, 1, 0, 0, 0], np.float32),
        "timeouts": np.array([0, 0, 0, 0, 0, 1], np.float64),
    }
    write_hdf5(tmp_path / "ok.hdf5", arrays)
    loaded = load_transitions(str(tmp_path / "ok.hdf5"))
    assert loaded.terminals.dtype == bool and loaded.n_episodes == 2


def test_nan_flags_in_a_minari_dataset_name_the_field_and_the_folder(minari_root):
    rng = np.random.default_rng(0)
    episodes = [
        {
            "observations": rng.normal(size=(n + 1, 11)),
            "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
            "rewards": rng.normal(size=n),
            "terminations": np.where(np.arange(n) == n - 1, 1.0, 0.0),
            "truncations": np.zeros(n),
        }
        for n in (5, 4)
    ]
    episodes[1]["terminations"][1] = np.nan
    write_minari_dataset("test/hopper/nan-v0", episodes, "Hopper-v5", None, None)
    with pytest.raises(TtrlError) as err:
        load_transitions("test/hopper/nan-v0")
    assert str(err.value) == (
        f"Minari dataset test/hopper/nan-v0 ({minari_root / 'test/hopper/nan-v0'}): terminations "
        f"holds 1 NaN value (of 9); each step needs 0 or 1, so fix or recreate that field"
    )


def test_unreadable_or_missing_hdf5(tmp_path):
    (tmp_path / "junk.hdf5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(TtrlError, match="cannot read"):
        load_transitions(str(tmp_path / "junk.hdf5"))
    with pytest.raises(TtrlError, match="does not exist"):
        load_transitions(str(tmp_path / "absent.hdf5"))


def test_nan_in_a_minari_dataset_is_named(minari_root, tiny_dataset):
    episodes = list(minari.load_dataset("ttrl/halfcheetah/random-v0").iterate_episodes())
    episodes[1].observations[3:5, 2] = np.nan
    write_minari_dataset("test/halfcheetah/nan-v0", episodes, "HalfCheetah-v5", None, None)
    with pytest.raises(TtrlError, match="observations holds 2 NaN/inf"):
        load_transitions("test/halfcheetah/nan-v0")


def test_damaged_minari_metadata_is_reported(minari_root, tiny_dataset):
    metadata = minari_root / "ttrl/halfcheetah/random-v0/data/metadata.json"
    json.loads(metadata.read_text())
    metadata.write_text("{ truncated")
    with pytest.raises(TtrlError, match="damaged"):
        resolve_dataset("ttrl/halfcheetah/random-v0")


def test_write_d4rl_hdf5_round_trips(tmp_path, tiny_hopper):
    from ttrl.data import write_d4rl_hdf5

    loaded = load_transitions(tiny_hopper)
    path = write_d4rl_hdf5(tmp_path / "hopper.hdf5", loaded)
    with h5py.File(path, "r") as file:
        assert sorted(file.keys()) == sorted(KEYS)
    again = load_transitions(path)
    for key in KEYS:
        np.testing.assert_array_equal(getattr(again, key), getattr(loaded, key))
    assert resolve_dataset(path).env_id == "Hopper-v5"
