"""Video of an evaluation episode: offscreen MuJoCo frames streamed into an MP4."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np


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
            self._disable(
                f"video disabled, rendering failed ({type(err).__name__}: {err}); "
                "set MUJOCO_GL=egl or MUJOCO_GL=osmesa to render headless"
            )

    def _write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            import imageio

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = imageio.get_writer(
                self._tmp, format="FFMPEG", mode="I", fps=self.fps, macro_block_size=1
            )
        self._writer.append_data(frame)
        self.n_frames += 1

    def _disable(self, message: str) -> None:
        warnings.warn(message.replace("\n", " "), RuntimeWarning, stacklevel=3)
        self.enabled = False
        self._discard()

    def _discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None if nothing was recorded."""
        if not self.enabled or self._writer is None:
            self._discard()
            return None
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)
        return self.path
