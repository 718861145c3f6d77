"""Pieces every baseline shares: the MLP builder, a normaliser, the minibatch loop, save/load.

A baseline is a :class:`BaselineModule`: an ``nn.Module`` built from ``(observation_dim,
action_dim, config)`` whose normaliser statistics live in buffers, so its state dict is all it
needs besides the config. :meth:`BaselineModule.save` writes one ttrl bundle (safetensors tensors
plus JSON metadata, see :mod:`ttrl.checkpoint`) with the keys::

    {"baseline": <class name>, "baseline_config": {...}, "model": <state dict>, "extra": {...}}

(``baseline_config`` rather than ``model_config``, so that the transformer's loader refuses a
baseline's bundle with its own one-line error instead of misreading it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ttrl.checkpoint import load_bundle, save_bundle
from ttrl.errors import TtrlError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,  # = swish, PETS' activation
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}
STD_FLOOR = 1e-6  # a constant dimension normalises to 0 instead of dividing by 0
LOG_EVERY = 100  # fit_minibatches records one mean loss per this many steps
BUNDLE_KEYS = ("baseline", "baseline_config", "model", "extra")

ArrayLike = np.ndarray | torch.Tensor
M = TypeVar("M", bound="BaselineModule")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise TtrlError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(
    in_dim: int, out_dim: int, hidden: int = 256, n_layers: int = 2, activation: str = "relu"
) -> nn.Sequential:
    """``n_layers`` hidden layers of width ``hidden``, each followed by ``activation``, then a
    linear output layer (``n_layers=0`` is a linear map)."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden), make_activation(activation)]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the CPU RNG seeded by ``seed``, leaving the caller's RNG state as it was.

    Used around weight initialisation, so that building a model is deterministic without
    changing anyone else's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_config(
    config: Any, positive_ints: Iterable[str], non_negative: Iterable[str] = ("weight_decay",)
) -> None:
    """Raise :class:`TtrlError` naming the first bad field of a baseline config.

    Every baseline config has ``lr`` (> 0), ``seed`` (an int) and ``activation``; ``positive_ints``
    and ``non_negative`` name its other fields to check.
    """
    label = type(config).__name__
    for name in positive_ints:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TtrlError(f"{label}.{name}={value!r} must be a positive integer")
    for name in non_negative:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise TtrlError(f"{label}.{name}={value!r} must be a number >= 0")
    lr = config.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise TtrlError(f"{label}.lr={lr!r} must be a positive number")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int):
        raise TtrlError(f"{label}.seed={config.seed!r} must be an integer")
    if config.activation not in ACTIVATIONS:
        raise TtrlError(
            f"{label}.activation={config.activation!r} is unknown; choose one of "
            f"{', '.join(ACTIVATIONS)}"
        )


# ---------------------------------------------------------------------------------------- data
def as_matrix(
    name: str, data: ArrayLike, n: int | None = None, dim: int | None = None
) -> np.ndarray:
    """``data`` as a finite float32 ``[N, D]`` array, checking N and D where given."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    array = np.asarray(data, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] < 1:
        raise TtrlError(f"{name} must be a non-empty [N, D] array, got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise TtrlError(f"{name} has {array.shape[0]} rows but observations have {n}; align them")
    if dim is not None and array.shape[1] != dim:
        raise TtrlError(f"{name} has {array.shape[1]} columns, expected {dim}")
    if not np.isfinite(array).all():
        raise TtrlError(f"{name} holds NaN or inf values; clean the dataset first")
    return array


def as_vector(name: str, data: ArrayLike, n: int) -> np.ndarray:
    """``data`` (``[N]`` or ``[N, 1]``) as a finite float32 ``[N]`` array."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    array = np.asarray(data, dtype=np.float32)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (n,):
        raise TtrlError(f"{name} must have shape [{n}] (one per observation), got {array.shape}")
    return as_matrix(name, array[:, None], n)[:, 0]


def as_tensor(data: ArrayLike, device: torch.device | str) -> torch.Tensor:
    """``data`` as a float32 tensor on ``device`` (no copy when it already is one)."""
    if isinstance(data, np.ndarray) and not data.flags.writeable:
        data = np.array(data)  # e.g. np.broadcast_to's views, which torch cannot share
    return torch.as_tensor(data, dtype=torch.float32, device=device)


