"""Rollouts: N MuJoCo episodes planned together in one beam-search batch.

Every episode starts at the same time, so the episodes still running always share their step
count and their planning prefixes have the same length: one ``BeamPlanner.plan`` call over the
running episodes decides all of them. Episodes that end (terminated or truncated) drop out of the
batch and the rest go on. Between replans (``controller.plan_freq`` > 1) each episode executes the next
action of its current plan.

Episode ``i`` depends on nothing but its index: its env is reset with ``seed + i`` and the planner
draws its random numbers from its own generator, seeded with ``seed + i``. So any subset of the
episodes (those an interrupted evaluation did not finish) plans exactly as in the full batch.

**Goal reaching.** A goal-conditioned model (``goal_dim > 0``, trained with ``data.goal``) plans
in an env with dict observations (PointMaze): the model's observation tokens come from the
``observation`` field, and the goal from ``desired_goal``, read again after every step and encoded
with the run's goal discretiser before each plan (:func:`split_observation`). The env is made
episodic (:func:`make_goal_env`, ``continuing_task=False``): the datasets were collected in the
continuing task, where the env moves the goal each time it is reached, but an evaluation episode
ends at its first success. Success is the env's own ``info["success"]``; each episode records it
and the step it first held (``steps_to_goal``), and the aggregates its rate ± standard error.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ttrl.data import DatasetSpec
from ttrl.data.preprocess import DISCOUNT, TERMINATION_PENALTY
from ttrl.errors import TtrlError
from ttrl.evaluation.camera import tracking_render_kwargs
from ttrl.evaluation.scores import EpisodeResult, aggregate, realised_values
from ttrl.evaluation.video import VideoRecorder, prefer_headless_rendering, warn_video_disabled

EnvFactory = Callable[[str, int | None, bool], Any]
OBSERVATION_KEY, GOAL_KEY = "observation", "desired_goal"  # a goal env's dict observation fields
PATH_DECIMALS = 4  # goal episodes' recorded paths (EpisodeResult.observations, ...)


def make_env(
    env_id: str, max_episode_steps: int | None = None, render: bool = False, **env_kwargs: Any
) -> Any:
    """A gymnasium env; ``max_episode_steps`` None keeps the env's own limit (1000 for MuJoCo).

    With ``render`` the env renders ``rgb_array`` frames offscreen (see
    :func:`~ttrl.evaluation.video.prefer_headless_rendering`); if that cannot work, one warning
    says so and the env is made without rendering. ``env_kwargs`` go to ``gym.make``.
    """
    import gymnasium as gym

    kwargs: dict[str, Any] = dict(env_kwargs)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if render:
        prefer_headless_rendering()
        try:
            return gym.make(
                env_id, render_mode="rgb_array", **kwargs, **tracking_render_kwargs(env_id)
            )
        except gym.error.Error as err:
            raise TtrlError(f"cannot make environment {env_id!r}: {err}") from err
        except Exception as err:  # no usable OpenGL: plan without a video
            warn_video_disabled(err)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise TtrlError(f"cannot make environment {env_id!r}: {err}") from err
    except (ImportError, AttributeError) as err:
        if not os.environ.get("MUJOCO_GL"):
            raise
        # MuJoCo loads the MUJOCO_GL backend on import, even for envs that never render
        raise TtrlError(
            f"cannot load MuJoCo with MUJOCO_GL={os.environ['MUJOCO_GL']} ({type(err).__name__}: "
            f"{err}); unset MUJOCO_GL or set it to a backend this machine has (egl, osmesa, glfw)"
        ) from err


def make_goal_env(
    env_id: str, max_episode_steps: int | None = None, render: bool = False, **env_kwargs: Any
) -> Any:
    """:func:`make_env` for goal-reaching evaluation: gymnasium-robotics' maze envs (PointMaze,
    AntMaze and ttrl's four rooms) are made episodic, ``continuing_task=False``, so an episode ends
    when its goal is reached (the datasets' continuing task would move the goal instead, or keep
    paying the reward while the agent stays there)."""
    from ttrl.making.maze import register_maze_envs

    register_maze_envs()  # gymnasium-robotics' ids and ttrl's PointMaze_FourRooms
    kwargs = {"continuing_task": False, **env_kwargs} if _is_maze_env(env_id) else env_kwargs
    return make_env(env_id, max_episode_steps, render, **kwargs)


def env_factory_for(spec: DatasetSpec) -> EnvFactory:
    """How evaluation makes ``spec``'s env: with the dataset's ``env_kwargs`` (AntMaze's observation
    size), and episodic for maze envs (:func:`make_goal_env`), for every agent alike."""
    if spec.env_id is not None and _is_maze_env(spec.env_id):
        return functools.partial(make_goal_env, **spec.env_kwargs)
    return functools.partial(make_env, **spec.env_kwargs)


def _is_maze_env(env_id: str) -> bool:
    import gymnasium as gym

    from ttrl.making.maze import register_maze_envs

    if env_id not in gym.registry:  # the maze ids are gymnasium-robotics' (and ttrl's four rooms)
        register_maze_envs()
    try:
        entry_point = str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return False  # make_env reports the unknown id
    return "gymnasium_robotics.envs.maze" in entry_point


def split_observation(
    observation: Any, observe_goal: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(observation, goal)`` float32 of an env's observation: a dict's ``observation`` and
    ``desired_goal`` fields (PointMaze; goal None when the dict has none), or a flat array and None.

    ``observe_goal`` (a run trained with ``data.observe_goal``): the observation is followed by the
    goal, as in its training data (:func:`ttrl.data.goals.observe_desired_goal`)."""
    if isinstance(observation, Mapping):
        goal = observation.get(GOAL_KEY)
        goal = None if goal is None else np.asarray(goal, dtype=np.float32)
        seen = np.asarray(observation[OBSERVATION_KEY], dtype=np.float32)
        if observe_goal and goal is not None:
            seen = np.concatenate([seen, goal])
        return seen, goal
    return np.asarray(observation, dtype=np.float32), None


