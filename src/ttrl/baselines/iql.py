"""Implicit Q-learning (Kostrikov, Nair and Levine 2021, "Offline RL with Implicit Q-Learning").

IQL never queries Q on actions outside the dataset. Per minibatch of transitions ``(s, a, r, s')``:

- V regresses the *expectile* ``expectile`` of the target Q over the data's actions,
  ``L_V = E[|tau - 1(u < 0)| u^2]`` with ``u = min(Q1', Q2')(s, a) - V(s)`` (:func:`expectile_loss`):
  0.5 is the mean (SARSA's value of the behaviour policy), values towards 1 the max over the
  actions the data takes in ``s``;
- twin Q networks regress ``r + discount * (1 - terminal) * V(s')`` (:func:`td_targets`);
- the actor maximises the advantage-weighted log-likelihood of the data's actions,
  ``E[min(exp(temperature * (Q' - V)), max_exp_advantage) * log pi(a | s)]``;
- the target Q networks follow the online ones by Polyak averaging (:func:`polyak_update`),
  after every optimiser step.

All three losses use the networks *before* the step (as CORL does; the paper's JAX code updates V
first), so they are summed into one loss: each network's gradient comes from its own term only
(the others see it detached), and AdamW is per parameter, so one AdamW over the three networks
takes exactly the steps of three AdamW optimisers with the same settings, and its one state dict
holds all three (what the runner checkpoints).

Bootstrapping follows :class:`~ttrl.baselines.data.TransitionBatch`: a terminal stops it, while
the last step of an episode cut by a timeout (or by the dataset's end) has no successor in the
data (its ``next_observations`` is its own), so it is left out of the Q loss rather than treated
as terminal; V and the actor still train on it (they need no successor).

The actor is a Gaussian with a tanh-bounded mean and a state-independent log std, as in the paper's
code (``NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False)``) and CORL's
AntMaze setting: the advantage-weighted objective is a weighted maximum likelihood, and the
deterministic variant (weighted MSE) equals a Gaussian of fixed std. :meth:`IQLModel.act` returns
the mean, as both evaluate. Observations are normalised (as the other baselines'); actions enter Q
raw.

Layout as :mod:`~ttrl.baselines.bc`: :class:`IQLConfig`, the :class:`IQLModel` module, and
:func:`fitted_iql` / :func:`train_iql`; ``scripts/train_baseline.py algo=iql`` (and
``scripts/train_q.py``) train it with the runner instead.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ttrl.baselines.data import TransitionBatch
from ttrl.baselines.mlp import (
    LOG_EVERY,
    ArrayLike,
    BaselineModule,
    MinibatchStepper,
    Normalizer,
    as_matrix,
    as_tensor,
    check_config,
    check_finite,
    mlp,
    seeded,
)
from ttrl.errors import TtrlError

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the actor's log std is clipped to this (the paper's code)


@dataclass
class IQLConfig:
    """Settings of :class:`IQLModel`; defaults are the IQL paper's AntMaze ones (CORL's agree).

    MuJoCo locomotion in the paper uses ``expectile=0.7, temperature=3.0`` and rewards scaled by
    ``1000 / (max return - min return)`` of the dataset (``configs/iql/``).
    """

    hidden: int = 256  # width of each hidden layer of Q1, Q2, V and the actor
    n_layers: int = 2  # hidden layers of each
    activation: str = "relu"
    lr: float = 3e-4  # of all three networks
    weight_decay: float = 0.0
    batch_size: int = 256
    steps: int = 1_000_000
    seed: int = 0  # initial weights (and minibatch order under the runner)
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target Q networks, per step
    expectile: float = 0.9  # of V's loss, in (0, 1): 0.5 = mean of Q, -> 1 = max over data actions
    temperature: float = 10.0  # beta: the actor weights its log-likelihood by exp(beta * (Q - V))
    max_exp_advantage: float = 100.0  # those weights are clipped at this
    reward_scale: float = 1.0  # rewards trained on: reward_scale * r + reward_shift
    reward_shift: float = 0.0  # AntMaze: -1 (configs/iql/antmaze.yaml)
    # MuJoCo (configs/iql/mujoco.yaml): reward_scale becomes 1000 / (max - min episode return) of
    # the training data when the model is fitted (:func:`return_range_scale`), as in the paper
    normalize_returns: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TtrlError` naming the first bad field."""
        check_config(self, ("hidden", "n_layers", "batch_size", "steps"))
        label = type(self).__name__
        ranges = (
            ("expectile", self.expectile, 0.0, 1.0, "in (0, 1)", False, False),
            ("discount", self.discount, 0.0, 1.0, "in [0, 1]", True, True),
            ("tau", self.tau, 0.0, 1.0, "in (0, 1]", False, True),
            ("temperature", self.temperature, 0.0, math.inf, ">= 0", True, False),
            ("max_exp_advantage", self.max_exp_advantage, 0.0, math.inf, "> 0", False, False),
            ("reward_scale", self.reward_scale, -math.inf, math.inf, "finite", False, False),
            ("reward_shift", self.reward_shift, -math.inf, math.inf, "finite", False, False),
        )
        for name, value, low, high, wanted, low_ok, high_ok in ranges:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            above = number and (value >= low if low_ok else value > low)
            below = number and (value <= high if high_ok else value < high)
            if not (above and below):
                raise TtrlError(f"{label}.{name}={value!r} must be a number {wanted}")


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Mean of ``|expectile - 1(diff < 0)| * diff^2``: positive ``diff`` weighs ``expectile``,
    negative ``1 - expectile`` (``diff = target - prediction``)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def td_targets(
    rewards: torch.Tensor, next_values: torch.Tensor, terminals: torch.Tensor, discount: float
) -> torch.Tensor:
    """``rewards + discount * (1 - terminals) * next_values`` (a terminal does not bootstrap)."""
    return rewards + discount * (~terminals).to(rewards.dtype) * next_values


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * source``, parameter by parameter, in place."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)


