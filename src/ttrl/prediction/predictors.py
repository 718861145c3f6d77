"""Open-loop predictors: the Trajectory Transformer and the one-step Gaussian ensemble, scored alike.

A predictor is anything with a ``name`` and a ``predict`` that turns the start windows into
per-step scores (:class:`OpenLoopPredictor`); the runner treats every one the same way, so a new
baseline is one class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ttrl.data.masking import mask_hidden_observations
from ttrl.planning.rollouts import sample_rollout
from ttrl.prediction.data import StartWindows
from ttrl.prediction.metrics import (
    discrete_log_likelihood,
    gaussian_mixture_log_likelihood,
    mean_state_rmse,
    moment_matched_log_likelihood,
    oracle_log_likelihood,
    true_bin_log_widths,
)


@dataclass
class StepScores:
    """Scores per start point and horizon step, ``[n, H]`` each (see :mod:`ttrl.prediction.metrics`).

    ``oracle`` is the discrete bound (None for a continuous model); ``example [n, H, S]`` one
    predicted trajectory per start point (the first sample), for pictures; ``extra`` further
    ``[n, H]`` scores a predictor reports by name.
    """

    log_likelihood: Tensor
    rmse: Tensor
    oracle: Tensor | None
    example: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    @staticmethod
    def joined(parts: Sequence[StepScores]) -> StepScores:
        """The scores of consecutive batches of start points as one."""
        oracle = None if parts[0].oracle is None else torch.cat([p.oracle for p in parts])
        return StepScores(
            log_likelihood=torch.cat([p.log_likelihood for p in parts]),
            rmse=torch.cat([p.rmse for p in parts]),
            oracle=oracle,
            example=torch.cat([p.example for p in parts]),
            extra={k: torch.cat([p.extra[k] for p in parts]) for k in parts[0].extra},
        )


class OpenLoopPredictor(Protocol):
    """Predicts ``horizon`` steps from every start window and scores them against the truth."""

    name: str

    def predict(
        self,
        windows: StartWindows,
        horizon: int,
        n_samples: int,
        feed_data_actions: bool,
        generator: torch.Generator,
    ) -> StepScores:
        """Scores of ``n_samples`` predicted futures per start (``feed_data_actions``: the
        dataset's actions are given; else the predictor chooses its own)."""
        ...


class TransformerPredictor:
    """The Trajectory Transformer's open-loop samples, through :func:`sample_rollout`.

    ``context`` real transitions are given before each start, and the model sees ``context + 1``
    transitions at most while predicting (``context=1``: the Markovian ablation). Start points ×
    samples are rows of one model batch.
    """

    def __init__(
        self,
        model: Any,
        discretizer: Any,
        context: int,
        scored_dims: Sequence[int],
        hidden_dims: Sequence[int] = (),
        name: str = "transformer",
    ) -> None:
        self.model, self.discretizer, self.context = model, discretizer, context
        self.layout = model.config.layout
        self.scored_dims = torch.as_tensor(list(scored_dims), dtype=torch.long)
        self.hidden_dims = tuple(hidden_dims)
        self.name = name

    def prefix(self, windows: StartWindows) -> Tensor:
        """Tokens ``[n, c T + S]``: the real context transitions, then the start state."""
        layout, n = self.layout, windows.observations.shape[0]
        context = torch.as_tensor(self.discretizer.encode(windows.context), dtype=torch.long)
        start = torch.as_tensor(
            self.discretizer.encode(windows.observations, dims=layout.observation),
            dtype=torch.long,
        )
        context = mask_hidden_observations(context, self.hidden_dims)
        start = mask_hidden_observations(start, self.hidden_dims)
        return torch.cat([context.reshape(n, -1), start], dim=1)

    def predict(
        self,
        windows: StartWindows,
        horizon: int,
        n_samples: int,
        feed_data_actions: bool,
        generator: torch.Generator,
    ) -> StepScores:
        layout, disc = self.layout, self.discretizer
        S, n = layout.observation_dim, windows.observations.shape[0]
        prefix = self.prefix(windows).repeat_interleave(n_samples, dim=0)
        actions = None
        if feed_data_actions:
            actions = torch.as_tensor(disc.encode(windows.actions, dims=layout.action)).long()
            actions = actions.repeat_interleave(n_samples, dim=0)
        rollout = sample_rollout(
            self.model,
            disc,
            prefix,
            horizon,
            actions=actions,
            generator=generator,
            window_transitions=self.context + 1,
            keep_probs=True,
        )
        dims = self.scored_dims
        log_probs = rollout.distribution_log_probs[:, :, :S].cpu()  # [rows, H, S, N + 1]
        expected = torch.as_tensor(disc.expected_value(log_probs.exp(), dims=layout.observation))
        log_probs = log_probs.reshape(n, n_samples, horizon, S, -1)[:, :, :, dims]
        truth = windows.next_observations[..., dims]
        true_tokens = torch.as_tensor(
            disc.encode(windows.next_observations, dims=layout.observation), dtype=torch.long
        )[..., dims]
        thresholds = np.asarray(disc.thresholds)[:, :S][:, dims.numpy()]
        log_widths = true_bin_log_widths(thresholds, true_tokens)
        predicted = expected.reshape(n, n_samples, horizon, S)[..., dims]
        return StepScores(
            log_likelihood=discrete_log_likelihood(log_probs, true_tokens, log_widths),
            rmse=mean_state_rmse(predicted, truth),
            oracle=oracle_log_likelihood(log_widths),
            example=rollout.observations.reshape(n, n_samples, horizon, S)[:, 0].double(),
        )


class EnsemblePredictor:
    """A probabilistic ensemble propagated as particles (PETS' TS-infinity sampling).

    Particle ``p`` of a start follows ensemble member ``p mod K`` throughout and moves to a sample
    of that member's Gaussian each step. Actions are the data's, or a policy's (the ensemble models
    dynamics only, so ``actions=model`` needs one: behaviour cloning on the same data).
    """

    def __init__(
        self,
        ensemble: Any,
        scored_dims: Sequence[int],
        policy: Any | None = None,
        hidden_dims: Sequence[int] = (),
        name: str = "ensemble",
    ) -> None:
        self.ensemble, self.policy = ensemble, policy
        self.scored_dims = torch.as_tensor(list(scored_dims), dtype=torch.long)
        self.hidden_dims = list(hidden_dims)
        self.name = name

    def predict(
        self,
        windows: StartWindows,
        horizon: int,
        n_samples: int,
        feed_data_actions: bool,
        generator: torch.Generator,
    ) -> StepScores:
        if not feed_data_actions and self.policy is None:
            raise ValueError("the ensemble needs a policy to choose its own actions")
        n, S = windows.observations.shape
        members = self.ensemble.n_members
        state = windows.observations.float().repeat_interleave(n_samples, dim=0)
        state[:, self.hidden_dims] = 0.0
        member = (torch.arange(n * n_samples) % n_samples) % members
        means, stds = [], []
        with torch.inference_mode():
            for step in range(horizon):
                if feed_data_actions:
                    action = windows.actions[:, step].float().repeat_interleave(n_samples, dim=0)
                else:
                    action = torch.as_tensor(self.policy.act(state), dtype=torch.float32)
                prediction = self.ensemble.predict(state, action)
                rows = torch.arange(state.shape[0])
                mean = prediction.next_mean[member, rows]
                std = prediction.next_std[member, rows]
                means.append(mean)
                stds.append(std)
                noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
                state = mean + std * noise
                state[:, self.hidden_dims] = 0.0
        dims = self.scored_dims
        mean = torch.stack(means, dim=1).reshape(n, n_samples, horizon, S)
        std = torch.stack(stds, dim=1).reshape(n, n_samples, horizon, S)
        truth = windows.next_observations[..., dims]
        mean, std = mean[..., dims], std[..., dims]
        matched = moment_matched_log_likelihood(mean, std, truth)
        return StepScores(
            log_likelihood=gaussian_mixture_log_likelihood(mean, std, truth),
            rmse=mean_state_rmse(mean, truth),
            oracle=None,
            example=torch.stack(means, dim=1).reshape(n, n_samples, horizon, S)[:, 0].double(),
            extra={"moment_matched_log_likelihood": matched},
        )