class Normalizer(nn.Module):
    """Per-dimension ``(x - mean) / std``, with mean and std in buffers (saved in the state dict).

    Fitted once on training data; ``std`` is floored at :data:`STD_FLOOR`.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, data: ArrayLike) -> Normalizer:
        """Set mean and std from ``data`` ``[N, dim]`` (numpy or torch); returns ``self``."""
        array = as_matrix("normaliser data", data, dim=self.mean.numel()).astype(np.float64)
        self.mean.copy_(torch.from_numpy(array.mean(axis=0)))
        self.std.copy_(torch.from_numpy(np.maximum(array.std(axis=0), STD_FLOOR)))
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` over the last dimension."""
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`."""
        return x * self.std + self.mean


# ------------------------------------------------------------------------------------ training
class MinibatchStepper:
    """AdamW steps on minibatches of sample indices, resumable from its :meth:`state_dict`.

    Each :meth:`step` draws ``batch_size`` indices in ``[0, n_samples)`` uniformly with
    replacement from its own ``torch.Generator`` (seeded by ``seed``, so the global RNG is left
    alone), calls ``loss_fn(indices)`` and takes one optimiser step. The state dict holds the
    optimiser's moments, the generator's state and the step count, so a stepper restored from it
    takes exactly the steps the saved one would have taken next. ``parameters`` are tensors, or
    AdamW parameter groups (dicts) whose own ``weight_decay`` overrides ``weight_decay``.
    """

    def __init__(
        self,
        loss_fn: Callable[[torch.Tensor], torch.Tensor],
        parameters: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        n_samples: int,
        batch_size: int,
        lr: float,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        groups = [
            dict(p, params=list(p["params"])) if isinstance(p, dict) else p for p in parameters
        ]
        tensors = [t for g in groups for t in (g["params"] if isinstance(g, dict) else [g])]
        if not tensors:
            raise TtrlError("no parameters to train: pass a model with parameters")
        if n_samples < 1:
            raise TtrlError(f"cannot train on {n_samples} samples; pass a non-empty dataset")
        self.loss_fn, self.n_samples, self.batch_size = loss_fn, n_samples, batch_size
        self.device = tensors[0].device
        self.optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0

    def step(self) -> torch.Tensor:
        """One optimiser step on a fresh minibatch; returns its loss, detached (not synced)."""
        indices = torch.randint(self.n_samples, (self.batch_size,), generator=self.generator)
        loss = self.loss_fn(indices.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """Optimiser state, generator state and step count (tensors and plain values)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])


def check_finite(loss: float, desc: str, step: int, lr: float) -> None:
    """Raise :class:`TtrlError` once a logged loss is NaN or infinite (training diverged)."""
    if not math.isfinite(loss):
        raise TtrlError(f"{desc}: the loss became {loss} by step {step}; lower lr={lr}")


def fit_minibatches(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    parameters: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    n_samples: int,
    batch_size: int,
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
    log_every: int = LOG_EVERY,
) -> list[float]:
    """Minimise ``loss_fn`` with AdamW for ``steps`` minibatches; returns the loss history.

    Args:
        loss_fn: maps a ``[batch_size]`` int64 tensor of sample indices in ``[0, n_samples)``
            (on the parameters' device) to a scalar loss.
        parameters: tensors, or AdamW parameter groups (dicts); a group's own ``weight_decay``
            overrides ``weight_decay``, which is how a model keeps decay off biases.
        n_samples: size of the dataset the indices range over.
        batch_size, steps, lr, weight_decay: the optimiser's settings.
        seed: seeds the ``torch.Generator`` that draws the indices (uniformly, with
            replacement), so a run is reproducible and leaves the global RNG alone.
        progress, desc: a tqdm bar with this label; ``progress=False`` hides it.
        log_every: steps per history entry.

    Returns:
        The mean training loss over each block of ``log_every`` steps (the last block may be
        shorter): ``ceil(steps / log_every)`` floats. Losses are read back only then, since
        ``.item()`` waits for the GPU. (:class:`MinibatchStepper` takes the steps; use it directly
        for a loop that checkpoints and resumes.)
    """
    stepper = MinibatchStepper(loss_fn, parameters, n_samples, batch_size, lr, weight_decay, seed)
    history: list[float] = []
    running, count = torch.zeros((), device=stepper.device), 0
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        for step in range(1, steps + 1):
            running += stepper.step()
            count += 1
            if count == log_every or step == steps:
                history.append(running.item() / count)
                check_finite(history[-1], desc, step, lr)
                bar.set_postfix(loss=f"{history[-1]:.4g}")
                running, count = torch.zeros((), device=stepper.device), 0
            bar.update()
    return history


# ---------------------------------------------------------------------------------- save/load
def save_module(
    path: str | os.PathLike,
    module: nn.Module,
    config_dict: dict[str, Any],
    extra: dict[str, Any] | None = None,
    **parts: Any,
) -> Path:
    """Write ``module``'s state dict, its config and ``extra`` (plain values) as one bundle.

    The bundle is tagged with the module's class name, which :func:`load_module` can check.
    ``parts`` are further bundle entries (a training run's ``config`` and ``trainer`` state),
    which loading the module ignores. Written atomically by :func:`ttrl.checkpoint.save_bundle`;
    returns the path.
    """
    return save_bundle(
        path,
        baseline=type(module).__name__,
        baseline_config=dict(config_dict),
        model=module.state_dict(),
        extra=dict(extra or {}),
        **parts,
    )


def load_module(
    path: str | os.PathLike, kind: str | None = None, map_location: Any = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(state_dict, config, extra)`` from a bundle written by :func:`save_module`.

    ``kind``, when given, is the class name the bundle must have been saved from. Anything else
    (not a bundle, a transformer bundle, another baseline) raises :class:`TtrlError`.
    """
    bundle = load_bundle(path, map_location=map_location)
    missing = [key for key in BUNDLE_KEYS if key not in bundle]
    if missing:
        raise TtrlError(
            f"{path} is a ttrl bundle but not a baseline's (it lacks {', '.join(missing)}); "
            f"pass a file written by a baseline's save()"
        )
    if kind is not None and bundle["baseline"] != kind:
        raise TtrlError(
            f"{path} holds a {bundle['baseline']}, not a {kind}; load it with {bundle['baseline']}.load"
        )
    state, config, extra = bundle["model"], bundle["baseline_config"], bundle["extra"]
    if not (isinstance(state, dict) and isinstance(config, dict) and isinstance(extra, dict)):
        raise TtrlError(f"{path} is a damaged baseline bundle (model/config/extra are not dicts)")
    return state, config, extra


class BaselineModule(nn.Module):
    """Base of the baselines: built from ``(observation_dim, action_dim, config)``, saved as one
    bundle with :meth:`save` and rebuilt by :meth:`load`.

    Subclasses set :attr:`config_class` (a dataclass with a ``validate()`` method).
    """

    config_class: ClassVar[type]

    def __init__(self, observation_dim: int, action_dim: int, config: Any) -> None:
        super().__init__()
        config.validate()
        self.observation_dim = int(observation_dim)
        self.action_dim = int(action_dim)
        self.config = config

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return next(self.parameters()).device

    def build_args(self) -> dict[str, Any]:
        """The constructor's arguments besides ``config``, as plain values (the bundle's
        ``extra``): the dims; a subclass that takes more (a goal size, a maze) adds them."""
        return {"observation_dim": self.observation_dim, "action_dim": self.action_dim}

    def save(self, path: str | os.PathLike, **parts: Any) -> Path:
        """Write config, :meth:`build_args` and weights (normaliser statistics included) as one
        bundle, plus ``parts`` (see :func:`save_module`)."""
        return save_module(path, self, dataclasses.asdict(self.config), self.build_args(), **parts)

    @classmethod
    def load(cls: type[M], path: str | os.PathLike, map_location: Any = "cpu") -> M:
        """Rebuild a model saved by :meth:`save`, on ``map_location``."""
        state, config, extra = load_module(path, kind=cls.__name__, map_location=map_location)
        try:
            model = cls(**extra, config=cls.config_class(**config))
            model.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise TtrlError(f"{path} does not rebuild a {cls.__name__} ({reason})") from err
        return model.to(map_location)
