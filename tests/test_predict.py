"""Long-horizon prediction: the metrics against hand computations, start points, and predict.py."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import ttrl.config  # noqa: F401  (schemas and resolvers)
from test_evaluation import fit_discretizer, tiny_model
from ttrl.checkpoint import checkpoint_path, save_bundle
from ttrl.data import load_transitions, resolve_dataset
from ttrl.data.masking import HIDDEN_TOKEN, hidden_observation_dims, mask_hidden_observations
from ttrl.data.preprocess import preprocess
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.prediction.config import PredictConfig  # noqa: F401  (stores predict_schema)
from ttrl.prediction.data import (
    PredictionData,
    StartWindows,
    spread_start_points,
    start_windows,
)
from ttrl.prediction.metrics import (
    bin_widths,
    discrete_log_likelihood,
    gaussian_mixture_log_likelihood,
    mean_and_standard_error,
    mean_state_rmse,
    moment_matched_log_likelihood,
    oracle_log_likelihood,
    true_bin_log_widths,
)
from ttrl.prediction.predictors import TransformerPredictor
from ttrl.prediction.runner import register_resolvers, run_prediction

ROOT = Path(__file__).resolve().parents[1]
register_resolvers()


# ------------------------------------------------------------------------------------ metrics
def test_discrete_log_likelihood_and_oracle_by_hand():
    # one start, two samples, one step, two dims, three bins + stop
    probs = torch.tensor(
        [
            [[[0.5, 0.3, 0.1, 0.1], [0.2, 0.2, 0.6, 0.0]]],
            [[[0.1, 0.7, 0.2, 0.0], [0.0, 0.5, 0.5, 0.0]]],
        ]
    )[None]  # [1, 2, 1, 2, 4]
    true_tokens = torch.tensor([[[1, 2]]])
    log_widths = torch.log(torch.tensor([[[0.5, 2.0]]], dtype=torch.float64))
    got = discrete_log_likelihood(probs.log(), true_tokens, log_widths)
    by_hand = math.log((0.3 + 0.7) / 2) - math.log(0.5) + math.log((0.6 + 0.5) / 2) - math.log(2.0)
    assert got.shape == (1, 1) and got.item() == pytest.approx(by_hand)
    assert oracle_log_likelihood(log_widths).item() == pytest.approx(-math.log(0.5) - math.log(2.0))


def test_bin_widths_floor_zero_width_bins():
    thresholds = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 3.0], [4.0, 3.0]])
    widths = bin_widths(thresholds)
    assert widths[:, 0] == pytest.approx([1.0, 4e-6, 3.0])  # 1e-6 of the span 4
    assert widths[0, 1] == pytest.approx(2e-6) and widths[2, 1] == pytest.approx(2e-6)
    log_widths = true_bin_log_widths(thresholds, torch.tensor([[0, 1], [2, 2]]))
    assert log_widths[0, 0].item() == pytest.approx(0.0)
    assert log_widths[1, 0].item() == pytest.approx(math.log(3.0))
    assert log_widths[0, 1].item() == pytest.approx(math.log(2.0))


def test_gaussian_mixture_log_likelihood_by_hand():
    mean = torch.tensor([[[[0.0, 1.0]], [[2.0, 1.0]]]])  # [1 start, 2 particles, 1 step, 2 dims]
    std = torch.tensor([[[[1.0, 0.5]], [[2.0, 0.5]]]])
    truth = torch.tensor([[[1.0, 1.5]]])

    def normal(x, m, s):
        return math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    dim0 = 0.5 * (normal(1.0, 0.0, 1.0) + normal(1.0, 2.0, 2.0))
    dim1 = normal(1.5, 1.0, 0.5)
    got = gaussian_mixture_log_likelihood(mean, std, truth)
    assert got.item() == pytest.approx(math.log(dim0) + math.log(dim1))


def test_moment_matched_log_likelihood_by_hand():
    mean = torch.tensor([[[[0.0]], [[2.0]]]])  # two particles at 0 and 2, each of variance 1
    std = torch.ones_like(mean)
    got = moment_matched_log_likelihood(mean, std, torch.tensor([[[1.0]]]))
    assert got.item() == pytest.approx(-0.5 * math.log(2 * math.pi * 2.0))  # variance 1 + 1


def test_rmse_of_the_mean_state_and_standard_error_by_hand():
    predicted = torch.tensor([[[[1.0, 2.0]], [[3.0, 2.0]]]])  # mean over samples: [2, 2]
    truth = torch.tensor([[[0.0, 0.0]]])
    assert mean_state_rmse(predicted, truth).item() == pytest.approx(math.sqrt((4 + 4) / 2))
    values = torch.tensor([[1.0, 2.0], [3.0, float("-inf")], [5.0, 4.0]])
    mean, se = mean_and_standard_error(values)
    assert mean == pytest.approx([3.0, 3.0])
    assert se[0] == pytest.approx(2.0 / math.sqrt(3))  # sd 2 over 3 starts
    assert se[1] == pytest.approx(math.sqrt(2.0) / math.sqrt(2))  # the -inf is left out


def test_transformer_scores_of_a_model_with_known_outputs():
    """All weights zero: every token has probability 1 / (N + 1) at every position, so the
    log-likelihood, the oracle and the expected state are known in closed form."""
    model = tiny_model(observation_dim=3, action_dim=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 7))
    disc = Discretizer.fit(data, n_bins=model.config.vocab_size)
    n, context, horizon = 2, 2, 3
    windows = StartWindows(
        context=torch.as_tensor(rng.normal(size=(n, context, 7))),
        observations=torch.as_tensor(rng.normal(size=(n, 3))),
        actions=torch.as_tensor(rng.normal(size=(n, horizon, 2))),
        next_observations=torch.as_tensor(rng.normal(size=(n, horizon, 3))),
    )
    predictor = TransformerPredictor(model, disc, context, scored_dims=[0, 2])
    scores = predictor.predict(windows, horizon, 4, True, torch.Generator().manual_seed(0))
    N = model.config.vocab_size
    tokens = disc.encode(windows.next_observations.numpy(), dims=slice(0, 3))
    widths = bin_widths(disc.thresholds[:, :3])
    log_widths = np.log(widths[tokens, np.arange(3)])[..., [0, 2]]
    expected_ll = (-math.log(N + 1) - log_widths).sum(-1)
    assert scores.log_likelihood.numpy() == pytest.approx(expected_ll)
    assert scores.oracle.numpy() == pytest.approx(-log_widths.sum(-1))
    mean_state = disc.midpoints(slice(0, 3)).sum(0) / (N + 1)  # the stop token's mass dropped
    error = mean_state[[0, 2]] - windows.next_observations.numpy()[..., [0, 2]]
    assert scores.rmse.numpy() == pytest.approx(np.sqrt((error**2).mean(-1)), rel=1e-5)


def test_ensemble_particles_follow_their_member_and_the_data_actions():
    """A known ensemble: member k predicts s + a with std (k + 1) * 1e-3; fed the data's actions
    from s_0, the truth s_0 + a_0 + ... is predicted exactly and scored in closed form."""
    from ttrl.baselines.ensemble import GaussianPrediction
    from ttrl.prediction.predictors import EnsemblePredictor

    class KnownEnsemble:
        n_members = 2

        def predict(self, observations, actions):
            mean = (observations + actions)[None].expand(2, -1, -1)
            std = torch.tensor([1e-3, 2e-3])[:, None, None].expand_as(mean)
            return GaussianPrediction(mean, std, mean[..., 0], std[..., 0])

    n, horizon = 3, 4
    rng = np.random.default_rng(0)
    start = torch.as_tensor(rng.normal(size=(n, 2)))
    actions = torch.as_tensor(rng.normal(size=(n, horizon, 2)))
    truth = start[:, None] + actions.cumsum(dim=1)
    windows = StartWindows(torch.zeros(n, 0, 6), start, actions, truth)
    scores = EnsemblePredictor(KnownEnsemble(), scored_dims=[0, 1]).predict(
        windows, horizon, 4, True, torch.Generator().manual_seed(0)
    )
    assert scores.rmse.max().item() < 0.02
    assert torch.allclose(scores.example, truth, atol=0.02)
    # step 1 has no accumulated noise: each dim's mixture is half std 1e-3, half std 2e-3 at 0
    density = 0.5 * (1 / 1e-3 + 1 / 2e-3) / math.sqrt(2 * math.pi)
    assert scores.log_likelihood[:, 0].numpy() == pytest.approx(
        [2 * math.log(density)] * n, rel=1e-3
    )


# ------------------------------------------------------------------------------- start points
def _data(lengths: list[int], scored: list[int]) -> PredictionData:
    from ttrl.data.preprocess import Trajectories

    rows = int(sum(lengths))
    joined = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)  # S = 1, A = 1
    trajectories = Trajectories(
        joined=joined,
        episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        episode_lengths=np.array(lengths, dtype=np.int64),
        terminated=np.zeros(len(lengths), dtype=bool),
        observation_dim=1,
        action_dim=1,
    )
    every = np.arange(len(lengths))
    return PredictionData(trajectories, np.array(scored), np.setdiff1d(every, scored))


def test_start_points_are_spread_over_usable_steps_and_windows_cut_the_truth():
    data = _data([30, 8, 50], scored=[0, 1, 2])
    starts = spread_start_points(data, context=2, horizon=5, n_starts=6, actions="data")
    assert len(starts) == 6
    assert 1 not in starts.episodes  # 8 steps cannot hold 2 + 5 + 1
    for e, t in zip(starts.episodes, starts.steps, strict=True):
        assert 2 <= t <= data.trajectories.episode_lengths[e] - 6
    windows = start_windows(data, starts, context=2, horizon=5)
    first = int(data.trajectories.episode_starts[starts.episodes[0]]) + int(starts.steps[0])
    joined = torch.as_tensor(data.trajectories.joined, dtype=torch.float64)
    assert torch.equal(windows.observations[0], joined[first, :1])
    assert torch.equal(windows.context[0], joined[first - 2 : first])
    assert torch.equal(windows.actions[0], joined[first : first + 5, 1:2])
    assert torch.equal(windows.next_observations[0], joined[first + 1 : first + 6, :1])


def test_too_short_episodes_give_one_line():
    data = _data([10, 12], scored=[0, 1])
    with pytest.raises(
        TtrlError,
        match=r"dataset's actions for horizon=20.*longest of the 2 scored episodes has 12",
    ):
        spread_start_points(data, context=1, horizon=20, n_starts=4, actions="data")
    with pytest.raises(TtrlError, match="needs 15 steps before it"):
        spread_start_points(data, context=15, horizon=1, n_starts=4, actions="model")


# ------------------------------------------------------------------------------- hidden dims
def test_hidden_observation_dims_are_fixed_by_the_fraction_and_masked():
    dims = hidden_observation_dims(11, 0.3)
    assert len(dims) == 3 and dims == hidden_observation_dims(11, 0.3)
    assert hidden_observation_dims(11, 0.0) == ()
    tokens = torch.arange(30).reshape(2, 15)
    masked = mask_hidden_observations(tokens, dims)
    assert (masked[:, list(dims)] == HIDDEN_TOKEN).all()
    keep = [d for d in range(15) if d not in dims]
    assert torch.equal(masked[:, keep], tokens[:, keep]) and tokens[0, 1] == 1  # a copy
    with pytest.raises(TtrlError, match=r"hidden_observation_fraction=1\.0 must be in"):
        hidden_observation_dims(11, 1.0)


def test_training_windows_hold_the_hidden_token_in_hidden_dims(tiny_dataset):
    from ttrl.data import TokenDataset

    trajectories = preprocess(load_transitions(resolve_dataset(tiny_dataset)))
    disc = fit_discretizer(tiny_dataset)
    dims = hidden_observation_dims(17, 0.25)
    plain = TokenDataset.build(trajectories, disc, 3)
    hidden = TokenDataset.build(trajectories, disc, 3, hidden_observation_dims=dims)
    real = hidden.tokens[:, 0] != disc.stop_token
    assert (hidden.tokens[real][:, list(dims)] == HIDDEN_TOKEN).all()
    keep = [d for d in range(25) if d not in dims]
    assert torch.equal(hidden.tokens[:, keep], plain.tokens[:, keep])


# --------------------------------------------------------------------------------- predict.py
def predict_config(*overrides: str) -> dict:
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                *overrides,
                "logger.mode=disabled",
                "progress=false",
                "device=cpu",
                "ensemble.steps=30",
                "ensemble.hidden=16",
                "bc.steps=30",
                "render=false",
            ],
        )
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def tiny_run(tmp_path, tiny_dataset):
    """A tiny random model saved as a training run that held out one of the dataset's 4 episodes."""
    run_dir = tmp_path / "run"
    model = tiny_model()
    save_bundle(
        checkpoint_path(run_dir, "last"),
        model_config=model.config.to_dict(),
        model=model.state_dict(),
        discretizer=fit_discretizer(tiny_dataset).state_dict(),
        config={
            "env": {"name": tiny_dataset},
            "data": {"source": "auto", "sequence_length": 5, "val_fraction": 0.25},
            "logger": {"mode": "disabled"},
            "seed": 0,
        },
        trainer={"step": 0, "wandb_run_id": None},
    )
    return run_dir


