"""Planning stage: exact, cached, batched beam search over a trained Trajectory Transformer.

Example::

    from ttrl.planning import BeamPlanner, PlannerConfig, PlanningContext

    planner = BeamPlanner(model, discretizer, PlannerConfig(horizon=5, beam_width=32))
    context = PlanningContext(discretizer, observation_dim, action_dim, n_envs=len(envs))
    context.reset(observations)                              # [n_envs, S]
    plan = planner.plan(context.prefix(), generator=torch.Generator().manual_seed(0))
    actions = plan.first_actions                             # [n_envs, A], bin midpoints
    # ... step the envs, then
    context.append(context.active, actions, rewards, next_observations, done=dones)

``BeamPlanner`` reproduces the released beam search exactly (same plans from the same random
generator state as re-running the cropped window for every token) while feeding each sampled token
to the model once, with the context computed once per environment; ``use_cache=False`` runs the
released algorithm itself. ``python scripts/bench.py plan`` measures both.

``sample_rollout`` samples open-loop trajectories (or the consequences of given actions). It and
the beam search are both clients of one sampling API, :class:`RolloutState`: the rows' tokens,
their environments, and the model's window and cache over them, moved together. Plans are ranked
by a :class:`PlanScorer` chosen by name in ``PlannerConfig.objective`` (docs/scorers.md). What
the receding-horizon loop gives the planner, and how often it asks, is a
:class:`ControllerConfig`.
"""

from ttrl.planning.beam import BeamPlanner, Plan
from ttrl.planning.config import ControllerConfig, PlannerConfig
from ttrl.planning.context import PlanningContext
from ttrl.planning.rollouts import Rollout, Sampling, TokenFilter, sample_rollout
from ttrl.planning.scorers import (
    Candidates,
    LikelihoodScorer,
    PlanScorer,
    ReturnScorer,
    available_scorers,
    register_scorer,
)
from ttrl.planning.state import RolloutState

__all__ = [
    "BeamPlanner",
    "Candidates",
    "ControllerConfig",
    "LikelihoodScorer",
    "Plan",
    "PlanScorer",
    "PlannerConfig",
    "PlanningContext",
    "ReturnScorer",
    "Rollout",
    "RolloutState",
    "Sampling",
    "TokenFilter",
    "available_scorers",
    "register_scorer",
    "sample_rollout",
]