@dataclass
class EpisodeResults:
    """What :func:`evaluate` measured: one :class:`EpisodeResult` per episode, scores, timing.

    ``reference`` holds the reference returns used for normalising (``min``, ``max``, ``source``).
    ``timing``: ``wall_seconds``, ``plan_seconds`` (inside the planner), ``planner_calls``,
    ``decisions`` (one per running episode per planner call), ``decisions_per_second``
    (= decisions / plan_seconds), ``env_steps`` and ``env_steps_per_second`` (over the wall time).
    ``n_episodes`` is how many episodes were asked for (None: as many as ``episodes`` holds); fewer
    finished ones mean the evaluation was stopped early (``stopped_by``: the signal, if one did).
    """

    episodes: list[EpisodeResult]
    env_id: str
    dataset: str
    reference: dict[str, Any]
    timing: dict[str, float]
    video_path: Path | None = None
    n_episodes: int | None = None
    stopped_by: int | None = None

    @property
    def complete(self) -> bool:
        """True when every episode asked for finished."""
        return self.n_episodes is None or len(self.episodes) >= self.n_episodes

    @property
    def aggregates(self) -> dict[str, Any]:
        """Mean ± standard error of return, normalised score and length (and success rate, for
        goal reaching)."""
        return aggregate(self.episodes)

    def summary(self) -> str:
        """One line: env, episodes, success rate or normalised score mean ± se (or return),
        decisions/s."""
        agg = self.aggregates
        if not agg["n_episodes"]:
            score = "no score"
        elif "success_rate" in agg:
            rate = _mean_se(100 * agg["success_rate"], 100 * agg["success_rate_se"])
            score = f"success {agg['n_success']}/{agg['n_episodes']} ({rate} %)"
        elif agg["normalized_score_mean"] is not None:
            score = f"score {_mean_se(agg['normalized_score_mean'], agg['normalized_score_se'])}"
        else:
            score = "score n/a (no reference scores)"
        count = str(agg["n_episodes"])
        if not self.complete:
            count += f" of {self.n_episodes}"
        returns = ""
        if agg["n_episodes"]:
            returns = f", return {_mean_se(agg['return_mean'], agg['return_se'])}"
        return (
            f"{self.dataset} ({self.env_id}): {count} episodes, {score}{returns}, "
            f"{self.timing.get('decisions_per_second', 0.0):.2f} decisions/s"
        )


