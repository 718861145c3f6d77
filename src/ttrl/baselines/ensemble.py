"""A probabilistic ensemble of Gaussian MLPs, as in PETS (Chua et al. 2018).

Each of K members maps (observation, action) to a diagonal Gaussian over
``[Δs, r] = [next_obs - obs, reward]``, in normalised units. The members are trained on their own
bootstrap resample of the transitions and evaluated together: their weights are stacked
(``[K, in, out]``) and one ``torch.baddbmm`` per layer computes all of them on a ``[K, B, in]``
batch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ttrl.baselines.mlp import (
    ArrayLike,
    BaselineModule,
    Normalizer,
    as_matrix,
    as_tensor,
    as_vector,
    check_config,
    fit_minibatches,
    make_activation,
    seeded,
)
from ttrl.errors import TtrlError

LOGVAR_PENALTY = 0.01  # PETS' weight on (max_logvar - min_logvar), which keeps the bounds tight
INIT_MAX_LOGVAR, INIT_MIN_LOGVAR = 0.5, -10.0  # PETS' initial bounds, in normalised units
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class EnsembleConfig:
    """Size and training settings of a :class:`GaussianEnsemble`; defaults are PETS'."""

    n_members: int = 5  # K bootstrapped members
    hidden: int = 200  # width of each hidden layer
    n_layers: int = 4  # hidden layers per member
    activation: str = "silu"  # swish
    lr: float = 1e-3
    weight_decay: float = 1e-5  # AdamW decay on the weight matrices only (not biases or bounds)
    batch_size: int = 256  # transitions per member per step
    steps: int = 5000
    seed: int = 0  # initial weights, bootstrap resamples and minibatch order

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TtrlError` naming the first bad field."""
        check_config(self, ("n_members", "hidden", "n_layers", "batch_size", "steps"))


class GaussianPrediction(NamedTuple):
    """Per-member Gaussian predictions in raw (dataset) units; K members, B samples, S obs dims."""

    next_mean: torch.Tensor  # [K, B, S]: obs + mean Δs
    next_std: torch.Tensor  # [K, B, S]
    reward_mean: torch.Tensor  # [K, B]
    reward_std: torch.Tensor  # [K, B]


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-dimension ``log N(x; mean, std)`` (broadcasting; sum over dims for a diagonal Gaussian)."""
    z = (x - mean) / std
    return -0.5 * z.square() - torch.log(std) - HALF_LOG_2PI


def bootstrap_indices(n_samples: int, n_members: int, seed: int) -> torch.Tensor:
    """``[K, N]`` int64: row k is member k's resample of ``range(N)``, drawn with replacement."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n_samples, (n_members, n_samples), generator=generator)


class EnsembleLinear(nn.Module):
    """K independent linear layers in one batched matmul: ``[K, B, in] -> [K, B, out]``."""

    def __init__(self, n_members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        std = 1.0 / (2.0 * math.sqrt(in_dim))  # PETS' init: normal truncated at 2 std
        self.weight = nn.Parameter(torch.empty(n_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n_members, 1, out_dim))
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class GaussianEnsemble(BaselineModule):
    """K Gaussian MLPs over ``[Δs, r]`` given ``(obs, action)``; see the module docstring.

    Buffers ``input_norm`` (over ``[obs, action]``) and ``target_norm`` (over ``[Δs, r]``) are
    fitted by :func:`train_ensemble`. The predicted log-variance is bounded softly by learned
    ``min_logvar`` / ``max_logvar`` (per target dim): it is always above ``min_logvar`` and at most
    ``max_logvar + log(1 + exp(min_logvar - max_logvar))``, a hair above ``max_logvar``.
    """

    config_class = EnsembleConfig

    def __init__(
        self, observation_dim: int, action_dim: int, config: EnsembleConfig | None = None
    ) -> None:
        config = config if config is not None else EnsembleConfig()
        super().__init__(observation_dim, action_dim, config)
        self.n_members = config.n_members
        self.target_dim = self.observation_dim + 1  # Δs, then r
        self.input_norm = Normalizer(self.observation_dim + self.action_dim)
        self.target_norm = Normalizer(self.target_dim)
        dims = [self.observation_dim + self.action_dim] + [config.hidden] * config.n_layers
        dims.append(2 * self.target_dim)  # mean and log-variance
        with seeded(config.seed):  # each member gets its own draw of the initial weights
            self.layers = nn.ModuleList(
                EnsembleLinear(self.n_members, i, o) for i, o in itertools.pairwise(dims)
            )
        self.activation = make_activation(config.activation)
        self.max_logvar = nn.Parameter(torch.full((self.target_dim,), INIT_MAX_LOGVAR))
        self.min_logvar = nn.Parameter(torch.full((self.target_dim,), INIT_MIN_LOGVAR))

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``[K, B, S + A]`` inputs -> (mean, log-variance), each ``[K, B, S + 1]``,
        in normalised target units."""
        x = inputs
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        mean, logvar = self.layers[-1](x).chunk(2, dim=-1)
        # PETS' soft clamp: smooth, so the gradient never vanishes at a bound
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def member_inputs(self, observations: ArrayLike, actions: ArrayLike) -> torch.Tensor:
        """Raw observations and actions, ``[B, .]`` (shared by all members) or ``[K, B, .]``
        (one batch per member), as normalised ``[K, B, S + A]`` inputs."""
        obs = self._per_member("observations", observations, self.observation_dim)
        act = self._per_member("actions", actions, self.action_dim)
        if obs.shape[1] != act.shape[1]:
            raise TtrlError(f"{obs.shape[1]} observations but {act.shape[1]} actions; align them")
        return self.input_norm.normalize(torch.cat([obs, act], dim=-1))

    def _per_member(self, name: str, data: ArrayLike, dim: int) -> torch.Tensor:
        x = as_tensor(data, self.device)
        if x.dim() == 2:
            x = x.expand(self.n_members, *x.shape)
        if x.dim() != 3 or x.shape[0] != self.n_members or x.shape[-1] != dim:
            raise TtrlError(
                f"{name} must be [B, {dim}] or [{self.n_members}, B, {dim}], got {tuple(x.shape)}"
            )
        return x

    def targets(
        self, observations: ArrayLike, next_observations: ArrayLike, rewards: ArrayLike
    ) -> torch.Tensor:
        """Normalised ``[B, S + 1]`` targets ``[next_obs - obs, r]``."""
        obs = as_tensor(observations, self.device)
        delta = as_tensor(next_observations, self.device) - obs
        reward = as_tensor(rewards, self.device).reshape(-1, 1)
        return self.target_norm.normalize(torch.cat([delta, reward], dim=-1))

    def member_nll(
        self, mean: torch.Tensor, logvar: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``[K]``: each member's Gaussian negative log-likelihood of ``targets`` (normalised
        units), averaged over samples and dimensions."""
        nll = 0.5 * ((targets - mean).square() * torch.exp(-logvar) + logvar) + HALF_LOG_2PI
        return nll.mean(dim=(1, 2))

    def loss(self, mean: torch.Tensor, logvar: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """PETS' training loss: the members' NLLs summed, plus the log-variance bound penalty."""
        bounds = self.max_logvar.sum() - self.min_logvar.sum()
        return self.member_nll(mean, logvar, targets).sum() + LOGVAR_PENALTY * bounds

    @torch.no_grad()
    def nll(
        self,
        observations: ArrayLike,
        actions: ArrayLike,
        next_observations: ArrayLike,
        rewards: ArrayLike,
    ) -> torch.Tensor:
        """``[K]``: each member's mean NLL (normalised units) on the given ``[B, .]`` transitions."""
        mean, logvar = self(self.member_inputs(observations, actions))
        return self.member_nll(mean, logvar, self.targets(observations, next_observations, rewards))

    @torch.no_grad()
    def predict(self, observations: ArrayLike, actions: ArrayLike) -> GaussianPrediction:
        """Every member's Gaussian over next observation and reward, in raw units.

        ``observations`` ``[B, S]`` or ``[K, B, S]`` and ``actions`` ``[B, A]`` or ``[K, B, A]``
        (numpy or torch); returns tensors on the model's device. No gradients: call
        :meth:`forward` on :meth:`member_inputs` for a differentiable prediction.
        """
        inputs = self.member_inputs(observations, actions)
        mean, logvar = self(inputs)
        mean = self.target_norm.denormalize(mean)
        std = torch.exp(0.5 * logvar) * self.target_norm.std
        obs = self._per_member("observations", observations, self.observation_dim)
        s = self.observation_dim
        return GaussianPrediction(obs + mean[..., :s], std[..., :s], mean[..., s], std[..., s])

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on the weight matrices, none on biases and log-variance bounds."""
        weights = [layer.weight for layer in self.layers]
        rest = [layer.bias for layer in self.layers] + [self.max_logvar, self.min_logvar]
        return [
            {"params": weights, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ]


def train_ensemble(
    observations: np.ndarray,
    actions: np.ndarray,
    next_observations: np.ndarray,
    rewards: np.ndarray,
    config: EnsembleConfig | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[GaussianEnsemble, list[float]]:
    """Fit a :class:`GaussianEnsemble` on transitions ``[N, S]``, ``[N, A]``, ``[N, S]``, ``[N]``.

    Returns the model (on ``device``) and its loss history (the summed-over-members loss, one
    mean per 100 steps, see :func:`~ttrl.baselines.mlp.fit_minibatches`).
    """
    config = config if config is not None else EnsembleConfig()
    config.validate()
    obs = as_matrix("observations", observations)
    n, s = obs.shape
    act = as_matrix("actions", actions, n)
    next_obs = as_matrix("next_observations", next_observations, n, s)
    reward = as_vector("rewards", rewards, n)[:, None]
    model = GaussianEnsemble(s, act.shape[1], config)
    model.input_norm.fit(np.concatenate([obs, act], axis=1))
    model.target_norm.fit(np.concatenate([next_obs - obs, reward], axis=1))
    model.to(device)
    inputs = model.input_norm.normalize(as_tensor(np.concatenate([obs, act], axis=1), device))
    targets = model.targets(obs, next_obs, reward)
    # each member sees its own resample, which (with its own init) is what makes members disagree
    # where data is scarce
    resample = bootstrap_indices(n, config.n_members, config.seed + 1).to(device)

    def loss_fn(indices: torch.Tensor) -> torch.Tensor:
        rows = resample[:, indices]  # [K, B]: member k's samples
        mean, logvar = model(inputs[rows])
        return model.loss(mean, logvar, targets[rows])

    history = fit_minibatches(
        loss_fn,
        model.parameter_groups(config.weight_decay),
        n_samples=n,
        batch_size=config.batch_size,
        steps=config.steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=config.seed,
        progress=progress,
        desc="ensemble",
    )
    return model, history
