"""Behaviour policies for the D4RL-recipe datasets: SAC training, snapshots, and run-time loading.

D4RL's recipe: expert = SAC trained to convergence; medium = SAC stopped early at about 1/3 of the
expert return; medium-replay = the replay buffer up to that point. :func:`train_behavior` trains SAC
(stable-baselines3, only needed for training) on a MuJoCo v5 env, evaluates and snapshots the actor every
``snapshot_interval`` steps, records the "medium point", and saves the replay buffer up to it.

At run time a policy is a small torch MLP with the SB3 SAC actor's architecture
(:class:`SquashedGaussianActor`), loaded by :func:`load_policy` without stable-baselines3. Its actions
are sampled stochastically by default, as D4RL's data was.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ttrl.data.registry import ENVS, DatasetSpec, split_dataset_name
from ttrl.errors import TtrlError
from ttrl.io import atomic_torch_save, atomic_write, atomic_write_json

# SB3's SAC actor clamps log-std to this range; the shipped actors must sample identically.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

# The dataset levels made by a policy of their own (the others reuse these or random actions).
POLICY_LEVELS = ("medium", "expert")
# Where the shipped behaviour policies live: <repo>/policies/<env>/<level>.{pt,json}.
POLICIES_DIR = Path(__file__).resolve().parents[3] / "policies"


@dataclass(frozen=True)
class BehaviorEnv:
    """A D4RL env name with its gymnasium v5 id and D4RL reference returns (from the registry)."""

    name: str
    env_id: str
    ref_min_score: float
    ref_max_score: float

    def normalized_score(self, returns: float | np.ndarray) -> float | np.ndarray:
        """D4RL's normalisation: 100 * (R - random) / (expert - random)."""
        spec = DatasetSpec(
            self.name, self.env_id, None, None, self.ref_min_score, self.ref_max_score, "D4RL"
        )
        return spec.normalized_score(returns)


def behavior_env(name: str) -> BehaviorEnv:
    """Look up a D4RL env name (``halfcheetah``, ``hopper``, ``walker2d``)."""
    if name not in ENVS:
        raise TtrlError(
            f"unknown env {name!r} for behaviour policies; use one of {', '.join(ENVS)}"
        )
    info = ENVS[name]
    return BehaviorEnv(name, info.env_id, info.ref_min_score, info.ref_max_score)


def train_behavior_command(env: str, level: str = "expert") -> str:
    """The command that trains and ships ``env``'s behaviour policy up to ``level`` (medium: stop there)."""
    stop = " stop_at_medium=true" if level != "expert" else ""
    return f"python scripts/train_behavior.py env={env} export_dir=policies{stop}"


# --------------------------------------------------------------------------------------------------
# The actor, its sampling, and its files


class SquashedGaussianActor(nn.Module):
    """SB3's SAC actor: MLP -> (mean, log-std), a = tanh(mean + std * eps), rescaled to the action box.

    Module names match SB3's ``Actor`` (``latent_pi``, ``mu``, ``log_std``) so its state dict loads 1:1.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        action_low: Sequence[float] | None = None,
        action_high: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = observation_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(width, action_dim)
        self.log_std = nn.Linear(width, action_dim)
        low = torch.full((action_dim,), -1.0) if action_low is None else torch.as_tensor(action_low)
        high = (
            torch.full((action_dim,), 1.0) if action_high is None else torch.as_tensor(action_high)
        )
        self.register_buffer("action_low", low.float())
        self.register_buffer("action_high", high.float())
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, S] -> (mean [B, A], log_std [B, A]) of the pre-tanh Gaussian."""
        latent = self.latent_pi(obs)
        return self.mu(latent), self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX)

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> torch.Tensor:
        """obs [B, S] -> actions [B, A] in the env's action box (sampled unless ``deterministic``)."""
        mean, log_std = self(obs)
        pre_tanh = mean
        if not deterministic:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            pre_tanh = mean + log_std.exp() * noise
        squashed = torch.tanh(pre_tanh)
        return self.action_low + 0.5 * (squashed + 1.0) * (self.action_high - self.action_low)

    def spec(self) -> dict[str, Any]:
        """The constructor arguments, to rebuild this actor from a file."""
        return {
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "hidden_sizes": list(self.hidden_sizes),
        }


