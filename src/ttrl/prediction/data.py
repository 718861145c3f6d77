"""The episodes predictions are scored on, and the start points spread over them.

A training run holds out whole episodes (``data.val_fraction``, split by :class:`TokenDataset`
with the run's seed); predictions are scored on those, and the baselines are fit on the others,
so every model is judged on episodes it never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ttrl.data import TokenDataset
from ttrl.data.preprocess import Trajectories
from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout

EPISODE_CHOICES = ("held_out", "all")


@dataclass(frozen=True)
class StartPoints:
    """Where open-loop predictions start: ``episodes[i]`` at step ``steps[i]`` (``[n]`` each)."""

    episodes: np.ndarray
    steps: np.ndarray

    def __len__(self) -> int:
        return len(self.episodes)


@dataclass
class PredictionData:
    """The dataset rows of a run, which episodes are scored and which the baselines train on."""

    trajectories: Trajectories
    scored_episodes: np.ndarray  # episode ids predictions are scored on
    training_episodes: np.ndarray  # the others (all episodes when every one is scored)

    @property
    def layout(self) -> TransitionLayout:
        return TransitionLayout(self.trajectories.observation_dim, self.trajectories.action_dim)

    def rows(self, episode: int, first: int, stop: int) -> np.ndarray:
        """Rows ``[first, stop)`` of ``episode``: ``[n, T]`` of ``[s, a, r, V]``."""
        start = int(self.trajectories.episode_starts[episode])
        return self.trajectories.joined[start + first : start + stop]

    def transitions(self, episodes: np.ndarray) -> dict[str, np.ndarray]:
        """``observations, actions, rewards, next_observations`` of every step of ``episodes``
        that has a next step (the data a one-step model or a policy is fit on)."""
        S, A = self.trajectories.observation_dim, self.trajectories.action_dim
        parts = [self.rows(e, 0, int(self.trajectories.episode_lengths[e])) for e in episodes]
        current = np.concatenate([p[:-1] for p in parts if len(p) > 1])
        following = np.concatenate([p[1:] for p in parts if len(p) > 1])
        return {
            "observations": current[:, :S].astype(np.float32),
            "actions": current[:, S : S + A].astype(np.float32),
            "rewards": current[:, S + A].astype(np.float32),
            "next_observations": following[:, :S].astype(np.float32),
        }


def prediction_data(
    trajectories: Trajectories,
    discretizer: Any,
    train_config: dict[str, Any],
    episodes: str = "held_out",
) -> PredictionData:
    """Split ``trajectories`` as the training run did (its ``data`` section and ``seed``).

    ``episodes="all"`` scores every episode (for runs that held none out; the transformer then saw
    them in training, so say so when reporting).
    """
    if episodes not in EPISODE_CHOICES:
        raise TtrlError(f"episodes={episodes!r} is not one of {', '.join(EPISODE_CHOICES)}")
    every = np.arange(trajectories.n_episodes)
    if episodes == "all":
        return PredictionData(trajectories, every, every)
    data = train_config.get("data") or {}
    val_fraction = float(data.get("val_fraction", 0.0))
    if val_fraction <= 0:
        raise TtrlError(
            f"the run held out no episodes (data.val_fraction={val_fraction}); pass episodes=all "
            f"to score the episodes it trained on"
        )
    tokens = TokenDataset.build(
        trajectories,
        discretizer,
        sequence_length=int(data.get("sequence_length", 1)),
        max_path_length=int(data.get("max_path_length", trajectories.max_path_length)),
    )
    held_out = tokens.validation_episodes(val_fraction, int(train_config.get("seed", 0))).numpy()
    return PredictionData(trajectories, held_out, np.setdiff1d(every, held_out))


def spread_start_points(
    data: PredictionData, context: int, horizon: int, n_starts: int, actions: str
) -> StartPoints:
    """``n_starts`` start points spread evenly over the scored episodes' usable steps.

    A start at step ``t`` needs ``context`` real transitions before it, ``horizon`` actions from it
    on (fed in with ``actions=data``) and the ``horizon`` true states after them.
    """
    lengths = data.trajectories.episode_lengths[data.scored_episodes]
    usable = lengths - context - horizon  # starts t = context .. length - horizon - 1
    eligible = data.scored_episodes[usable > 0]
    if len(eligible) == 0:
        longest = int(lengths.max()) if len(lengths) else 0
        need = "the dataset's actions for" if actions == "data" else "true states for"
        raise TtrlError(
            f"no scored episode is long enough: a start needs {context} steps before it (the longest context the model takes) and "
            f"{need} horizon={horizon} steps after it ({context + horizon + 1} steps), but the longest "
            f"of the {len(lengths)} scored episodes has {longest}; lower horizon or context"
        )
    counts = usable[usable > 0]
    # every usable (episode, step) pair in order, then n_starts of them at even spacing
    offsets = np.concatenate([[0], np.cumsum(counts)])
    picks = np.unique(np.linspace(0, offsets[-1] - 1, min(n_starts, int(offsets[-1]))).round())
    which = np.searchsorted(offsets, picks, side="right") - 1
    return StartPoints(
        episodes=eligible[which].astype(np.int64),
        steps=(picks - offsets[which] + context).astype(np.int64),
    )


@dataclass
class StartWindows:
    """The data around every start point: what predictors are given and what they are scored on.

    ``context [n, c, T]`` the real transitions before the start, ``observations [n, S]`` the
    state at the start, ``actions [n, H, A]`` the data's actions from it on and
    ``next_observations [n, H, S]`` the true states ``s_{t+1} .. s_{t+H}``.
    """

    context: torch.Tensor
    observations: torch.Tensor
    actions: torch.Tensor
    next_observations: torch.Tensor


def start_windows(
    data: PredictionData, starts: StartPoints, context: int, horizon: int
) -> StartWindows:
    """Cut the context and the true future of every start point out of the dataset."""
    layout = data.layout
    S = layout.observation_dim
    lengths = data.trajectories.episode_lengths[starts.episodes]
    if bool((starts.steps < context).any() or (starts.steps + horizon + 1 > lengths).any()):
        raise TtrlError(
            f"start points need context={context} steps before them and horizon={horizon} after "
            f"them within their episode (steps {starts.steps.tolist()}, lengths {lengths.tolist()})"
        )
    rows = [
        data.rows(int(e), int(t) - context, int(t) + horizon + 1)
        for e, t in zip(starts.episodes, starts.steps, strict=True)
    ]
    windows = torch.as_tensor(np.stack(rows), dtype=torch.float64)
    future = windows[:, context:]
    return StartWindows(
        context=windows[:, :context],
        observations=future[:, 0, :S],
        actions=future[:, :horizon, layout.action],
        next_observations=future[:, 1 : horizon + 1, :S],
    )
