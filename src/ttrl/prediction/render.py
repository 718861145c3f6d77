"""Pictures of a predicted trajectory beside the real one: MuJoCo frames rendered from observations.

The locomotion envs (Hopper, Walker2d, HalfCheetah v5) observe ``qpos[1:]`` then ``qvel``: all of
the simulator's state but the root's x position, which :func:`integrate_x` recovers from the
observed x velocity. Each observation is put into the simulator (:func:`observation_to_state`),
rendered through the camera that follows the agent (:mod:`ttrl.evaluation.camera`), and
:func:`save_comparison` lays real and predicted frames out as a filmstrip PNG and a side-by-side
MP4.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttrl.errors import TtrlError
from ttrl.evaluation.camera import tracking_render_kwargs
from ttrl.evaluation.video import prefer_headless_rendering
from ttrl.io import atomic_write
from ttrl.plotting import pyplot, save_png

MAX_COLUMNS = 10  # filmstrip frames per row when ``every`` is not given
DIVIDER = 4  # white pixels between the real and the predicted half of a video frame


def _env_name(env: Any) -> str:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def observation_to_state(
    env: Any, observation: np.ndarray, x_position: float
) -> tuple[np.ndarray, np.ndarray]:
    """The MuJoCo state ``(qpos [nq], qvel [nv])`` of a locomotion env that shows ``observation``.

    The observation must be the env's default one, ``qpos[1:]`` then ``qvel`` (Hopper, Walker2d,
    HalfCheetah v5), so ``qpos = [x_position, *observation[:nq - 1]]`` and
    ``qvel = observation[nq - 1:]`` (Hopper and Walker2d observe qvel clipped to [-10, 10], so a
    faster joint comes back at 10). Raises :class:`~ttrl.errors.TtrlError` for any other
    observation (other envs, a wrong size, an env made to observe its x position).
    """
    unwrapped = env.unwrapped
    name = _env_name(env)
    model = getattr(unwrapped, "model", None)
    if model is None or not hasattr(unwrapped, "set_state"):
        raise TtrlError(
            f"cannot render observations of {name}: it is not a MuJoCo env; use a locomotion env "
            "such as Hopper-v5, Walker2d-v5 or HalfCheetah-v5"
        )
    if not getattr(unwrapped, "_exclude_current_positions_from_observation", False):
        raise TtrlError(
            f"cannot render observations of {name}: its observation is not qpos without the root "
            "x position, then qvel; use a locomotion env such as Hopper-v5, Walker2d-v5 or "
            "HalfCheetah-v5 made with exclude_current_positions_from_observation=True (the default)"
        )
    observation = np.asarray(observation, dtype=np.float64)
    nq, nv = model.nq, model.nv
    if observation.shape != (nq - 1 + nv,):
        raise TtrlError(
            f"cannot render observations of {name}: an observation of shape {observation.shape} is "
            f"not qpos without the root x position ({nq - 1}) then qvel ({nv}); only envs that "
            "observe exactly that (Hopper-v5, Walker2d-v5, HalfCheetah-v5) can be rendered"
        )
    qpos = np.concatenate([[x_position], observation[: nq - 1]])
    return qpos, observation[nq - 1 :].copy()


def integrate_x(
    observations: np.ndarray, dt: float, x0: float = 0.0, velocity_index: int | None = None
) -> np.ndarray:
    """Root x positions ``[n]`` of observed states ``[n, S]``, integrated from the x velocity.

    The locomotion observations leave the x position out, so it is not known: it is integrated
    from the root x velocity ``qvel[0]`` (observation index ``velocity_index``) with the env's
    step ``dt``, by the trapezoidal rule, starting at ``x0``. The result drifts from the true x
    by the integration error (a few cm over 200 HalfCheetah steps), which shifts the picture but
    not the pose. ``velocity_index`` None means ``(S - 1) // 2``: the planar walkers (Hopper,
    Walker2d, HalfCheetah) have ``nq == nv``, so ``S = 2 nq - 1`` and ``qvel[0]`` sits at ``nq - 1``.
    """
    observations = np.asarray(observations, dtype=np.float64)
    if observations.ndim != 2:
        raise TtrlError(
            f"integrate_x needs observations of shape [steps, dims], not {observations.shape}"
        )
    if velocity_index is None:
        if observations.shape[1] % 2 == 0:
            raise TtrlError(
                f"cannot tell where the x velocity is in {observations.shape[1]}-dim observations "
                "(not a planar walker's 2 nq - 1); pass velocity_index = nq - 1"
            )
        velocity_index = (observations.shape[1] - 1) // 2
    if len(observations) == 0:
        return np.zeros(0)
    velocity = observations[:, velocity_index]
    steps = (velocity[1:] + velocity[:-1]) * (dt / 2)
    return x0 + np.concatenate([[0.0], np.cumsum(steps)])


def render_trajectory(
    env_id: str,
    observations: np.ndarray,
    dt: float | None = None,
    width: int = 320,
    height: int = 240,
    x0: float = 0.0,
) -> list[np.ndarray]:
    """Frames ``[height, width, 3]`` (uint8) of ``env_id`` in each observed state ``[n, S]``.

    Each observation becomes the simulator's state (:func:`observation_to_state`, with the x
    position from :func:`integrate_x` over ``dt``, the env's own step when None), rendered
    offscreen through the camera that follows the agent. Raises
    :class:`~ttrl.errors.TtrlError` for an env that cannot be made, rendered or mapped.
    """
    import gymnasium as gym

    observations = np.asarray(observations, dtype=np.float64)
    if observations.ndim != 2:
        raise TtrlError(
            f"render_trajectory needs observations of shape [steps, dims], not {observations.shape}"
        )
    prefer_headless_rendering()
    try:
        env = gym.make(
            env_id,
            render_mode="rgb_array",
            width=width,
            height=height,
            **tracking_render_kwargs(env_id),
        )
    except gym.error.Error as err:
        raise TtrlError(f"cannot make environment {env_id!r}: {err}") from err
    except TypeError as err:  # no width/height: not a MuJoCo env
        raise TtrlError(
            f"cannot render {env_id} from observations ({err}); use a MuJoCo locomotion env such "
            "as Hopper-v5, Walker2d-v5 or HalfCheetah-v5"
        ) from err
    except Exception as err:  # MuJoCo could not load an OpenGL backend
        raise _render_error(env_id, err) from err
    try:
        env.reset(seed=0)  # gymnasium renders only after a reset
        unwrapped = env.unwrapped
        nq = getattr(getattr(unwrapped, "model", None), "nq", 1)
        if len(observations):
            observation_to_state(env, observations[0], x0)  # checks the env before integrating
        xs = integrate_x(observations, unwrapped.dt if dt is None else dt, x0, nq - 1)
        frames = []
        for observation, x in zip(observations, xs, strict=True):
            qpos, qvel = observation_to_state(env, observation, float(x))
            unwrapped.set_state(qpos, qvel)  # runs mj_forward: the track camera moves too
            try:
                frame = env.render()
            except Exception as err:  # no usable OpenGL on this machine
                raise _render_error(env_id, err) from err
            frames.append(np.asarray(frame, dtype=np.uint8).copy())
        return frames
    finally:
        env.close()


def _render_error(env_id: str, err: BaseException) -> TtrlError:
    reason = f"{type(err).__name__}: {err}".replace("\n", " ")
    return TtrlError(
        f"cannot render {env_id} offscreen ({reason}); set MUJOCO_GL=egl or MUJOCO_GL=osmesa"
    )


def save_comparison(
    real_frames: Sequence[np.ndarray],
    predicted_frames: Sequence[np.ndarray],
    png_path: str | os.PathLike,
    mp4_path: str | os.PathLike | None = None,
    every: int | None = None,
    labels: tuple[str, str] = ("data", "model"),
    fps: int = 30,
) -> tuple[Path, Path | None]:
    """Write real and predicted frames side by side; returns ``(png_path, mp4_path or None)``.

    The PNG is a filmstrip: real frames on top, predicted below, one column every ``every`` steps
    (None: at most 10 columns), each titled with its step. The MP4 (written when ``mp4_path`` is
    given) plays real | predicted side by side at ``fps``. Both cover the first
    ``min(len(real_frames), len(predicted_frames))`` steps and are written atomically.
    """
    n = min(len(real_frames), len(predicted_frames))
    if n == 0:
        raise TtrlError("save_comparison needs at least one real and one predicted frame")
    if every is None:
        every = max(1, math.ceil(n / MAX_COLUMNS))
    if every < 1:
        raise TtrlError(f"save_comparison's every must be at least 1, not {every}")
    steps = list(range(0, n, every))
    height, width = np.asarray(real_frames[0]).shape[:2]

    plt = pyplot()
    panel = 2.0  # inches per frame's width
    fig, axes = plt.subplots(
        2,
        len(steps),
        figsize=(panel * len(steps), 2 * panel * height / width + 0.6),
        squeeze=False,
    )
    for column, step in enumerate(steps):
        for row, frames in enumerate((real_frames, predicted_frames)):
            ax = axes[row, column]
            ax.imshow(np.asarray(frames[step]))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"step {step}", fontsize=9)
            if column == 0:
                ax.set_ylabel(labels[row])
    fig.tight_layout()
    png = save_png(fig, png_path)

    if mp4_path is None:
        return png, None
    video = [_side_by_side(real_frames[t], predicted_frames[t]) for t in range(n)]
    return png, atomic_write(mp4_path, lambda tmp: _write_mp4(tmp, video, fps))


def _side_by_side(real: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    real, predicted = np.asarray(real, dtype=np.uint8), np.asarray(predicted, dtype=np.uint8)
    if real.shape != predicted.shape:
        raise TtrlError(
            f"real frames {real.shape} and predicted frames {predicted.shape} differ in shape; "
            "render both at the same width and height"
        )
    divider = np.full((real.shape[0], DIVIDER, 3), 255, dtype=np.uint8)
    frame = np.concatenate([real, divider, predicted], axis=1)
    # H.264 in yuv420p needs even sides
    return np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")


def _write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as err:
        raise TtrlError(
            f"cannot write an MP4 without ffmpeg ({type(err).__name__}: {err}); "
            "pip install imageio-ffmpeg"
        ) from err
    height, width = frames[0].shape[:2]
    # the temporary name does not end in .mp4, so ffmpeg is told the container (imageio's own
    # writer refuses such a name)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, macro_block_size=1, output_params=["-f", "mp4"]
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