class BehaviorPolicy:
    """A callable ``obs -> action`` around a :class:`SquashedGaussianActor` (numpy in, numpy out).

    Accepts one observation ``[S]`` or a batch ``[B, S]``. Sampling uses its own seeded generator, so a
    rollout is reproducible given the policy seed and the env seed.
    """

    def __init__(self, actor: SquashedGaussianActor, seed: int = 0, deterministic: bool = False):
        self.actor = actor.eval()
        self.deterministic = deterministic
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        batch = obs_t.unsqueeze(0) if obs_t.ndim == 1 else obs_t
        actions = self.actor.act(batch, self.generator, self.deterministic).numpy()
        return actions[0] if obs_t.ndim == 1 else actions

    def seed(self, seed: int) -> None:
        """Restart the sampling noise from ``seed``."""
        self.generator.manual_seed(seed)


def actor_from_sb3(model: Any) -> SquashedGaussianActor:
    """Copy the actor of an SB3 ``SAC`` model into a :class:`SquashedGaussianActor` (CPU)."""
    space = model.action_space
    net_arch = [m.out_features for m in model.actor.latent_pi if isinstance(m, nn.Linear)]
    actor = SquashedGaussianActor(
        int(np.prod(model.observation_space.shape)),
        int(np.prod(space.shape)),
        net_arch,
        space.low,
        space.high,
    )
    state = {k: v.detach().cpu() for k, v in model.actor.state_dict().items()}
    actor.load_state_dict(state, strict=False)  # action bounds come from the space, not SB3's dict
    missing = set(actor.state_dict()) - set(state) - {"action_low", "action_high"}
    if missing:
        raise RuntimeError(f"SB3 actor lacks parameters {sorted(missing)}")
    return actor


def save_actor(path: str | Path, actor: SquashedGaussianActor, info: dict[str, Any]) -> Path:
    """Write ``actor`` (state dict + architecture) to ``path`` and ``info`` to ``path`` with .json."""
    path = Path(path)
    atomic_torch_save({"spec": actor.spec(), "state_dict": actor.state_dict()}, path)
    atomic_write_json(path.with_suffix(".json"), info)
    return path


def load_actor(path: str | Path) -> SquashedGaussianActor:
    """Rebuild a :class:`SquashedGaussianActor` saved by :func:`save_actor`."""
    path = Path(path)
    if not path.is_file():
        raise TtrlError(
            f"no behaviour policy file at {path}; train one with scripts/train_behavior.py"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    actor = SquashedGaussianActor(**blob["spec"])
    actor.load_state_dict(blob["state_dict"])
    return actor


def shipped_policy_path(env: str, level: str, policies_dir: str | Path | None = None) -> Path:
    """``policies/<env>/<level>.pt``; TtrlError naming the training command if it is missing."""
    path = Path(policies_dir or POLICIES_DIR) / env / f"{level}.pt"
    if not path.is_file():
        raise TtrlError(
            f"no {level} behaviour policy for {env} at {path}; make it with `{train_behavior_command(env, level)}`"
        )
    return path


def load_policy(
    path_or_name: str | Path,
    seed: int = 0,
    deterministic: bool = False,
    policies_dir: str | Path | None = None,
) -> BehaviorPolicy:
    """Load a behaviour policy as a callable ``obs -> action``.

    ``path_or_name``: a ``.pt`` file written by :func:`save_actor`, or a dataset-style name
    ``<env>-<level>`` (e.g. ``hopper-medium``) for the policy shipped in ``policies/``.
    """
    path = Path(path_or_name)
    if path.suffix != ".pt":
        env, level = split_dataset_name(str(path_or_name))
        if level not in POLICY_LEVELS:
            raise TtrlError(
                f"{path_or_name!r} has no behaviour policy; use <env>-medium or <env>-expert or a .pt file"
            )
        path = shipped_policy_path(env, level, policies_dir)
    return BehaviorPolicy(load_actor(path), seed=seed, deterministic=deterministic)


def policy_info(path: str | Path) -> dict[str, Any]:
    """The JSON record saved next to a policy file (its evaluated return, training steps, ...)."""
    info_path = Path(path).with_suffix(".json")
    return json.loads(info_path.read_text()) if info_path.is_file() else {}


# --------------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class Evaluation:
    """Returns of a few seeded episodes and their mean, standard error and normalised score."""

    returns: list[float]
    lengths: list[int]
    normalized_score: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def stderr(self) -> float:
        n = len(self.returns)
        return float(np.std(self.returns, ddof=1) / math.sqrt(n)) if n > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "return_mean": self.mean,
            "return_stderr": self.stderr,
            "normalized_score": self.normalized_score,
            "n_episodes": len(self.returns),
            "returns": self.returns,
            "lengths": self.lengths,
        }