def _mean_se(mean: float, se: float) -> str:
    return f"{mean:.1f} ± {se:.1f}" if math.isfinite(se) else f"{mean:.1f} (one episode, no se)"


def check_spaces(
    env: Any,
    env_id: str,
    observation_dim: int,
    action_dim: int,
    goal_dim: int = 0,
    observe_goal: bool = False,
) -> None:
    """TtrlError naming both sides if the env's observation/action sizes differ from the model's.

    A dict observation space is sized by its ``observation`` field; a goal-conditioned model
    (``goal_dim > 0``) needs a ``desired_goal`` field of ``goal_dim`` numbers too. With
    ``observe_goal`` the model's observations are that field and the goal together.
    """
    env_obs, env_goal = _observation_sizes(env, env_id)
    if observe_goal:
        if env_goal is None:
            raise TtrlError(
                f"the run sees its goal in its observations (data.observe_goal=true) but "
                f"environment {env_id} gives no goal (no dict observation with a {GOAL_KEY!r} "
                f"field); plan it in its dataset's goal env (e.g. env=pointmaze-medium)"
            )
        env_obs += env_goal
    if goal_dim and env_goal is None:
        raise TtrlError(
            f"the model is goal-conditioned ({goal_dim} goal tokens) but environment {env_id} "
            f"gives no goal (no dict observation with a {GOAL_KEY!r} field); plan it in the goal "
            f"env of its dataset, e.g. a PointMaze one (env=pointmaze-umaze)"
        )
    if goal_dim and env_goal != goal_dim:
        raise TtrlError(
            f"environment {env_id} has {env_goal}-dim goals but the model expects {goal_dim}; "
            f"evaluate on the dataset's environment the model was trained on"
        )
    env_act = int(np.prod(env.action_space.shape))
    if (env_obs, env_act) != (observation_dim, action_dim):
        raise TtrlError(
            f"environment {env_id} has observation dim {env_obs} and action dim {env_act} but the model "
            f"expects observation dim {observation_dim} and action dim {action_dim}; "
            f"evaluate on the dataset's environment the model was trained on"
        )


def _observation_sizes(env: Any, env_id: str) -> tuple[int, int | None]:
    """The env's observation size and goal size (None without a goal field)."""
    space = env.observation_space
    fields = getattr(space, "spaces", None)
    if not isinstance(fields, Mapping):
        return int(np.prod(space.shape)), None
    if OBSERVATION_KEY not in fields:
        raise TtrlError(
            f"environment {env_id} has dict observations without an {OBSERVATION_KEY!r} field "
            f"(it holds {', '.join(sorted(fields))}); ttrl plans from that field"
        )
    goal = fields.get(GOAL_KEY)
    return (
        int(np.prod(fields[OBSERVATION_KEY].shape)),
        None if goal is None else int(np.prod(goal.shape)),
    )