def test_predict_script_end_to_end(tiny_run, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "predict.py"),
            f"run_dir={tiny_run}",
            "horizon=6",
            "n_starts=3",
            "n_samples=2",
            "batch_starts=2",
            "actions=model",
            "ensemble.steps=30",
            "bc.steps=30",
            "device=cpu",
            "progress=false",
            "logger.mode=disabled",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out_dir = tiny_run / "predict" / "model-h6-cfull"
    results = json.loads((out_dir / "predictions.json").read_text())
    assert results["n_starts"] == 3 and results["context"] == 4
    assert results["n_scored_episodes"] == 1  # the one held-out episode
    assert set(results["models"]) == {"transformer", "ensemble"}
    assert "behaviour-cloning" in results["baseline"]
    for model in results["models"].values():
        assert len(model["per_step"]["rmse_mean"]) == 6
        assert all(v >= 0 for v in model["per_step"]["rmse_mean"])
    transformer = results["models"]["transformer"]["per_step"]
    bound = transformer["oracle_log_likelihood_mean"]
    assert all(ll <= b for ll, b in zip(transformer["log_likelihood_mean"], bound, strict=True))
    with open(out_dir / "predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    assert (out_dir / "predictions.png").stat().st_size > 0
    assert len(list((tiny_run / "baselines").glob("*.safetensors"))) == 2  # ensemble and BC
    assert "transformer: log-likelihood" in proc.stdout


def test_predict_resumes_from_saved_batches_with_the_same_numbers(tiny_run):
    cfg = predict_config(f"run_dir={tiny_run}", "horizon=4", "n_starts=4", "batch_starts=2")
    out_dir = tiny_run / "predict" / "a"
    first = run_prediction(cfg, out_dir)
    parts = sorted((out_dir / "parts").glob("transformer-*.safetensors"))
    assert len(parts) == 2
    parts[1].unlink()  # as if stopped after the first batch
    (out_dir / "predictions.json").unlink()
    again = run_prediction(cfg, out_dir)
    assert again["models"] == first["models"]
    # several runs on one figure, and their table (python -m ttrl.prediction.plots)
    from ttrl.prediction.plots import main as plots_main

    plots_main(
        [
            str(out_dir / "both.png"),
            f"a={out_dir / 'predictions.json'}@transformer",
            f"b={out_dir / 'predictions.json'}",
        ]
    )
    assert (out_dir / "both.png").stat().st_size > 0
    from ttrl.prediction.plots import summary_table

    rows = summary_table([("a", again)]).splitlines()
    assert len(rows) == 2 + 4  # header, rule, transformer, oracle, ensemble, moment-matched
    ll = again["models"]["transformer"]["per_step"]["log_likelihood_mean"][0]
    assert rows[2].startswith(f"| a | transformer | {ll:.1f} ± ")
    other = predict_config(f"run_dir={tiny_run}", "horizon=3", "n_starts=4", "batch_starts=2")
    with pytest.raises(TtrlError, match="other settings; pass name=<another folder>, or overwrite"):
        run_prediction(other, out_dir)
    assert run_prediction({**other, "overwrite": True}, out_dir)["settings"]["horizon"] == 3


def test_markovian_context_and_bad_predict_input_are_one_line(tiny_run, tmp_path):
    cfg = predict_config(f"run_dir={tiny_run}", "horizon=3", "n_starts=2", "baseline=false")
    markovian = run_prediction({**cfg, "context": 1}, tmp_path / "m")
    full = run_prediction(cfg, tmp_path / "f")
    assert (markovian["model_window_transitions"], full["model_window_transitions"]) == (2, 5)
    assert markovian["start_points"] == full["start_points"]  # scored on the same starts
    markovian_ll = markovian["models"]["transformer"]["per_step"]["log_likelihood_mean"]
    assert markovian_ll != full["models"]["transformer"]["per_step"]["log_likelihood_mean"]
    with pytest.raises(TtrlError, match="horizon=0 must be an integer >= 1"):
        run_prediction({**cfg, "horizon": 0}, tmp_path / "x")
    with pytest.raises(TtrlError, match="context=5 needs the model to see 6 transitions"):
        run_prediction({**cfg, "context": 5}, tmp_path / "x")
    with pytest.raises(TtrlError, match="dataset's actions for horizon=200"):
        run_prediction({**cfg, "horizon": 200}, tmp_path / "x")
    with pytest.raises(TtrlError, match="actions='dreams' is not one of data, model"):
        run_prediction({**cfg, "actions": "dreams"}, tmp_path / "x")


def test_predict_on_a_run_whose_dataset_is_missing_names_the_command(
    tiny_run, monkeypatch, tmp_path
):
    empty = tmp_path / "empty_minari"
    empty.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(empty))
    cfg = predict_config(f"run_dir={tiny_run}", "horizon=3", "n_starts=2", "baseline=false")
    with pytest.raises(TtrlError, match="make_dataset"):
        run_prediction(cfg, tmp_path / "x")