def evaluate_policy(policy: BehaviorPolicy, env: str, n_episodes: int, seed: int) -> Evaluation:
    """Run ``n_episodes`` episodes of ``policy`` on ``env`` (reset seeds ``seed``, ``seed + 1``, ...)."""
    spec = behavior_env(env)
    gym_env = gym.make(spec.env_id)
    policy.seed(seed)
    returns, lengths = [], []
    try:
        for episode in range(n_episodes):
            obs, _ = gym_env.reset(seed=seed + episode)
            total, steps, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = gym_env.step(policy(obs))
                total, steps, done = total + float(reward), steps + 1, terminated or truncated
            returns.append(total)
            lengths.append(steps)
    finally:
        gym_env.close()
    return Evaluation(returns, lengths, float(spec.normalized_score(np.mean(returns))))


# --------------------------------------------------------------------------------------------------
# SAC training


@dataclass
class BehaviorTrainingConfig:
    """Options of ``scripts/train_behavior.py`` (see configs/train_behavior.yaml for their meaning)."""

    env: str = "halfcheetah"
    seed: int = 0
    total_steps: int = 1_000_000
    snapshot_interval: int = 5_000
    checkpoint_interval: int = 20_000
    eval_episodes: int = 5
    medium_fraction: float = 1 / 3
    stop_at_medium: bool = False
    export_dir: str | None = None
    export_eval_episodes: int = 10
    learning_starts: int = 10_000
    torch_threads: int = 1
    sac: dict[str, Any] = field(default_factory=dict)


@dataclass
class _RunState:
    """What a run has done so far (``state.json`` in the run dir)."""

    steps: int = 0
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    medium_step: int | None = None
    medium_snapshot: str | None = None
    finished: bool = False


def _read_state(run_dir: Path) -> _RunState:
    path = run_dir / "state.json"
    return _RunState(**json.loads(path.read_text())) if path.is_file() else _RunState()


def _write_state(run_dir: Path, state: _RunState) -> None:
    atomic_write_json(run_dir / "state.json", dataclasses.asdict(state))


def _make_sac(cfg: BehaviorTrainingConfig, spec: BehaviorEnv) -> Any:
    from stable_baselines3 import SAC

    kwargs = {"learning_starts": cfg.learning_starts, **cfg.sac}
    return SAC("MlpPolicy", gym.make(spec.env_id), seed=cfg.seed, device="cpu", verbose=0, **kwargs)


_BUFFER_KEYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
CHECKPOINT_FILE = "checkpoint.npz"


