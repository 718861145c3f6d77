"""``scripts/predict.py``: score a training run's open-loop predictions on its held-out episodes.

Loads the run and its dataset, spreads start points over the episodes it held out, predicts
``horizon`` steps from each with the transformer (and the Gaussian ensemble baseline), and writes
``predictions.json``/``.csv``, a plot of log-likelihood and RMSE against the horizon, and a picture
of one predicted trajectory beside the real one. Batches of start points are saved as they finish,
so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ttrl.checkpoint import load_bundle, save_bundle
from ttrl.data.masking import hidden_observation_dims
from ttrl.data.pipeline import load_preprocessed, preprocessing_settings
from ttrl.devices import resolve_device
from ttrl.errors import TtrlError
from ttrl.evaluation.loading import load_run
from ttrl.evaluation.runner import run_output_dir
from ttrl.io import atomic_write_json, atomic_write_text, remove_stale_temp_files
from ttrl.locking import hold_plan_dir
from ttrl.prediction.config import validate_predict_config
from ttrl.prediction.data import (
    PredictionData,
    StartWindows,
    prediction_data,
    spread_start_points,
    start_windows,
)
from ttrl.prediction.metrics import mean_and_standard_error
from ttrl.prediction.predictors import (
    EnsemblePredictor,
    OpenLoopPredictor,
    StepScores,
    TransformerPredictor,
)

PREDICT_SUBDIR = "predict"  # predictions of a training run live in <run_dir>/predict/<name>/
RESULTS_FILE = "predictions.json"
BASELINES_SUBDIR = "baselines"  # fitted baselines, reused by later predictions of the run
REPORTED_STEPS = (1, 10, 25, 50, 100)  # horizon steps summarised in the JSON's "summary"
# settings that change the numbers (a folder's results are refused under other ones)
SCORED_SETTINGS = (
    "which", "actions", "horizon", "context", "n_starts", "n_samples", "episodes", "seed",
    "baseline", "ensemble", "bc", "batch_starts",
)  # fmt: skip


def predict_output_dir(run_dir: str | None, name: str) -> str:
    """``<run_dir>/predict/<name>`` (the newest training run's without ``run_dir``)."""
    return run_output_dir(run_dir, None, name, PREDICT_SUBDIR)


def register_resolvers() -> None:
    """Register ``ttrl.predict_dir`` (configs/predict.yaml's Hydra run dir); idempotent."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("ttrl.predict_dir"):
        OmegaConf.register_new_resolver("ttrl.predict_dir", predict_output_dir)


def prediction_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a folder's results depend on."""
    settings = {k: cfg.get(k) for k in SCORED_SETTINGS}
    settings["run_dir"] = str(Path(cfg["run_dir"]).resolve())
    return settings


def settings_digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_prediction(
    cfg: Mapping[str, Any], out_dir: str | Path, on_checked: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Predict, score and write every output into ``out_dir``; returns the results document."""
    validate_predict_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with hold_plan_dir(out_dir):
        remove_stale_temp_files(out_dir)
        settings = prediction_settings(cfg)
        digest = settings_digest(settings)
        _refuse_other_settings(out_dir, digest, bool(cfg.get("overwrite")))
        if on_checked is not None:
            on_checked()
        return _predict(cfg, out_dir, settings, digest)


def _refuse_other_settings(out_dir: Path, digest: str, overwrite: bool) -> None:
    """Results of other settings in ``out_dir`` are kept unless ``overwrite``."""
    results = out_dir / RESULTS_FILE
    parts = sorted((out_dir / "parts").glob("*.safetensors"))
    found = []
    if results.exists():
        found.append(json.loads(results.read_text()).get("digest"))
    found += [(load_bundle(p).get("digest")) for p in parts[:1]]
    if any(d != digest for d in found):
        if not overwrite:
            raise TtrlError(
                f"{out_dir} holds predictions made with other settings; pass name=<another "
                f"folder>, or overwrite=true to replace them"
            )
        results.unlink(missing_ok=True)
        for part in parts:
            part.unlink()


def _predict(
    cfg: Mapping[str, Any], out_dir: Path, settings: dict[str, Any], digest: str
) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(cfg.get("device", "auto"))
    inputs = load_run(cfg["run_dir"], which=cfg["which"], map_location=device)
    model, discretizer = inputs.model.to(device), inputs.discretizer
    data_cfg = inputs.train_config.get("data") or {}
    trajectories = load_preprocessed(
        inputs.dataset, source=data_cfg.get("source", "auto"), **preprocessing_settings(data_cfg)
    )
    layout = model.config.layout
    if trajectories.transition_dim != layout.transition_dim:
        raise TtrlError(
            f"dataset {inputs.dataset} has transition dim {trajectories.transition_dim} but run "
            f"{cfg['run_dir']} was trained on {layout.transition_dim}; rebuild the dataset it used"
        )
    data = prediction_data(trajectories, discretizer, inputs.train_config, cfg["episodes"])
    fitting = layout.transitions_fitting(model.config.block_size)
    context = _context(cfg.get("context"), fitting)
    horizon, feed_data = cfg["horizon"], cfg["actions"] == "data"
    # starts leave room for the longest context the model takes, so that every context of a run
    # (full, Markovian) is scored on the same start points
    starts = spread_start_points(data, fitting - 1, horizon, cfg["n_starts"], cfg["actions"])
    windows = start_windows(data, starts, context, horizon)
    S = layout.observation_dim
    hidden = hidden_observation_dims(S, data_cfg.get("hidden_observation_fraction", 0.0) or 0.0)
    scored = [d for d in range(S) if d not in hidden]
    predictors: list[OpenLoopPredictor] = [
        TransformerPredictor(model, discretizer, context, scored, hidden)
    ]
    if cfg.get("baseline", True):
        predictors.append(_ensemble_predictor(cfg, data, scored, hidden, feed_data))
    scores = {
        p.name: _scores_in_batches(p, windows, cfg, feed_data, out_dir, digest) for p in predictors
    }
    results = _results_document(
        cfg, settings, digest, inputs, data, starts, context, scored, hidden, scores
    )
    results["wall_time_s"] = round(time.perf_counter() - started, 1)
    _write_outputs(out_dir, results, scores, windows, inputs, cfg)
    return results


def _context(context: int | None, fitting: int) -> int:
    """Real transitions before each start: the model must see ``context + 1`` transitions."""
    if context is None:
        return fitting - 1
    if context + 1 > fitting:
        raise TtrlError(
            f"context={context} needs the model to see {context + 1} transitions, but its block "
            f"holds {fitting}; use context <= {fitting - 1}"
        )
    return context


def _ensemble_predictor(
    cfg: Mapping[str, Any],
    data: PredictionData,
    scored: list[int],
    hidden: tuple[int, ...],
    feed_data: bool,
) -> EnsemblePredictor:
    """The ensemble (and BC policy for ``actions=model``), fit on the run's training episodes
    with the hidden dims zeroed, or loaded from ``<run_dir>/baselines/`` when fit before."""
    from ttrl.baselines import (
        BCConfig,
        BCPolicy,
        EnsembleConfig,
        GaussianEnsemble,
        train_bc,
        train_ensemble,
    )

    arrays = data.transitions(data.training_episodes)
    for key in ("observations", "next_observations"):
        arrays[key][:, list(hidden)] = 0.0
    folder = Path(cfg["run_dir"]) / BASELINES_SUBDIR
    ensemble_config = EnsembleConfig(**cfg.get("ensemble", {}))
    key = _baseline_key(cfg["run_dir"], data, hidden, ensemble_config)
    ensemble = _fit_or_load(
        folder / f"ensemble-{key}.safetensors",
        GaussianEnsemble.load,
        lambda: train_ensemble(
            arrays["observations"],
            arrays["actions"],
            arrays["next_observations"],
            arrays["rewards"],
            ensemble_config,
            progress=cfg.get("progress", True),
        )[0],
    )
    policy = None
    if not feed_data:
        bc_config = BCConfig(**cfg.get("bc", {}))
        policy = _fit_or_load(
            folder / f"bc-{_baseline_key(cfg['run_dir'], data, hidden, bc_config)}.safetensors",
            BCPolicy.load,
            lambda: train_bc(
                arrays["observations"], arrays["actions"], bc_config, progress=cfg["progress"]
            )[0],
        )
    return EnsemblePredictor(ensemble, scored, policy=policy, hidden_dims=hidden)


def _baseline_key(run_dir: str, data: PredictionData, hidden: tuple, config: Any) -> str:
    """What a fitted baseline depends on: its settings, the training episodes and hidden dims."""
    blob = json.dumps(
        {
            "config": vars(config),
            "episodes": data.training_episodes.tolist(),
            "hidden": list(hidden),
            "rows": len(data.trajectories),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _fit_or_load(path: Path, load: Callable[[Path], Any], fit: Callable[[], Any]) -> Any:
    if path.exists():
        return load(path)
    model = fit()
    model.save(path)
    return model


def _scores_in_batches(
    predictor: OpenLoopPredictor,
    windows: StartWindows,
    cfg: Mapping[str, Any],
    feed_data: bool,
    out_dir: Path,
    digest: str,
) -> StepScores:
    """Predict ``batch_starts`` start points at a time; each finished batch is saved and reused."""
    n, size = windows.observations.shape[0], cfg["batch_starts"]
    batches = range(0, n, size)
    parts = []
    bar = tqdm(
        batches,
        desc=f"predict {predictor.name}",
        unit="batch",
        disable=not cfg.get("progress", True),
    )
    for index, begin in enumerate(bar):
        path = out_dir / "parts" / f"{predictor.name}-{index:04d}.safetensors"
        if path.exists():
            parts.append(_load_part(path))
            continue
        # each batch draws from its own stream, so a resumed run gives the same numbers
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([cfg["seed"], index]).generate_state(1)[0])
        )
        batch = _batch(windows, slice(begin, begin + size))
        part = predictor.predict(batch, cfg["horizon"], cfg["n_samples"], feed_data, generator)
        _save_part(path, part, digest)
        parts.append(part)
    return StepScores.joined(parts)


def _batch(windows: StartWindows, rows: slice) -> StartWindows:
    return StartWindows(
        context=windows.context[rows],
        observations=windows.observations[rows],
        actions=windows.actions[rows],
        next_observations=windows.next_observations[rows],
    )


def _save_part(path: Path, part: StepScores, digest: str) -> None:
    tensors = {"log_likelihood": part.log_likelihood, "rmse": part.rmse, "example": part.example}
    if part.oracle is not None:
        tensors["oracle"] = part.oracle
    tensors = {k: v.cpu().contiguous() for k, v in tensors.items()}
    extra = {k: v.cpu().contiguous() for k, v in part.extra.items()}
    save_bundle(path, digest=digest, extra=extra, **tensors)


def _load_part(path: Path) -> StepScores:
    bundle = load_bundle(path)
    return StepScores(
        log_likelihood=bundle["log_likelihood"],
        rmse=bundle["rmse"],
        oracle=bundle.get("oracle"),
        example=bundle["example"],
        extra=bundle.get("extra") or {},
    )


def _per_step(scores: StepScores) -> dict[str, list[float]]:
    """Mean ± standard error over start points at every step, as JSON lists."""
    table = {}
    metrics = {"log_likelihood": scores.log_likelihood, "rmse": scores.rmse, **scores.extra}
    if scores.oracle is not None:
        metrics["oracle_log_likelihood"] = scores.oracle
    for key, values in metrics.items():
        mean, se = mean_and_standard_error(values)
        table[f"{key}_mean"] = [_number(v) for v in mean]
        table[f"{key}_se"] = [_number(v) for v in se]
    return table


def _number(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def _summary(per_step: dict[str, list[float]], horizon: int) -> dict[str, Any]:
    """The per-step means at a few horizons, and averaged over all steps."""
    summary: dict[str, Any] = {}
    for key, values in per_step.items():
        if not key.endswith("_mean"):
            continue
        finite = [v for v in values if v is not None]
        summary[f"{key}_over_horizon"] = _number(np.mean(finite)) if finite else None
        for step in REPORTED_STEPS:
            if step <= horizon:
                summary[f"{key}_at_{step}"] = values[step - 1]
    return summary


def _results_document(
    cfg: Mapping[str, Any],
    settings: dict[str, Any],
    digest: str,
    inputs: Any,
    data: PredictionData,
    starts: Any,
    context: int,
    scored: list[int],
    hidden: tuple[int, ...],
    scores: dict[str, StepScores],
) -> dict[str, Any]:
    models = {}
    for name, step_scores in scores.items():
        per_step = _per_step(step_scores)
        models[name] = {"per_step": per_step, "summary": _summary(per_step, cfg["horizon"])}
    baseline_note = None
    if "ensemble" in scores:
        baseline_note = "ensemble of Gaussian MLPs; actions " + (
            "from the data" if cfg["actions"] == "data" else "from a behaviour-cloning MLP"
        )
    return {
        "digest": digest,
        "settings": settings,
        "dataset": inputs.dataset,
        "checkpoint": str(inputs.source),
        "context": context,
        "model_window_transitions": context + 1,
        "n_starts": len(starts),
        "n_scored_episodes": len(np.unique(starts.episodes)),
        "episodes": cfg["episodes"],
        "start_points": [
            {"episode": int(e), "step": int(t)}
            for e, t in zip(starts.episodes, starts.steps, strict=True)
        ],
        "scored_observation_dims": scored,
        "hidden_observation_dims": list(hidden),
        "baseline": baseline_note,
        "models": models,
    }


def _write_outputs(
    out_dir: Path,
    results: dict[str, Any],
    scores: dict[str, StepScores],
    windows: StartWindows,
    inputs: Any,
    cfg: Mapping[str, Any],
) -> None:
    from ttrl.prediction.plots import plot_prediction_curves

    if cfg.get("render", True):
        _render_example(out_dir, scores, windows, inputs.dataset, results)
    plot_prediction_curves([(None, results)], out_dir / "predictions.png")
    atomic_write_text(out_dir / "predictions.csv", predictions_csv(results))
    atomic_write_json(out_dir / RESULTS_FILE, results)  # last: its presence means complete
    _log_to_wandb(out_dir, results, cfg, inputs)


def predictions_csv(results: Mapping[str, Any]) -> str:
    """One row per model and horizon step."""
    models = results["models"]
    keys = sorted({k for m in models.values() for k in m["per_step"]})
    lines = [",".join(["model", "step", *keys])]
    for name, model in models.items():
        per_step = model["per_step"]
        steps = len(next(iter(per_step.values())))
        for step in range(steps):
            cells = [per_step.get(k, [None] * steps)[step] for k in keys]
            lines.append(
                ",".join([name, str(step + 1), *("" if c is None else str(c) for c in cells)])
            )
    return "\n".join(lines) + "\n"


def _render_example(
    out_dir: Path,
    scores: dict[str, StepScores],
    windows: StartWindows,
    dataset: str,
    results: dict[str, Any],
) -> None:
    """The first start point's real future beside the transformer's first sample, as a filmstrip
    (and a video). The x position is not observed: it is integrated from the x velocity."""
    import warnings

    from ttrl.evaluation.loading import evaluation_spec
    from ttrl.prediction.render import render_trajectory, save_comparison

    try:
        env_id = evaluation_spec(dataset).env_id
        real = render_trajectory(env_id, windows.next_observations[0].numpy())
        predicted = render_trajectory(env_id, scores["transformer"].example[0].numpy())
        save_comparison(real, predicted, out_dir / "trajectory.png", out_dir / "trajectory.mp4")
        results["rendered_start"] = results["start_points"][0]
    except Exception as err:  # rendering needs OpenGL; the numbers stand without the picture
        warnings.warn(
            f"no trajectory picture ({type(err).__name__}: {err})", RuntimeWarning, stacklevel=2
        )


def _log_to_wandb(
    out_dir: Path, results: Mapping[str, Any], cfg: Mapping[str, Any], inputs: Any
) -> None:
    """One W&B run (job type ``predict``) beside the training run's, like ``plan.py``'s."""
    from ttrl.evaluation.wandb_logging import start_run_beside_training, wandb_settings

    settings = wandb_settings(cfg.get("logger") or {}, inputs.train_config, inputs.trainer)
    if settings.get("mode") == "disabled":
        return
    import wandb

    run = start_run_beside_training(
        settings, "predict", results["settings"], str(out_dir), cfg.get("name")
    )
    try:
        for name, model in results["models"].items():
            per_step = model["per_step"]
            steps = len(per_step["rmse_mean"])
            for step in range(steps):
                run.log(
                    {f"predict/{name}/{k}": v[step] for k, v in per_step.items()}, step=step + 1
                )
            run.summary.update({f"predict/{name}/{k}": v for k, v in model["summary"].items()})
        run.log({"predict/curves": wandb.Image(str(out_dir / "predictions.png"))})
    finally:
        run.finish()
