"""Evaluation stage: MuJoCo rollouts planned in one batch, normalised scores, results files, plots, video."""

from ttrl.evaluation.loading import (
    PlanningInputs,
    evaluation_spec,
    load_checkpoint_with_dataset,
    load_run,
    planner_config_from,
)
from ttrl.evaluation.report import plot_predictions, results_dict, write_results
from ttrl.evaluation.rollout import EpisodeResults, check_spaces, evaluate, make_env
from ttrl.evaluation.runner import (
    command_line_planner_overrides,
    evaluate_training_run,
    load_inputs,
    plan_output_dir,
    register_resolvers,
    run_planning,
)
from ttrl.evaluation.scores import (
    EpisodeResult,
    aggregate,
    mean_and_standard_error,
    realised_values,
)

__all__ = [
    "EpisodeResult",
    "EpisodeResults",
    "PlanningInputs",
    "aggregate",
    "check_spaces",
    "command_line_planner_overrides",
    "evaluate",
    "evaluate_training_run",
    "evaluation_spec",
    "load_checkpoint_with_dataset",
    "load_inputs",
    "load_run",
    "make_env",
    "mean_and_standard_error",
    "plan_output_dir",
    "planner_config_from",
    "plot_predictions",
    "realised_values",
    "register_resolvers",
    "results_dict",
    "run_planning",
    "write_results",
]