def _save_checkpoint(model: Any, run_dir: Path) -> None:
    """Model and the filled part of its replay buffer in ONE file written atomically, so a killed
    run always resumes from a consistent pair (SB3's own buffer pickle would also store the empty rows).
    """
    buffer = model.replay_buffer
    n = buffer.buffer_size if buffer.full else buffer.pos
    model_zip = io.BytesIO()
    model.save(model_zip)
    arrays = {key: getattr(buffer, key)[:n] for key in _BUFFER_KEYS}
    arrays |= {"pos": np.array(buffer.pos), "full": np.array(buffer.full)}
    arrays["model_zip"] = np.frombuffer(model_zip.getvalue(), dtype=np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(run_dir / CHECKPOINT_FILE, write)


def _load_checkpoint(run_dir: Path, spec: BehaviorEnv) -> Any:
    from stable_baselines3 import SAC

    with np.load(run_dir / CHECKPOINT_FILE) as data:
        model_zip = io.BytesIO(data["model_zip"].tobytes())
        model = SAC.load(model_zip, env=gym.make(spec.env_id), device="cpu")
        buffer = model.replay_buffer
        for key in _BUFFER_KEYS:
            values = data[key]
            getattr(buffer, key)[: len(values)] = values
        buffer.pos, buffer.full = int(data["pos"]), bool(data["full"])
    # The env restarts on resume: end the buffer's unfinished episode as a time-out there.
    if buffer.full or buffer.pos > 0:
        last = (buffer.pos - 1) % buffer.buffer_size
        buffer.dones[last] = 1.0
        buffer.timeouts[last] = 1.0
    return model


def replay_buffer_arrays(buffer: Any, n_steps: int) -> dict[str, np.ndarray]:
    """The first ``n_steps`` transitions of an SB3 replay buffer as flat float32 arrays.

    Episode boundaries are kept: ``terminations`` (a real end) and ``truncations`` (time-out); the last
    transition is marked truncated if its episode was still running. ``final_observations`` holds the
    observation after each episode's last step, one row per episode, in order.
    """
    obs = buffer.observations[:n_steps, 0].astype(np.float32)
    next_obs = buffer.next_observations[:n_steps, 0].astype(np.float32)
    dones = buffer.dones[:n_steps, 0] > 0.5
    truncations = buffer.timeouts[:n_steps, 0] > 0.5
    terminations = dones & ~truncations
    truncations = truncations.copy()
    if n_steps and not dones[-1]:
        truncations[-1] = True
    ends = terminations | truncations
    return {
        "observations": obs,
        "actions": buffer.actions[:n_steps, 0].astype(np.float32),
        "rewards": buffer.rewards[:n_steps, 0].astype(np.float32),
        "terminations": terminations,
        "truncations": truncations,
        "final_observations": next_obs[ends],
    }


def save_replay_buffer_prefix(buffer: Any, n_steps: int, path: str | Path) -> Path:
    """Write :func:`replay_buffer_arrays` to a compressed ``.npz`` atomically."""
    arrays = replay_buffer_arrays(buffer, n_steps)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def _progress_callback(bar: Any) -> Any:
    """An SB3 callback that advances the tqdm ``bar`` once per env step."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Progress(BaseCallback):
        def _on_step(self) -> bool:
            bar.update(1)
            return True

    return Progress()


def _snapshot(
    model: Any, cfg: BehaviorTrainingConfig, spec: BehaviorEnv, run_dir: Path, steps: int
) -> dict[str, Any]:
    """Evaluate the current actor (stochastic, seeded) and save it with its scores."""
    actor = actor_from_sb3(model)
    evaluation = evaluate_policy(
        BehaviorPolicy(actor, seed=cfg.seed), spec.name, cfg.eval_episodes, seed=10_000 + cfg.seed
    )
    record = {"step": steps, "file": f"snapshots/step_{steps:08d}.pt", **evaluation.as_dict()}
    save_actor(
        run_dir / record["file"],
        actor,
        {"env": spec.name, "env_id": spec.env_id, "seed": cfg.seed, **record},
    )
    return record


def _rewind_state(state: _RunState, steps: int) -> None:
    """Forget what happened after the checkpoint a run resumes from (it will happen again)."""
    state.steps = steps
    state.snapshots = [s for s in state.snapshots if s["step"] <= steps]
    if state.medium_step is not None and state.medium_step > steps:
        state.medium_step, state.medium_snapshot = None, None


def medium_snapshot(snapshots: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The medium point once ``snapshots[-1]`` is the first to reach ``target``: that snapshot, or the
    one before it when that one is closer to the target (learning can jump far past it in one interval).
    """
    crossing = snapshots[-1]
    if len(snapshots) > 1:
        before = snapshots[-2]
        if abs(before["return_mean"] - target) < abs(crossing["return_mean"] - target):
            return before
    return crossing


def save_medium_point(
    buffer: Any, snapshot: dict[str, Any], run_dir: Path, cfg: BehaviorTrainingConfig
) -> None:
    """Save the replay buffer up to the medium ``snapshot`` and, with ``cfg.export_dir``, ship both."""
    save_replay_buffer_prefix(buffer, snapshot["step"], run_dir / "medium_replay.npz")
    if cfg.export_dir:
        export_policy(run_dir, snapshot, "medium", cfg)


def _done(state: _RunState, cfg: BehaviorTrainingConfig) -> bool:
    """Training ends at ``total_steps``, or at the medium point when ``stop_at_medium``."""
    return state.steps >= cfg.total_steps or (cfg.stop_at_medium and state.medium_step is not None)


def train_behavior(cfg: BehaviorTrainingConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train SAC on ``cfg.env``, snapshotting the actor; resumes from ``run_dir`` if it holds a run.

    Writes ``run_dir/snapshots/step_*.{pt,json}``, ``state.json`` (every snapshot's return and the medium
    point), ``medium_replay.npz`` (the buffer up to the medium point) and ``checkpoint.npz`` (to resume).
    Returns the final state as a dict.
    """
    from stable_baselines3.common.logger import Logger
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.torch_threads)
    spec = behavior_env(cfg.env)
    run_dir = Path(run_dir)
    resumed = (run_dir / CHECKPOINT_FILE).is_file()
    state = _read_state(run_dir) if resumed else _RunState()
    model = _load_checkpoint(run_dir, spec) if resumed else _make_sac(cfg, spec)
    # Without a logger of its own, every learn() call makes an empty SB3-<time> folder in /tmp.
    model.set_logger(Logger(folder=None, output_formats=[]))
    if resumed:
        _rewind_state(state, int(model.num_timesteps))
    # D4RL's medium level: about 1/3 of the expert's return (its reference max score).
    medium_return = cfg.medium_fraction * spec.ref_max_score
    bar = tqdm(
        total=cfg.total_steps,
        initial=state.steps,
        desc=f"SAC {spec.env_id}",
        mininterval=10,
        file=sys.stderr,
    )
    callback = _progress_callback(bar)
    try:
        while not _done(state, cfg):
            chunk = min(
                cfg.snapshot_interval - state.steps % cfg.snapshot_interval,
                cfg.total_steps - state.steps,
            )
            model.learn(chunk, reset_num_timesteps=False, callback=callback, progress_bar=False)
            state.steps = int(model.num_timesteps)
            record = _snapshot(model, cfg, spec, run_dir, state.steps)
            state.snapshots.append(record)
            bar.write(
                f"step {state.steps}: return {record['return_mean']:.1f} ± {record['return_stderr']:.1f} "
                f"(normalised {record['normalized_score']:.1f})"
            )
            if state.medium_step is None and record["return_mean"] >= medium_return:
                medium = medium_snapshot(state.snapshots, medium_return)
                state.medium_step, state.medium_snapshot = medium["step"], medium["file"]
                save_medium_point(model.replay_buffer, medium, run_dir, cfg)
                bar.write(
                    f"medium point: step {medium['step']}, return {medium['return_mean']:.1f}"
                )
            state.finished = _done(state, cfg)
            if state.steps % cfg.checkpoint_interval == 0 or state.finished:
                _save_checkpoint(model, run_dir)
            _write_state(run_dir, state)
        if cfg.export_dir and state.steps >= cfg.total_steps and state.snapshots:
            export_policy(run_dir, state.snapshots[-1], "expert", cfg)
    finally:
        bar.close()
    return dataclasses.asdict(state)


def export_policy(
    run_dir: str | Path, snapshot: dict[str, Any], level: str, cfg: BehaviorTrainingConfig
) -> Path:
    """Ship a snapshot as ``<cfg.export_dir>/<env>/<level>.{pt,json}`` (re-evaluated on more episodes).

    For ``medium`` the replay buffer up to the medium point is shipped too, as ``medium_replay.npz``.
    """
    run_dir = Path(run_dir)
    spec = behavior_env(cfg.env)
    actor = load_actor(run_dir / snapshot["file"])
    evaluation = evaluate_policy(
        BehaviorPolicy(actor, seed=cfg.seed),
        spec.name,
        cfg.export_eval_episodes,
        seed=20_000 + cfg.seed,
    )
    info = {
        "env": spec.name,
        "env_id": spec.env_id,
        "level": level,
        **evaluation.as_dict(),
        "evaluation": f"stochastic actions, env reset seeds {20_000 + cfg.seed}+i, policy seed {cfg.seed}",
        "ref_min_score": spec.ref_min_score,
        "ref_max_score": spec.ref_max_score,
        "training_steps": snapshot["step"],
        "training_eval_return": snapshot["return_mean"],
        "seed": cfg.seed,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + shlex.join(sys.argv),
        "algorithm": "SAC (stable-baselines3, MlpPolicy 256-256; its defaults except sac_kwargs)",
        "sac_kwargs": {"learning_starts": cfg.learning_starts, **cfg.sac},
    }
    out_dir = Path(cfg.export_dir) / spec.name
    path = save_actor(out_dir / f"{level}.pt", actor, info)
    if level == "medium":
        source = run_dir / "medium_replay.npz"
        atomic_write(out_dir / "medium_replay.npz", lambda tmp: shutil.copyfile(source, tmp))
    return path