def test_predict_with_a_wrong_type_is_one_line(tiny_run, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "predict.py"),
            f"run_dir={tiny_run}",
            "horizon=abc",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "horizon" in lines[0] and lines[0].startswith("error:")


def test_predictions_are_logged_to_wandb_beside_the_training_run(tiny_run, tmp_path, monkeypatch):
    import wandb

    class Run:
        def __init__(self, **settings):
            self.settings, self.logged, self.summary, self.finished = settings, [], {}, False

        def log(self, values, step=None):
            self.logged.append((step, values))

        def finish(self):
            self.finished = True

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(Run(**kw)) or runs[-1])
    monkeypatch.setattr(wandb, "Image", lambda path: ("image", path))
    cfg = predict_config(f"run_dir={tiny_run}", "horizon=3", "n_starts=2", "baseline=false")
    cfg["logger"] = {"mode": "offline", "project": None, "entity": None, "group": None}
    results = run_prediction(cfg, tmp_path / "w")
    (run,) = runs
    assert run.finished and run.settings["job_type"] == "predict"
    assert run.settings["project"] == "ttrl" and run.settings["mode"] == "offline"
    steps = [step for step, values in run.logged if "predict/transformer/rmse_mean" in values]
    assert steps == [1, 2, 3]
    rmse = results["models"]["transformer"]["summary"]["rmse_mean_over_horizon"]
    assert run.summary["predict/transformer/rmse_mean_over_horizon"] == rmse
