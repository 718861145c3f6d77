"""Evaluation stage: MuJoCo rollouts planned in one batch, normalised scores, results files, plots, video."""

from ttrl.evaluation.config import PlanConfig, validate_plan_config
from ttrl.evaluation.loading import (
    PlanningInputs,
    evaluation_spec,
    load_checkpoint_with_dataset,
    load_run,
    planner_config_from,
    planning_settings,
)
from ttrl.evaluation.report import plot_predictions, results_dict, write_results
from ttrl.evaluation.rollout import EpisodeResults, check_spaces, evaluate, make_env
from ttrl.evaluation.runner import (
    command_line_overrides,
    command_line_planner_overrides,
    evaluate_training_run,
    evaluation_settings,
    load_inputs,
    plan_output_dir,
    register_resolvers,
    run_planning,
    stopped_exit_code,
)
from ttrl.evaluation.scores import (
    EpisodeResult,
    aggregate,
    mean_and_standard_error,
    realised_values,
)
from ttrl.evaluation.store import EpisodeStore

__all__ = [
    "EpisodeResult",
    "EpisodeResults",
    "EpisodeStore",
    "PlanConfig",
    "PlanningInputs",
    "aggregate",
    "check_spaces",
    "command_line_overrides",
    "command_line_planner_overrides",
    "evaluate",
    "evaluate_training_run",
    "evaluation_settings",
    "evaluation_spec",
    "load_checkpoint_with_dataset",
    "load_inputs",
    "load_run",
    "make_env",
    "mean_and_standard_error",
    "plan_output_dir",
    "planner_config_from",
    "planning_settings",
    "plot_predictions",
    "realised_values",
    "register_resolvers",
    "results_dict",
    "run_planning",
    "stopped_exit_code",
    "validate_plan_config",
    "write_results",
]
