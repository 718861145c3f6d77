"""What an evaluation keeps on disk as it runs, so that stopping it loses no finished episode.

Inside the output folder (``<run_dir>/plan/<name>/``)::

    episodes/settings.json     the settings that decide the episodes, and the timing of each run
    episodes/episode<i>.json   episode i's full result, written the moment it ends

Every file is written atomically, so a killed run leaves whole files only. A later run with the
same settings reads the finished episodes back and plans only the others: each episode depends on
nothing but its index (see :mod:`ttrl.evaluation.rollout`), so the results equal an uninterrupted
run's. A folder holding results of other settings is refused, or cleared with ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ttrl.errors import TtrlError
from ttrl.evaluation.scores import EpisodeResult
from ttrl.io import atomic_write_json

EPISODES_DIR = "episodes"
SETTINGS_FILE = "settings.json"
# What an earlier evaluation may have left in the folder; removed when it is overwritten.
RESULT_FILES = (
    "results.json",
    "results.csv",
    "predictions.csv",
    "predictions.png",
    "paths.png",
    "episode0.mp4",
)
TIMING_SUMS = ("wall_seconds", "plan_seconds", "planner_calls", "decisions", "env_steps")
MAX_LISTED_DIFFERENCES = 3


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short hash of ``settings`` (its canonical JSON), stamped on every episode file."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every (dotted) key whose value differs between two settings."""
    found = []
    for key in sorted(set(old) | set(new), key=lambda k: (k not in new, str(k))):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return found


class EpisodeStore:
    """The finished episodes of one evaluation in ``out_dir``, and the settings they belong to."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / EPISODES_DIR
        self.settings: dict[str, Any] = {}
        self.digest = ""

    def open(
        self, settings: Mapping[str, Any], overwrite: bool = False
    ) -> dict[int, EpisodeResult]:
        """Check the folder against ``settings`` and return the episodes already finished.

        Returns {} for a new evaluation. Results of other settings (or whose settings were not
        recorded, as ttrl 0.1 wrote them) raise :class:`~ttrl.errors.TtrlError` naming what
        differs, unless ``overwrite``, which removes them first.
        """
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        self.digest = settings_digest(self.settings)
        recorded = self._recorded_settings()
        if recorded is not None and recorded != self.settings:
            self._upgrade(recorded)
            recorded = self._recorded_settings()
        if recorded == self.settings:
            return self.finished()
        if recorded is not None or self._has_results():
            if not overwrite:
                raise TtrlError(self._mismatch(recorded))
            self.clear()
        self._write_settings(runs=[])
        return {}

    def save(self, result: EpisodeResult) -> None:
        """Write one finished episode (atomically)."""
        atomic_write_json(
            self.dir / f"episode{result.episode}.json",
            {"settings_digest": self.digest, "result": dataclasses.asdict(result)},
        )

    def finished(self) -> dict[int, EpisodeResult]:
        """The finished episodes of these settings on disk, by index (unreadable files skipped)."""
        episodes = {}
        for path in sorted(self.dir.glob("episode*.json")):
            try:
                record = json.loads(path.read_text())
                if record["settings_digest"] != self.digest:
                    continue  # left by other settings; planned again and replaced
                result = EpisodeResult(**record["result"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                warnings.warn(
                    f"cannot read {path} ({type(err).__name__}); that episode is planned again",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if 0 <= result.episode < self.settings.get("n_episodes", 0):
                episodes[result.episode] = result
        return episodes

    def add_run(self, timing: Mapping[str, float]) -> None:
        """Record the timing of one run that planned some of the episodes."""
        recorded = self._read_settings_file() or {}
        runs = [*recorded.get("runs", []), dict(timing)]
        self._write_settings(runs=runs)

    def timing(self) -> dict[str, float]:
        """The timing of all recorded runs together (sums, and the rates over them)."""
        runs = (self._read_settings_file() or {}).get("runs", [])
        total: dict[str, float] = {k: sum(r.get(k, 0) for r in runs) for k in TIMING_SUMS}
        total["decisions_per_second"] = (
            total["decisions"] / total["plan_seconds"] if total["plan_seconds"] > 0 else 0.0
        )
        total["env_steps_per_second"] = (
            total["env_steps"] / total["wall_seconds"] if total["wall_seconds"] > 0 else 0.0
        )
        total["runs"] = len(runs)
        return total

    def clear(self) -> None:
        """Remove the episodes, the settings and the results files of an earlier evaluation."""
        # the settings go first: a half-cleared folder is then never taken for a resumable one
        (self.dir / SETTINGS_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        for name in RESULT_FILES:
            (self.out_dir / name).unlink(missing_ok=True)

    def _upgrade(self, recorded: dict[str, Any]) -> None:
        """Restamp a folder an older ttrl wrote (the controller's settings under ``planner``) for
        these settings when they are the same ones, so its finished episodes are kept."""
        from ttrl.planning.config import migrate_controller_settings

        if migrate_controller_settings(recorded) != self.settings:
            return
        old_digest = settings_digest(recorded)
        for path in sorted(self.dir.glob("episode*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # unreadable: finished() warns and it is planned again
            if isinstance(record, dict) and record.get("settings_digest") == old_digest:
                atomic_write_json(path, {**record, "settings_digest": self.digest})
        runs = (self._read_settings_file() or {}).get("runs", [])
        self._write_settings(runs=runs)  # last: a stop before this leaves the old folder whole

    def _mismatch(self, recorded: dict[str, Any] | None) -> str:
        if recorded is None:
            what = "results whose settings were not recorded (an older ttrl)"
        else:
            found = differences(recorded, self.settings)
            listed = ", ".join(found[:MAX_LISTED_DIFFERENCES])
            more = len(found) - MAX_LISTED_DIFFERENCES
            what = f"results of other settings ({listed}{f', and {more} more' if more > 0 else ''})"
        return f"{self.out_dir} holds {what}; pass name=<new> or overwrite=true"

    def _has_results(self) -> bool:
        return (self.out_dir / RESULT_FILES[0]).exists()

    def _read_settings_file(self) -> dict[str, Any] | None:
        try:
            record = json.loads((self.dir / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _recorded_settings(self) -> dict[str, Any] | None:
        return (self._read_settings_file() or {}).get("settings")

    def _write_settings(self, runs: list[dict[str, Any]]) -> None:
        atomic_write_json(
            self.dir / SETTINGS_FILE,
            {"settings": self.settings, "digest": self.digest, "runs": runs},
        )
