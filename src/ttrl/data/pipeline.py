"""Load -> preprocess -> fit the discretiser: the one path from a dataset name to rows and their bins.

Training fits the discretiser of its config on ttrl's own rows (or rebuilds the one a resumed run
saved); planning a HuggingFace checkpoint refits a quantile discretiser of the model's vocabulary on
the released code's rows (``released_compat``). Both go through :func:`load_and_fit`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ttrl.data.loading import Transitions, load_transitions
from ttrl.data.preprocess import (
    DISCOUNT,
    MAX_PATH_LENGTH,
    TERMINATION_PENALTY,
    Trajectories,
    preprocess,
)
from ttrl.data.registry import resolve_dataset
from ttrl.discretization import Discretizer

# The keys of a `data` config section that preprocessing reads, with their defaults.
PREPROCESSING_DEFAULTS = {
    "discount": DISCOUNT,
    "termination_penalty": TERMINATION_PENALTY,
    "max_path_length": MAX_PATH_LENGTH,
    "observe_goal": False,
}


@dataclass
class FittedData:
    """A dataset's preprocessed rows and the discretiser their tokens are made with.

    Attributes:
        trajectories: the :class:`~ttrl.data.Trajectories` of the dataset.
        discretizer: fitted on ``trajectories.joined``, or rebuilt from a saved state.
        fitted: True when the discretiser was fitted here (False: rebuilt from the state).
        transitions: the flat transitions the rows were made from, kept only when asked for
            (``keep_transitions``: goal-conditioned windows read their goal fields); else None.
        goal_discretizer: the goal dims' discretiser (:mod:`ttrl.data.goals`) of a
            goal-conditioned run, set by the training stage; else None.
    """

    trajectories: Trajectories
    discretizer: Discretizer
    fitted: bool
    transitions: Transitions | None = None
    goal_discretizer: Discretizer | None = None


def preprocessing_settings(data: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``discount``, ``termination_penalty`` and ``max_path_length`` of a ``data`` config section.

    ``data`` is a mapping (a config dict, ``{}`` for none) or an object with those attributes; the
    settings it lacks take their defaults (those of ``DataConfig``).
    """
    if isinstance(data, Mapping):
        return {key: data.get(key, default) for key, default in PREPROCESSING_DEFAULTS.items()}
    return {key: getattr(data, key, default) for key, default in PREPROCESSING_DEFAULTS.items()}


def load_preprocessed(
    name: str | os.PathLike,
    source: str = "auto",
    discount: float = DISCOUNT,
    termination_penalty: float | None = TERMINATION_PENALTY,
    max_path_length: int = MAX_PATH_LENGTH,
    released_compat: bool = False,
    observe_goal: bool = False,
) -> Trajectories:
    """Resolve the dataset ``name`` (from ``source``), load it and preprocess it into rows.

    ``released_compat=True`` gives the released code's rows (last step dropped, float64), whose
    quantile edges are those its checkpoints were trained with (see :mod:`ttrl.data.preprocess`).
    A dataset whose terminals are cleared on loading (AntMaze, ``DatasetSpec.recut``) gets no
    termination penalty, whatever ``termination_penalty`` says. ``observe_goal`` appends the
    pursued goal to every observation and ends an episode at each reached goal, a terminal
    success that gets no penalty either (:func:`ttrl.data.goals.observe_desired_goal`).
    """
    return _load(
        name, source, discount, termination_penalty, max_path_length, released_compat, observe_goal
    )[1]


def _load(
    name: str | os.PathLike,
    source: str = "auto",
    discount: float = DISCOUNT,
    termination_penalty: float | None = TERMINATION_PENALTY,
    max_path_length: int = MAX_PATH_LENGTH,
    released_compat: bool = False,
    observe_goal: bool = False,
) -> tuple[Transitions, Trajectories]:
    spec = resolve_dataset(name, source)
    transitions = load_transitions(spec)  # re-cut here when the dataset asks for it (AntMaze)
    if spec.recut is not None and spec.recut.zero_terminals:
        termination_penalty = None  # no terminal is left to penalise: the rows say so
    if observe_goal:
        from ttrl.data.goals import observe_desired_goal

        transitions = observe_desired_goal(transitions)
        termination_penalty = None  # its terminals are reached goals, successes
    trajectories = preprocess(
        transitions,
        discount=discount,
        termination_penalty=termination_penalty,
        max_path_length=max_path_length,
        released_compat=released_compat,
    )
    return transitions, trajectories


def load_and_fit(
    name: str | os.PathLike,
    n_bins: int,
    kind: str = "quantile",
    discretizer_state: dict[str, Any] | None = None,
    keep_transitions: bool = False,
    **preprocessing: Any,
) -> FittedData:
    """:func:`load_preprocessed` the dataset, then fit an ``n_bins`` ``kind`` discretiser on its rows.

    Args:
        discretizer_state: a saved :meth:`Discretizer.state_dict` to rebuild instead of fitting (a
            resumed run tokenises exactly as before).
        keep_transitions: keep the flat transitions in :attr:`FittedData.transitions` (their goal
            fields make goal-conditioned windows); by default they are dropped after preprocessing.
        preprocessing: ``source``, ``discount``, ``termination_penalty``, ``max_path_length`` and
            ``released_compat``, as :func:`load_preprocessed` takes them.
    """
    transitions, trajectories = _load(name, **preprocessing)
    kept = transitions if keep_transitions else None
    del transitions  # not kept: freed before the discretiser is fitted
    if discretizer_state is not None:
        discretizer, fitted = Discretizer.from_state_dict(discretizer_state), False
    else:
        discretizer, fitted = Discretizer.fit(trajectories.joined, n_bins, kind), True
    return FittedData(trajectories, discretizer, fitted, transitions=kept)
