"""Rendering observed and predicted trajectories (ttrl.prediction.render)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ttrl.errors import TtrlError
from ttrl.evaluation.video import prefer_headless_rendering
from ttrl.prediction.render import (
    integrate_x,
    observation_to_state,
    render_trajectory,
    save_comparison,
)


def _make(env_id: str, **kwargs):
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HalfCheetah's XML warns about a deprecated attribute
        return gym.make(env_id, **kwargs)


def _rollout(env_id: str, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations ``[steps + 1, S]`` and true root x positions of a random-action episode."""
    env = _make(env_id)
    observation, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, xs = [observation], [env.unwrapped.data.qpos[0]]
    for _ in range(steps):
        observation, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        observations.append(observation)
        xs.append(env.unwrapped.data.qpos[0])
    env.close()
    return np.array(observations), np.array(xs)


def _render_or_skip() -> None:
    prefer_headless_rendering()
    try:
        env = _make("Hopper-v5", render_mode="rgb_array", width=32, height=32)
        env.reset(seed=0)
        env.render()
        env.close()
    except Exception as err:  # no EGL/OSMesa that MuJoCo can use
        pytest.skip(f"MuJoCo cannot render offscreen here (MUJOCO_GL=egl/osmesa): {err}")


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_observation_to_state_round_trip(env_id):
    env = _make(env_id)
    env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(5):  # away from the initial state, with non-zero velocities
        env.step(env.action_space.sample())
    unwrapped = env.unwrapped
    qpos, qvel = unwrapped.data.qpos.copy(), unwrapped.data.qvel.copy()
    observation = unwrapped._get_obs()

    new_qpos, new_qvel = observation_to_state(env, observation, x_position=qpos[0])
    np.testing.assert_allclose(new_qpos[1:], qpos[1:])
    np.testing.assert_allclose(new_qvel, np.clip(qvel, -10, 10))  # Hopper/Walker2d observe it so
    assert new_qpos[0] == qpos[0]
    # and back: the state gives the same observation
    unwrapped.set_state(new_qpos, new_qvel)
    np.testing.assert_allclose(unwrapped._get_obs(), observation)
    env.close()


def test_integrate_x_by_hand():
    # velocity at index 1 of 3-dim observations: 1, 3, 2 -> steps of (1+3)/2 and (3+2)/2 times dt
    observations = np.array([[9.0, 1.0, 9.0], [9.0, 3.0, 9.0], [9.0, 2.0, 9.0]])
    np.testing.assert_allclose(integrate_x(observations, dt=0.1, x0=0.5), [0.5, 0.7, 0.95])
    np.testing.assert_allclose(integrate_x(observations, dt=0.1, velocity_index=0), [0.0, 0.9, 1.8])
    assert integrate_x(np.zeros((0, 3)), dt=0.1).shape == (0,)
    with pytest.raises(TtrlError, match="velocity_index"):
        integrate_x(np.zeros((3, 4)), dt=0.1)


def test_integrate_x_follows_the_true_x():
    observations, xs = _rollout("HalfCheetah-v5", steps=100)
    dt = _make("HalfCheetah-v5").unwrapped.dt
    estimate = integrate_x(observations, dt, x0=xs[0])
    assert np.abs(estimate - xs).max() < 0.05 + 0.05 * np.abs(xs - xs[0]).max()


def test_render_trajectory_frames():
    _render_or_skip()
    observations, _ = _rollout("Hopper-v5", steps=12)
    frames = render_trajectory("Hopper-v5", observations, width=96, height=64)
    assert len(frames) == len(observations)
    assert all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for f in frames)
    # the same state renders the same picture; a different pose renders a different one
    again = render_trajectory("Hopper-v5", observations[:1], width=96, height=64)
    np.testing.assert_array_equal(again[0], frames[0])
    bent = observations[:1].copy()
    bent[0, 1:4] += 0.6  # torso pitch and thigh/leg joints
    other = render_trajectory("Hopper-v5", bent, width=96, height=64)[0]
    assert np.abs(other.astype(int) - frames[0]).mean() > 1.0


def test_save_comparison(tmp_path):
    rng = np.random.default_rng(0)
    real = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(7)]
    predicted = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(6)]

    png, mp4 = save_comparison(real, predicted, tmp_path / "cmp.png", every=2)
    assert mp4 is None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > height  # 3 columns (steps 0, 2, 4) of 2 rows

    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as err:
        pytest.skip(f"no ffmpeg for the MP4: {err}")
    png, mp4 = save_comparison(real, predicted, tmp_path / "a.png", tmp_path / "sub" / "a.mp4")
    import imageio

    video = imageio.mimread(mp4, format="FFMPEG")
    assert len(video) == 6 and video[0].shape == (24, 2 * 32 + 4, 3)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.mp4", "a.png", "cmp.png", "sub"]


def test_save_comparison_rejects_mismatched_frames(tmp_path):
    frames = [np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(TtrlError, match="same width and height"):
        save_comparison(
            frames, [np.zeros((8, 6, 3), np.uint8)], tmp_path / "a.png", tmp_path / "a.mp4"
        )
    with pytest.raises(TtrlError):
        save_comparison([], frames, tmp_path / "b.png")


def test_observations_that_cannot_be_mapped():
    hopper = _make("Hopper-v5")
    with pytest.raises(TtrlError, match="shape"):
        observation_to_state(hopper, np.zeros(12), 0.0)
    with_x = _make("Hopper-v5", exclude_current_positions_from_observation=False)
    with pytest.raises(TtrlError, match="exclude_current_positions"):
        observation_to_state(with_x, np.zeros(12), 0.0)
    with pytest.raises(TtrlError, match="not a MuJoCo env"):
        observation_to_state(_make("CartPole-v1"), np.zeros(4), 0.0)
    for env in (hopper, with_x):
        env.close()


def test_render_trajectory_bad_env():
    with pytest.raises(TtrlError, match="cannot make environment"):
        render_trajectory("NoSuchEnv-v0", np.zeros((2, 11)))
    with pytest.raises(TtrlError, match="shape"):
        render_trajectory("Hopper-v5", np.zeros(11))
    _render_or_skip()
    with pytest.raises(TtrlError, match="InvertedPendulum"):
        render_trajectory("InvertedPendulum-v5", np.zeros((2, 4)))
    with pytest.raises(TtrlError, match="HalfCheetah"):
        render_trajectory("Swimmer-v5", np.zeros((2, 8)))  # excludes x and y