@dataclass
class _Episode:
    """The running state of one episode: ``index`` in the evaluation, ``row`` in this batch.

    ``goal`` is the env's current desired goal (None for envs without goals); ``success`` is None
    for those envs, else whether the env reported success after some step. Goal episodes keep
    their path: the observations seen, and each plan's step and predicted observations.
    """

    index: int
    row: int
    seed: int
    env: Any
    observation: np.ndarray
    goal: np.ndarray | None = None
    observe_goal: bool = False  # the observation holds the goal too (data.observe_goal)
    success: bool | None = None
    steps_to_goal: int | None = None
    rewards: list[float] = field(default_factory=list)
    predicted_rewards: list[float] = field(default_factory=list)
    predicted_values: list[float] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    stop_actions: int = 0  # steps whose planned action held the stop token
    start_goal: np.ndarray | None = None
    path: list[np.ndarray] = field(default_factory=list)
    plan_steps: list[int] = field(default_factory=list)
    planned: list[np.ndarray] = field(default_factory=list)

    @property
    def keeps_path(self) -> bool:
        """Whether this episode records its path (goal episodes: the maze picture)."""
        return self.success is not None

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def observe(self, observation: Any, info: Mapping[str, Any]) -> None:
        """Take the env's observation after a step (and its goal, which the env may have moved),
        and the first step at which ``info["success"]`` held."""
        self.observation, self.goal = split_observation(observation, self.observe_goal)
        if self.keeps_path:
            self.path.append(self.observation)
        if self.success is False and info.get("success"):
            self.success, self.steps_to_goal = True, len(self.rewards)


