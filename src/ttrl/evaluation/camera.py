"""The render camera for evaluation videos: one that follows the agent in locomotion envs.

Left alone, gymnasium (1.x) renders MuJoCo envs with a free camera that stays where it started, so
a running agent leaves the frame within a second or two (its ``trackbodyid`` settings are ignored by
a free camera). Every gymnasium locomotion model whose root can roam (an unbounded free or slide root
joint) defines a camera named ``track`` in ``trackcom`` mode, which keeps a fixed offset from the
agent's centre of mass; naming it at ``gym.make`` time renders through it.
"""

from __future__ import annotations

from typing import Any

# gymnasium MuJoCo envs (v4 and v5 share these model XMLs) with an unbounded free/slide root and a
# "track" camera; tests/test_camera.py checks this set against every registered v5 MuJoCo env.
TRACK_CAMERA_ENVS = frozenset(
    {"Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "Swimmer", "Walker2d"}
)
TRACK_CAMERA = "track"


def tracking_render_kwargs(env_id: str) -> dict[str, Any]:
    """``gym.make`` keyword arguments that render ``env_id`` through a camera tracking the agent.

    ``{"camera_name": "track"}`` for the gymnasium locomotion envs (HalfCheetah, Hopper, Walker2d,
    Ant, Humanoid, HumanoidStandup, Swimmer; v4 and later), whose model's ``track`` camera follows
    the agent's centre of mass; ``{}`` (the env's own camera) for every other env, including those
    whose agent cannot leave the default view (pendulums on a bounded slider, arms).
    """
    from gymnasium.envs.registration import parse_env_id

    try:
        namespace, name, version = parse_env_id(env_id)
    except Exception:  # not a gymnasium id: let gym.make report it
        return {}
    # v2/v3 are the mujoco-py envs, which take no camera_name
    if namespace is None and name in TRACK_CAMERA_ENVS and (version is None or version >= 4):
        return {"camera_name": TRACK_CAMERA}
    return {}
