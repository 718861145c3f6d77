"""The evaluation video's camera follows the agent (ttrl.evaluation.camera).

The episodes below carry the agent metres from its start; late frames must still show it: the
agent's pixels (the frame minus the same frame with the agent's geoms made invisible) are many and
its torso projects inside the image. Gymnasium's default camera fails both checks (asserted too,
so the scenario stays strong enough to tell the cameras apart).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from ttrl.evaluation.camera import TRACK_CAMERA, TRACK_CAMERA_ENVS, tracking_render_kwargs
from ttrl.evaluation.rollout import make_env
from ttrl.evaluation.video import prefer_headless_rendering

STEPS = 400
LOOK_FROM = 100  # frames from here on are "late": the agent has long left its start
LOOK_EVERY = 50
MIN_AGENT_PIXELS = 0.005  # of the frame; the agent covers ~1-2% at the default size
MIN_TRAVEL = 3.0  # metres: well past the default camera's view (~1.2 m either side)


def _render_or_skip() -> None:
    prefer_headless_rendering()
    import gymnasium as gym

    try:
        env = gym.make("Hopper-v5", render_mode="rgb_array", width=32, height=32)
        env.reset(seed=0)
        env.render()
        env.close()
    except Exception as err:  # no EGL/OSMesa that MuJoCo can use
        pytest.skip(f"MuJoCo cannot render offscreen here (MUJOCO_GL=egl/osmesa): {err}")


def _torso_in_image(env) -> tuple[float, float]:
    """The torso's position in the last rendered image, as fractions of width and height."""
    unwrapped = env.unwrapped
    cam = unwrapped.mujoco_renderer.viewer.scn.camera[0]  # the camera the last render used
    pos, forward, up = np.array(cam.pos), np.array(cam.forward), np.array(cam.up)
    offset = unwrapped.data.xpos[1] - pos  # body 1 is the torso in every locomotion model
    depth = offset @ forward
    assert depth > cam.frustum_near
    x = offset @ np.cross(forward, up) * cam.frustum_near / depth
    y = offset @ up * cam.frustum_near / depth
    half_height = (cam.frustum_top - cam.frustum_bottom) / 2
    half_width = half_height * unwrapped.width / unwrapped.height
    u = (x - cam.frustum_center + half_width) / (2 * half_width)
    v = (y - cam.frustum_bottom) / (2 * half_height)
    return u, v


def _agent_pixels(env) -> float:
    """Fraction of the frame that changes when the agent's geoms are made invisible."""
    model = env.unwrapped.model
    frame = env.render().astype(np.int16)
    rgba = model.geom_rgba.copy()
    model.geom_rgba[model.geom_bodyid > 0, 3] = 0.0  # body 0 is the world: floor and sky stay
    try:
        empty = env.render().astype(np.int16)
    finally:
        model.geom_rgba[:] = rgba
    return float((np.abs(frame - empty).max(axis=2) > 30).mean())


def _cheetah_episode(env) -> Callable[[int], np.ndarray]:
    # an open-loop sinusoidal gait that runs the cheetah ~30 m in 300 steps (random actions: <1 m)
    phases = np.array([5.41, 4.6, 3.78, 1.81, 4.92, 1.58])
    return lambda t: np.sin(1.59 * t + phases)


def _hopper_episode(env) -> Callable[[int], np.ndarray]:
    # a hopper under random actions falls and stays put; without gravity it glides at 2.5 m/s
    unwrapped = env.unwrapped
    unwrapped.model.opt.gravity[:] = 0.0
    qvel = unwrapped.data.qvel.copy()
    qvel[0] = 2.5
    unwrapped.set_state(unwrapped.data.qpos.copy(), qvel)
    rng = np.random.default_rng(0)
    return lambda t: rng.uniform(-1.0, 1.0, env.action_space.shape)


EPISODES = {"HalfCheetah-v5": _cheetah_episode, "Hopper-v5": _hopper_episode}


def _late_views(env, env_id: str) -> tuple[float, list[tuple[int, float, float, float]]]:
    """Run the episode; the distance travelled and (step, agent pixels, u, v) of late frames."""
    env.reset(seed=0)
    action = EPISODES[env_id](env)
    views = []
    for t in range(1, STEPS + 1):
        env.step(action(t))  # termination ignored: only the camera is under test
        if t >= LOOK_FROM and t % LOOK_EVERY == 0:
            pixels = _agent_pixels(env)
            views.append((t, pixels, *_torso_in_image(env)))
    travelled = abs(float(env.unwrapped.data.qpos[0]))
    env.close()
    return travelled, views


@pytest.mark.parametrize("env_id", sorted(EPISODES))
def test_evaluation_video_camera_follows_the_agent(env_id):
    _render_or_skip()
    env = make_env(env_id, render=True)  # the env the evaluation video renders
    travelled, views = _late_views(env, env_id)
    assert travelled > MIN_TRAVEL
    for step, pixels, u, v in views:
        assert pixels > MIN_AGENT_PIXELS, f"step {step}: agent not visible ({pixels:.4f})"
        assert 0.1 < u < 0.9 and 0.1 < v < 0.9, f"step {step}: torso at ({u:.2f}, {v:.2f})"


@pytest.mark.parametrize("env_id", sorted(EPISODES))
def test_default_camera_loses_the_agent(env_id):
    """Gymnasium's own camera fails the check above: the test can tell the cameras apart."""
    _render_or_skip()
    import gymnasium as gym

    travelled, views = _late_views(gym.make(env_id, render_mode="rgb_array"), env_id)
    assert travelled > MIN_TRAVEL
    _, pixels, u, _ = views[-1]
    assert pixels < MIN_AGENT_PIXELS and not 0.0 < u < 1.0


def test_tracking_render_kwargs():
    assert tracking_render_kwargs("HalfCheetah-v5") == {"camera_name": TRACK_CAMERA}
    assert tracking_render_kwargs("Walker2d-v4") == {"camera_name": TRACK_CAMERA}
    for env_id in ("InvertedPendulum-v5", "CartPole-v1", "Hopper-v3", "not an id!"):
        assert tracking_render_kwargs(env_id) == {}


def test_every_roaming_mujoco_env_has_a_tracking_camera():
    """The envs named in TRACK_CAMERA_ENVS are exactly the v5 MuJoCo envs whose root can roam."""
    import gymnasium as gym
    import mujoco
    from gymnasium.envs.registration import registry

    roaming = set()
    for env_id, spec in registry.items():
        if spec.version != 5 or "mujoco" not in str(spec.entry_point):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = gym.make(env_id).unwrapped.model
        root_joints = [
            j for j in range(model.njnt) if model.body_parentid[model.jnt_bodyid[j]] == 0
        ]
        if any(
            model.jnt_bodyid[j] > 0
            and int(model.jnt_type[j]) in (mujoco.mjtJoint.mjJNT_FREE, mujoco.mjtJoint.mjJNT_SLIDE)
            and not model.jnt_limited[j]
            for j in root_joints
        ):
            roaming.add(spec.name)
            camera = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, TRACK_CAMERA)
            assert camera >= 0, env_id
            assert int(model.cam_mode[camera]) in (
                mujoco.mjtCamLight.mjCAMLIGHT_TRACK,
                mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM,
            ), env_id
    assert roaming == TRACK_CAMERA_ENVS
