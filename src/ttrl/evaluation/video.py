"""Video of an evaluation episode: offscreen MuJoCo frames streamed into an MP4."""

from __future__ import annotations

import ctypes.util
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def prefer_headless_rendering() -> None:
    """Point MuJoCo at an offscreen OpenGL backend (EGL, else OSMesa) when there is no display.

    MuJoCo's default backend, GLFW, needs a window system. An explicit ``MUJOCO_GL`` is kept, and
    nothing changes where neither library is installed (rendering then fails with one warning).
    """
    if os.environ.get("DISPLAY") or os.environ.get("MUJOCO_GL"):
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return


def warn_video_disabled(err: BaseException) -> None:
    """The one warning line saying that no video is recorded, and why."""
    reason = f"{type(err).__name__}: {err}".replace("\n", " ")
    warnings.warn(
        f"video disabled, rendering failed ({reason}); set MUJOCO_GL=egl or MUJOCO_GL=osmesa "
        "to render headless",
        RuntimeWarning,
        stacklevel=3,
    )


class VideoRecorder:
    """Streams ``rgb_array`` frames of one environment into an MP4, written atomically on close.

    Frames go straight to ffmpeg so a 1000-step episode never sits in memory. If the environment
    cannot render (no OpenGL: set ``MUJOCO_GL=egl`` or ``osmesa``), one warning is issued and the
    recorder turns itself off; the rollout goes on.
    """

    def __init__(self, env: Any, path: str | os.PathLike, fps: int | None = None) -> None:
        self.env = env
        self.path = Path(path)
        self.fps = fps or int(env.metadata.get("render_fps", 30))
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._writer: Any = None
        self.enabled = True
        self.n_frames = 0

    def capture(self) -> None:
        """Render the environment's current state and append it to the video."""
        if not self.enabled:
            return
        try:
            frame = self.env.render()
            if frame is None:
                raise RuntimeError("the environment was not made with render_mode='rgb_array'")
            self._write(np.asarray(frame, dtype=np.uint8))
        except Exception as err:  # rendering needs OpenGL, which headless machines may lack
            warn_video_disabled(err)
            self.enabled = False
            self.discard()

    def _write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            import imageio

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = imageio.get_writer(
                self._tmp, format="FFMPEG", mode="I", fps=self.fps, macro_block_size=1
            )
        self._writer.append_data(frame)
        self.n_frames += 1

    def discard(self) -> None:
        """Drop an unfinished video (a no-op after :meth:`close`)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None if nothing was recorded."""
        if not self.enabled or self._writer is None:
            self.discard()
            return None
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)
        return self.path