class IQLModel(BaselineModule):
    """Twin Q, V, their target Q copies and a Gaussian actor over normalised observations.

    Public inference (raw observations ``[..., S]`` and actions ``[..., A]``, numpy or torch, any
    leading dims, no gradients): :meth:`q_value`, :meth:`value` (tensors on the model's device,
    for the planner's Q-guided scorer) and :meth:`act` (numpy, for ``env.step``).
    """

    config_class = IQLConfig
    action_low: torch.Tensor
    action_high: torch.Tensor

    def __init__(
        self, observation_dim: int, action_dim: int, config: IQLConfig | None = None
    ) -> None:
        config = config if config is not None else IQLConfig()
        super().__init__(observation_dim, action_dim, config)
        S, A = self.observation_dim, self.action_dim
        self.obs_norm = Normalizer(S)
        self.register_buffer("action_low", -torch.ones(A))
        self.register_buffer("action_high", torch.ones(A))
        width = (config.hidden, config.n_layers, config.activation)
        with seeded(config.seed):
            self.critics = nn.ModuleList([mlp(S + A, 1, *width) for _ in range(2)])
            self.value_net = mlp(S, 1, *width)
            self.actor = mlp(S, A, *width)
            self.log_std = nn.Parameter(torch.zeros(A))
        # targets start as the critics; they are saved with the model (resume) but never trained
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)

    # ------------------------------------------------------------------ networks (normalised obs)
    def _q(self, critics: nn.ModuleList, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``[2, ...]``: both critics' Q of normalised ``obs`` and raw ``actions``."""
        inputs = torch.cat([obs, actions], dim=-1)
        return torch.stack([q(inputs).squeeze(-1) for q in critics])

    def _v(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_net(obs).squeeze(-1)

    def _policy(self, obs: torch.Tensor) -> torch.distributions.Normal:
        half_range = (self.action_high - self.action_low) / 2
        middle = (self.action_high + self.action_low) / 2
        mean = middle + half_range * torch.tanh(self.actor(obs))
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return torch.distributions.Normal(mean, std.expand_as(mean))

    # ------------------------------------------------------------------------------ training
    def losses(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """The three scalar losses of ``batch``: ``"v"`` (expectile), ``"q"`` (TD), ``"actor"``."""
        cfg = self.config
        obs = self.obs_norm.normalize(batch.observations)
        with torch.no_grad():
            target_q = self._q(self.target_critics, obs, batch.actions).min(dim=0).values
            next_v = self._v(self.obs_norm.normalize(batch.next_observations))
        v = self._v(obs)
        advantage = target_q - v
        v_loss = expectile_loss(advantage, cfg.expectile)

        rewards = cfg.reward_scale * batch.rewards + cfg.reward_shift
        targets = td_targets(rewards, next_v, batch.terminals, cfg.discount)
        # a timeout's last step has no successor in the data: no Q target there
        has_successor = (~batch.episode_ends | batch.terminals).to(targets.dtype)
        squared = (self._q(self.critics, obs, batch.actions) - targets).square().sum(dim=0)
        q_loss = (squared * has_successor).sum() / has_successor.sum().clamp_min(1.0)

        # exp(min(.)) rather than min(exp(.)): the same weights without overflowing to inf
        log_cap = math.log(cfg.max_exp_advantage)
        weights = torch.exp((cfg.temperature * advantage.detach()).clamp(max=log_cap))
        log_prob = self._policy(obs).log_prob(batch.actions).sum(dim=-1)
        actor_loss = -(weights * log_prob).mean()
        return {"v": v_loss, "q": q_loss, "actor": actor_loss}

    def loss(self, batch: TransitionBatch) -> torch.Tensor:
        """The sum of :meth:`losses` (see the module docstring for why one sum is enough)."""
        return torch.stack(list(self.losses(batch).values())).sum()

    def update_targets(self) -> None:
        """One Polyak step of the target critics towards the critics (after each optimiser step)."""
        polyak_update(self.target_critics, self.critics, self.config.tau)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter but the target critics' (what the optimiser steps)."""
        return (p for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------------------ inference
    @property
    def reward_scale(self) -> float:
        """The factor the rewards were multiplied by in training: Q and V are in those units."""
        return float(self.config.reward_scale)

    def _inputs(self, name: str, data: ArrayLike, dim: int) -> torch.Tensor:
        x = as_tensor(data, self.device)
        if x.dim() < 1 or x.shape[-1] != dim:
            raise TtrlError(f"{name} must be [..., {dim}], got {tuple(x.shape)}")
        return x

    @torch.no_grad()
    def q_value(
        self, observations: ArrayLike, actions: ArrayLike, target: bool = False
    ) -> torch.Tensor:
        """``min(Q1, Q2)`` of raw ``[..., S]`` observations and ``[..., A]`` actions, as ``[...]``
        float32 on the model's device; ``target=True`` asks the Polyak-averaged target critics."""
        obs = self._inputs("observations", observations, self.observation_dim)
        act = self._inputs("actions", actions, self.action_dim)
        if obs.shape[:-1] != act.shape[:-1]:
            raise TtrlError(
                f"observations {tuple(obs.shape)} and actions {tuple(act.shape)} must share "
                f"their leading dims"
            )
        critics = self.target_critics if target else self.critics
        return self._q(critics, self.obs_norm.normalize(obs), act).min(dim=0).values

    @torch.no_grad()
    def value(self, observations: ArrayLike) -> torch.Tensor:
        """``V`` of raw ``[..., S]`` observations, as ``[...]`` float32 on the model's device."""
        obs = self._inputs("observations", observations, self.observation_dim)
        return self._v(self.obs_norm.normalize(obs))

    @torch.no_grad()
    def act(self, observations: ArrayLike) -> np.ndarray:
        """The actor's mean action for ``[B, S]`` (or ``[S]``) raw observations, as a float32
        numpy ``[B, A]`` (or ``[A]``) array inside the action bounds, ready for ``env.step``."""
        obs = self._inputs("observations", observations, self.observation_dim)
        mean = self._policy(self.obs_norm.normalize(obs)).mean
        return mean.cpu().numpy().astype(np.float32, copy=False)


def return_range_scale(train: TransitionBatch, span: float = 1000.0) -> float:
    """``span / (max - min)`` of the undiscounted returns of ``train``'s episodes (cut at
    ``episode_ends``; a last episode the data cuts short counts as it is), the IQL paper's reward
    scale for MuJoCo; one line when every episode returns the same."""
    rewards = train.rewards.detach().double().cpu().numpy()
    ends = np.flatnonzero(train.episode_ends.cpu().numpy())
    if not len(ends) or ends[-1] != len(rewards) - 1:
        ends = np.append(ends, len(rewards) - 1)
    returns = np.add.reduceat(rewards, np.concatenate(([0], ends[:-1] + 1)))
    spread = float(returns.max() - returns.min())
    if not spread > 0:
        raise TtrlError(
            f"iql.normalize_returns=true needs episodes of different returns, but all "
            f"{len(returns)} return {returns[0]:.6g}; set iql.normalize_returns=false"
        )
    return span / spread


def fitted_iql(train: TransitionBatch, config: IQLConfig | None = None) -> IQLModel:
    """A fresh :class:`IQLModel` (CPU) whose observation normaliser and action bounds (the
    training actions' per-dimension min/max) are fitted on ``train``; with
    ``config.normalize_returns`` its ``reward_scale`` is :func:`return_range_scale` of ``train``
    (stored in the model's config, so the checkpoint says what it trained on)."""
    config = copy.copy(config) if config is not None else IQLConfig()
    config.validate()
    if config.normalize_returns:
        config.reward_scale = return_range_scale(train)
    obs = as_matrix("observations", train.observations)
    act = as_matrix("actions", train.actions, len(obs))
    model = IQLModel(obs.shape[1], act.shape[1], config)
    model.obs_norm.fit(obs)
    model.action_low.copy_(torch.from_numpy(act.min(axis=0)))
    model.action_high.copy_(torch.from_numpy(act.max(axis=0)))
    return model


def train_iql(
    train: TransitionBatch,
    config: IQLConfig | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[IQLModel, list[float]]:
    """Fit an :class:`IQLModel` on ``train`` in memory (no run dir; the runner is for that).

    Returns the model (on ``device``) and its summed loss, one mean per
    :data:`~ttrl.baselines.mlp.LOG_EVERY` steps.
    """
    config = config if config is not None else IQLConfig()
    model = fitted_iql(train, config).to(device)
    data = train.to(device)
    stepper = MinibatchStepper(
        lambda indices: model.loss(data.take(indices)),
        model.trainable_parameters(),
        n_samples=len(data),
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=config.seed,
    )
    history: list[float] = []
    running = torch.zeros((), device=model.device)
    for step in tqdm(range(1, config.steps + 1), desc="iql", disable=not progress, leave=False):
        running += stepper.step()
        model.update_targets()
        if step % LOG_EVERY == 0 or step == config.steps:
            history.append(running.item() / ((step - 1) % LOG_EVERY + 1))  # syncs the GPU
            check_finite(history[-1], "iql", step, config.lr)
            running = torch.zeros((), device=model.device)
    return model, history