def evaluate(
    model: torch.nn.Module,
    discretizer: Any,
    planner_config: Any,
    spec: DatasetSpec,
    n_episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
    video_path: str | Path | None = None,
    value_discount: float = DISCOUNT,
    termination_penalty: float = TERMINATION_PENALTY,
    env_factory: EnvFactory | None = None,
    progress: bool = True,
    episodes: Sequence[int] | None = None,
    on_episode_end: Callable[[EpisodeResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    goal_discretizer: Any | None = None,
    observe_goal: bool = False,
    controller_config: Any | None = None,
) -> EpisodeResults:
    """Roll out ``n_episodes`` episodes with the beam-search planner, all planned in one batch.

    Args:
        model: a trained :class:`~ttrl.model.TrajectoryTransformer` (set to eval mode here).
        discretizer: the :class:`~ttrl.discretization.Discretizer` the model was trained with.
        planner_config: a :class:`~ttrl.planning.PlannerConfig`.
        spec: the dataset the model was trained on: its ``env_id`` and reference scores.
        n_episodes: episodes of the evaluation; episode ``i`` resets its env with ``seed + i``
            and seeds its planner's generator with ``seed + i``.
        seed: base seed of the envs and of the planner's sampling.
        max_episode_steps: step limit per episode; None keeps the env's (1000 for MuJoCo).
        video_path: if set, episode 0 is rendered offscreen into this MP4 (saved as it ends).
        value_discount, termination_penalty: how realised values are computed for the
            predicted-vs-realised comparison (the training targets' conventions).
        env_factory: ``(env_id, max_episode_steps, render) -> env``; tests pass wrapped envs.
            None: :func:`env_factory_for` the dataset (episodic for maze envs).
        progress: show tqdm bars over steps and episodes.
        episodes: the indices to plan (default: all ``n_episodes``); each plans as in the full batch.
        on_episode_end: called with each episode's result as soon as it ends (to save it).
        should_stop: checked before every step; when it returns True the rollout stops and the
            unfinished episodes are dropped (the result then holds fewer than asked for).
        goal_discretizer: the goal dims' discretiser of a goal-conditioned model (required for
            one, :attr:`~ttrl.evaluation.PlanningInputs.goal_discretizer`): it encodes the env's
            ``desired_goal`` into the goal tokens planned toward (see the module docstring).
        observe_goal: the model was trained with ``data.observe_goal``: its observations are the
            env's ``observation`` followed by its ``desired_goal``.
        controller_config: a :class:`~ttrl.planning.ControllerConfig`: the context given to the
            planner and how often it replans (default: the paper's, 5 transitions, every step).

    Raises:
        TtrlError: bad episode indices, a dataset without an env, env spaces that do not fit the
            model, or a goal model without its goal discretiser or without goals in the env.
    """
    from ttrl.planning import BeamPlanner, ControllerConfig

    if n_episodes < 1:
        raise TtrlError(f"n_episodes must be at least 1, got {n_episodes}")
    indices = list(range(n_episodes)) if episodes is None else sorted(set(episodes))
    if not indices or not 0 <= indices[0] <= indices[-1] < n_episodes:
        raise TtrlError(f"episodes {indices} must be a non-empty subset of 0..{n_episodes - 1}")
    if spec.env_id is None:
        raise TtrlError(
            f"dataset {spec.name!r} names no environment to evaluate in; use a D4RL-style name "
            f"or a Minari dataset whose metadata has an env_spec"
        )
    goal_dim = model.config.goal_dim
    _check_goal_discretizer(goal_dim, goal_discretizer)
    model.eval()
    # Made before any env so a bad planner setting (horizon, beam width) fails at once.
    planner = BeamPlanner(model, discretizer, planner_config)
    controller_config = controller_config or ControllerConfig()
    planner_config.check_fits_model(
        model.config.block_size, model.config.layout, controller_config.context_transitions
    )
    observation_dim, action_dim = model.config.observation_dim, model.config.action_dim
    if env_factory is None:
        env_factory = env_factory_for(spec)
    running = _start_episodes(
        env_factory,
        spec.env_id,
        indices,
        seed,
        max_episode_steps,
        video_path is not None,
        observation_dim,
        action_dim,
        goal_dim,
        observe_goal,
    )
    first = running[0]
    renders = first.index == 0 and getattr(first.env, "render_mode", None) == "rgb_array"
    recorder = VideoRecorder(first.env, video_path) if video_path and renders else None
    if recorder is not None:
        recorder.capture()
    finished: list[EpisodeResult] = []
    saved_video: list[Path] = []

    def episode_ended(episode: _Episode) -> None:
        if recorder is not None and episode.index == 0:  # the video is whole before its episode
            path = recorder.close()
            saved_video.extend([path] if path else [])
        result = _finish(episode, spec, value_discount, termination_penalty)
        finished.append(result)
        if on_episode_end is not None:
            on_episode_end(result)

    try:
        timing = _run_episodes(
            planner,
            controller_config,
            discretizer,
            running,
            recorder,
            observation_dim,
            action_dim,
            progress,
            episode_ended,
            should_stop,
            goal_discretizer,
        )
    finally:  # also on Ctrl-C: no half-written video, no open renderers
        if recorder is not None:
            recorder.discard()
        for episode in running:
            episode.env.close()
    n_stop = sum(e.stop_actions for e in finished)
    if n_stop:
        warnings.warn(
            f"{n_stop} executed actions held the stop token (the model predicted the episode's end; "
            f"the planner executes it as the last bin); see stop_actions in results.csv",
            RuntimeWarning,
            stacklevel=2,
        )
    return EpisodeResults(
        episodes=sorted(finished, key=lambda e: e.episode),
        env_id=spec.env_id,
        dataset=spec.name,
        reference={"min": spec.ref_min_score, "max": spec.ref_max_score, "source": spec.ref_source},
        timing=timing,
        video_path=saved_video[0] if saved_video else None,
        n_episodes=len(indices),
    )


def _check_goal_discretizer(goal_dim: int, goal_discretizer: Any | None) -> None:
    """One line if a goal model lacks its goal discretiser, or the discretiser does not fit."""
    if goal_dim and goal_discretizer is None:
        raise TtrlError(
            f"the model is goal-conditioned ({goal_dim} goal tokens): pass goal_discretizer= (the "
            f"run's, PlanningInputs.goal_discretizer from load_run) to encode the env's goals"
        )
    if goal_discretizer is not None and goal_discretizer.transition_dim != goal_dim:
        raise TtrlError(
            f"goal_discretizer has {goal_discretizer.transition_dim} dims but the model takes "
            f"{goal_dim} goal tokens; pass the goal discretiser of the model's run"
        )


def _start_episodes(
    env_factory: EnvFactory,
    env_id: str,
    indices: list[int],
    seed: int,
    max_episode_steps: int | None,
    render_first: bool,
    observation_dim: int,
    action_dim: int,
    goal_dim: int = 0,
    observe_goal: bool = False,
) -> list[_Episode]:
    episodes = []
    for row, i in enumerate(indices):
        env = env_factory(env_id, max_episode_steps, render_first and i == 0)
        check_spaces(env, env_id, observation_dim, action_dim, goal_dim, observe_goal)
        observation, goal = split_observation(env.reset(seed=seed + i)[0], observe_goal)
        # an env with goals scores success (False until reached); locomotion keeps None
        success = None if goal is None else False
        episode = _Episode(
            i,
            row,
            seed + i,
            env,
            observation,
            goal,
            observe_goal=observe_goal,
            success=success,
            start_goal=goal,
        )
        if episode.keeps_path:
            episode.path.append(observation)
        episodes.append(episode)
    return episodes


def _run_episodes(
    planner: Any,
    controller_config: Any,
    discretizer: Any,
    episodes: list[_Episode],
    recorder: VideoRecorder | None,
    observation_dim: int,
    action_dim: int,
    progress: bool,
    episode_ended: Callable[[_Episode], None],
    should_stop: Callable[[], bool] | None,
    goal_discretizer: Any | None = None,
) -> dict[str, float]:
    """Step every episode until all are done (or ``should_stop``); returns the timing numbers.

    With ``goal_discretizer`` each plan goes toward the running episodes' current goals."""
    from ttrl.planning import PlanningContext

    device = _device_of(planner)
    context = PlanningContext(
        discretizer,
        observation_dim=observation_dim,
        action_dim=action_dim,
        n_envs=len(episodes),
        context_transitions=controller_config.context_transitions,
        device=device,
    )
    context.reset(np.stack([e.observation for e in episodes]))
    # One stream per episode: what it draws never depends on which episodes share its batch.
    generators = [torch.Generator(device=device).manual_seed(e.seed) for e in episodes]
    max_steps = max(_step_limit(e.env) or 0 for e in episodes) or None
    step_bar = tqdm(total=max_steps, desc="steps", unit="step", disable=not progress, leave=False)
    episode_bar = tqdm(
        total=len(episodes), desc="episodes", unit="ep", disable=not progress, leave=False
    )
    plan: tuple[np.ndarray, ...] = ()
    plan_rows: list[int] = []
    keep_paths = any(e.keeps_path for e in episodes)
    offset = 0
    n_decisions, n_calls, plan_seconds, steps = 0, 0, 0.0, 0
    start = time.perf_counter()
    try:
        while running := [e for e in episodes if not e.done]:
            if should_stop is not None and should_stop():
                break
            exhausted = not plan or offset + 1 >= plan[0].shape[1]
            if exhausted or steps % controller_config.plan_freq == 0:
                plan_rows, offset = [e.row for e in running], 0
                tic = time.perf_counter()
                found = planner.plan(
                    context.prefix(plan_rows),
                    generator=[generators[r] for r in plan_rows],
                    goals=_goal_tokens(goal_discretizer, running, device),
                )
                action_tokens = found.tokens[:, :, observation_dim : observation_dim + action_dim]
                stops = (action_tokens == discretizer.stop_token).any(dim=-1)
                # one transfer per plan: actions [n, H, A]; predicted rewards, values, stops [n, H];
                # for goal episodes the planned observations [n, H, S] too (the maze picture)
                planned = (
                    discretizer.decode(
                        found.tokens[:, :, :observation_dim], slice(0, observation_dim)
                    )
                    if keep_paths
                    else None
                )
                plan = tuple(
                    _numpy(x)
                    for x in (found.actions, found.rewards, found.values, stops, planned)
                    if x is not None
                )
                plan_seconds += time.perf_counter() - tic
                n_calls += 1
                n_decisions += len(plan_rows)
            else:
                offset += 1
            _step_all(running, plan, plan_rows, offset, context, recorder)
            steps += 1
            for episode in running:
                if episode.done:
                    episode_ended(episode)
            step_bar.update(1)
            step_bar.set_postfix(
                running=len(running), decisions_per_s=f"{n_decisions / max(plan_seconds, 1e-9):.2f}"
            )
            episode_bar.update(sum(e.done for e in running))
    finally:
        step_bar.close()
        episode_bar.close()
    wall = time.perf_counter() - start
    env_steps = sum(len(e.rewards) for e in episodes)
    return {
        "wall_seconds": wall,
        "plan_seconds": plan_seconds,
        "planner_calls": n_calls,
        "decisions": n_decisions,
        "decisions_per_second": n_decisions / plan_seconds if plan_seconds > 0 else 0.0,
        "env_steps": env_steps,
        "env_steps_per_second": env_steps / wall if wall > 0 else 0.0,
    }


def _goal_tokens(
    goal_discretizer: Any | None, running: list[_Episode], device: torch.device
) -> torch.Tensor | None:
    """The running episodes' current goals as long tokens ``[n, G]`` (None without goals)."""
    if goal_discretizer is None:
        return None
    goals = goal_discretizer.encode(np.stack([e.goal for e in running]))
    return torch.as_tensor(goals, dtype=torch.long, device=device)


def _step_all(
    running: list[_Episode],
    plan: tuple[np.ndarray, ...],
    plan_rows: list[int],
    offset: int,
    context: Any,
    recorder: VideoRecorder | None,
) -> None:
    """Execute each running episode's planned action at ``offset`` and record what happened."""
    actions, predicted_rewards, predicted_values, stops = plan[:4]
    row_of = {context_row: row for row, context_row in enumerate(plan_rows)}
    rows = [row_of[e.row] for e in running]
    executed = actions[rows, offset]
    for episode, row, action in zip(running, rows, executed, strict=True):
        if offset == 0 and episode.keeps_path:  # a new plan: keep what it predicted
            episode.plan_steps.append(len(episode.rewards))
            episode.planned.append(plan[4][row])
        episode.stop_actions += int(stops[row, offset])
        observation, reward, terminated, truncated, info = episode.env.step(action)
        episode.rewards.append(float(reward))
        episode.predicted_rewards.append(float(predicted_rewards[row, offset]))
        episode.predicted_values.append(float(predicted_values[row, offset]))
        episode.terminated, episode.truncated = bool(terminated), bool(truncated)
        episode.observe(observation, info)
        if recorder is not None and episode.index == 0:
            recorder.capture()
    context.append(
        [e.row for e in running],
        executed,
        np.array([e.rewards[-1] for e in running]),
        np.stack([e.observation for e in running]),
        done=[e.done for e in running],
    )


def _finish(
    episode: _Episode, spec: DatasetSpec, discount: float, termination_penalty: float
) -> EpisodeResult:
    total = float(np.sum(episode.rewards))
    has_refs = spec.ref_min_score is not None and spec.ref_max_score is not None
    # ending at the goal is no failure: the termination penalty is for the other terminations
    failed = episode.terminated and not episode.success
    values = realised_values(episode.rewards, failed, discount, termination_penalty)
    return EpisodeResult(
        episode=episode.index,
        seed=episode.seed,
        total_return=total,
        length=len(episode.rewards),
        terminated=episode.terminated,
        truncated=episode.truncated,
        normalized_score=float(spec.normalized_score(total)) if has_refs else None,
        stop_actions=episode.stop_actions,
        rewards=list(episode.rewards),
        predicted_rewards=episode.predicted_rewards,
        values=values.tolist(),
        predicted_values=episode.predicted_values,
        success=episode.success,
        steps_to_goal=episode.steps_to_goal,
        observations=[_rounded(x) for x in episode.path],
        goal=_rounded(episode.start_goal) if episode.start_goal is not None else [],
        plan_steps=list(episode.plan_steps),
        planned_observations=[_rounded(x) for x in episode.planned],
    )


def _rounded(x: Any) -> Any:
    """``x`` as nested lists of floats, to 4 decimals (paths in JSON stay small)."""
    return np.round(np.asarray(x, dtype=np.float64), PATH_DECIMALS).tolist()


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _device_of(planner: Any) -> torch.device:
    return next(planner.model.parameters()).device


def _step_limit(env: Any) -> int | None:
    spec = getattr(env, "spec", None)
    return getattr(spec, "max_episode_steps", None)
