"""Settings of planning: the beam search's (:class:`PlannerConfig`, checked when the planner is
built) and those of the receding-horizon controller that executes its plans (:class:`ControllerConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ttrl.data.preprocess import DISCOUNT
from ttrl.errors import TtrlError
from ttrl.layout import TransitionLayout
from ttrl.planning.scorers import available_scorers, build_scorer

# One transition minus a token would crop the whole window when a transition starts, so the model
# must see at least two transitions (training windows too: data.sequence_length).
MIN_WINDOW_TRANSITIONS = 2


class _Settings:
    """A settings dataclass whose unknown keyword settings get one line (a moved one, its new
    name) instead of Python's TypeError."""

    section = "settings"  # how the one line names the section

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        unknown = sorted(set(kwargs) - set(fields))
        for key in unknown:
            message = moved_setting_message(key) if cls.section == "planner" else None
            if message is not None:
                raise TtrlError(message)
        if unknown:
            raise TtrlError(
                f"unknown {cls.section} setting(s) {', '.join(unknown)}; valid ones are "
                f"{', '.join(sorted(fields))}"
            )
        return super().__new__(cls)


@dataclass
class ControllerConfig(_Settings):
    """Settings of the receding-horizon loop that executes the planner's plans (the ``controller``
    section of ``train.yaml`` and ``plan.yaml``): what the planner is given, and how often it is asked.
    """

    section = "controller"
    context_transitions: int = 5  # executed transitions given to the model before the observation
    plan_freq: int = (
        1  # replan every this many environment steps (in between, follow the last plan)
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TtrlError` naming the first setting that cannot work."""
        _require_int_at_least("context_transitions", self.context_transitions, 0, "controller")
        _require_positive_int("plan_freq", self.plan_freq, "controller")


@dataclass
class PlannerConfig(_Settings):
    """Settings of :class:`~ttrl.planning.BeamPlanner` (defaults: the paper's beam search).

    ``k_*`` keep only the k most likely tokens of a distribution (None: no top-k filter) and ``cdf_*``
    drop its low-probability tail holding that fraction of the mass (None: no tail filter); the suffix
    says which tokens they apply to: observations, actions, or rewards and values.
    """

    section = "planner"
    horizon: int = 15  # transitions planned ahead (H)
    beam_width: int = 128  # plans kept after every step, per environment
    n_expand: int = 2  # continuations sampled from every kept plan at each step
    k_obs: int | None = 1  # observations: greedy by default
    k_act: int | None = None
    k_rew: int | None = 1  # rewards and values: greedy by default
    cdf_obs: float | None = None
    cdf_act: float | None = 0.6  # drop the tail holding 60% of the action mass
    cdf_rew: float | None = None
    window_transitions: int | None = (
        5  # the model sees at most this many transitions - 1 token; None: all
    )
    discount: float = (
        DISCOUNT  # of the planning objective (a search setting; the data's by default)
    )
    # the plan scorer by name (ttrl.planning.scorers): "return" (rewards + value), "likelihood"
    # (log-probability: imitation), or one registered with register_scorer
    objective: str = "return"
    # objective=q: the run dir of scripts/train_q.py whose IQL Q-function scores the plans, and
    # whether it scores with Q(s_t, a_t) ("q") or V(s_t) ("v") (ttrl.planning.q_guided)
    q_run: str | None = None
    q_heuristic: str = "q"
    use_cache: bool = True  # reuse attention keys/values between tokens (same plans, much faster)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TtrlError` naming the first setting that cannot work."""
        for name in ("horizon", "beam_width", "n_expand"):
            _require_positive_int(name, getattr(self, name))
        if self.window_transitions is not None:
            _require_int_at_least(
                "window_transitions", self.window_transitions, MIN_WINDOW_TRANSITIONS
            )
        for name in ("k_obs", "k_act", "k_rew"):
            value = getattr(self, name)
            if value is not None:
                _require_positive_int(name, value)
        for name in ("cdf_obs", "cdf_act", "cdf_rew"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise TtrlError(
                    f"planner {name}={value!r} must be a probability mass in [0, 1) or null"
                )
        if not (isinstance(self.discount, int | float) and 0.0 < self.discount <= 1.0):
            raise TtrlError(f"planner discount={self.discount!r} must be in (0, 1]")
        if self.objective not in available_scorers():
            build_scorer(self.objective)  # raises the one line naming the choices
        if self.q_heuristic not in ("q", "v"):
            raise TtrlError(f"planner q_heuristic={self.q_heuristic!r} is not one of q, v")

    def check_fits_model(
        self, block_size: int, layout: TransitionLayout, context_transitions: int | None = None
    ) -> None:
        """Raise :class:`TtrlError` if the model cannot attend over what this planner feeds it.

        Without a window the whole context is fed: ``context_transitions`` (the controller's) is
        then checked too; None leaves that to the prefix check of every :meth:`BeamPlanner.plan`.
        """
        if self.window_transitions is not None:
            window_tokens = layout.block_size(self.window_transitions)
            fitting = layout.transitions_fitting(block_size)
            if window_tokens > block_size and fitting < MIN_WINDOW_TRANSITIONS:
                needed = layout.block_size(MIN_WINDOW_TRANSITIONS)
                raise TtrlError(
                    f"the model attends over block_size={block_size} tokens, less than the "
                    f"{MIN_WINDOW_TRANSITIONS} transitions ({needed} tokens) planning needs; "
                    f"train it with data.sequence_length >= {MIN_WINDOW_TRANSITIONS}"
                )
            if window_tokens > block_size:
                raise TtrlError(
                    f"planner window_transitions={self.window_transitions} is {window_tokens} tokens "
                    f"but the model attends over block_size={block_size}; lower window_transitions "
                    f"to at most {fitting}"
                )
            return
        if context_transitions is None:
            return
        longest = self.longest_sequence(layout, context_transitions)
        if longest > block_size:
            raise TtrlError(
                f"controller context_transitions={context_transitions} + planner "
                f"horizon={self.horizon} feed the model {longest} tokens but its block_size is "
                f"{block_size}; lower planner.horizon or controller.context_transitions, or set "
                f"planner.window_transitions to crop the context"
            )

    def longest_sequence(
        self,
        layout: TransitionLayout,
        context_transitions: int = ControllerConfig.context_transitions,
    ) -> int:
        """Most tokens the model is given at once without cropping, after ``context_transitions``
        (the controller's; the last value is never fed)."""
        return layout.block_size(context_transitions + self.horizon)

    def window_tokens(self, layout: TransitionLayout) -> int | None:
        """Trajectory tokens the model sees at most (None: all)."""
        if self.window_transitions is None:
            return None
        return layout.block_size(self.window_transitions) - layout.prefix_length


# Settings that were the planner's before the controller had a section of its own.
MOVED_TO_CONTROLLER = ("context_transitions", "plan_freq")


def moved_setting_message(key: str) -> str | None:
    """The one line for ``planner.<key>`` when ``key`` moved to the controller (else None)."""
    if key not in MOVED_TO_CONTROLLER:
        return None
    return (
        f"planner.{key} is now controller.{key} (a setting of the receding-horizon loop, not of "
        f"the search): write controller.{key}=..."
    )


def migrate_controller_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a run's or an evaluation's settings) with the planner's moved keys under
    ``controller``, for settings ttrl wrote before the controller had its section; newer ones
    come back unchanged."""
    config = dict(config)
    planner = dict(config.get("planner") or {})
    moved = {k: planner.pop(k) for k in MOVED_TO_CONTROLLER if k in planner}
    if not moved:
        return config
    config["planner"] = planner
    config["controller"] = {**moved, **(config.get("controller") or {})}
    return config


def _require_positive_int(name: str, value: object, section: str = "planner") -> None:
    _require_int_at_least(name, value, 1, section)


def _require_int_at_least(name: str, value: object, low: int, section: str = "planner") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TtrlError(f"{section} {name}={value!r} must be an integer >= {low}")
