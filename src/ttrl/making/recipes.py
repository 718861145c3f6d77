"""D4RL's dataset levels, made locally from the behaviour policies in ``policies/``.

- random: uniform random actions.
- medium: the medium policy (SAC stopped at about 1/3 of the expert return), stochastic actions.
- medium-replay: the SAC replay buffer up to the medium point, episodes split where they ended there.
- expert: the expert policy (SAC trained to convergence), stochastic actions.
- medium-expert: the medium and expert datasets concatenated (the same episodes, medium first).

Each level becomes the Minari dataset ``ttrl/<env>/<level>-v0`` with D4RL's reference scores and
metadata naming the policy (file, evaluated return) and the number of steps that made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ttrl.data.registry import (
    ENVS,
    minari_dataset_exists,
    read_minari_metadata,
    split_dataset_name,
    ttrl_minari_id,
)
from ttrl.errors import TtrlError
from ttrl.making.behavior import (
    POLICIES_DIR,
    load_policy,
    policy_info,
    shipped_policy_path,
    train_behavior_command,
)
from ttrl.making.collect import (
    check_make_options,
    check_rollout_space,
    collect_dataset,
    collect_episodes,
    dataset_writer,
    write_level_dataset,
)

MEDIUM_REPLAY_FILE = "medium_replay.npz"


def make_level_dataset(
    name: str,
    n_steps: int = 1_000_000,
    seed: int = 0,
    overwrite: bool = False,
    policies_dir: str | Path | None = None,
    progress: bool = True,
    max_episode_steps: int | None = None,
) -> Path:
    """Make the D4RL-style dataset ``name`` (e.g. ``halfcheetah-medium``) as ``ttrl/<env>/<level>-v0``.

    Args:
        name: ``<env>-<level>``, level one of random, medium, medium-replay, medium-expert, expert.
        n_steps: env steps to collect (D4RL used 1M); for medium-replay, at most this many steps of the
            replay buffer; for medium-expert, the steps of each part when a part has to be made first.
        seed: env and policy-sampling seed.
        overwrite: replace an existing dataset (for medium-expert also its missing-or-replaced parts).
        policies_dir: where ``<env>/<level>.pt`` and ``<env>/medium_replay.npz`` are
            (default: the policies shipped in the repo).
        progress: show tqdm bars.
        max_episode_steps: override the env's time limit (short episodes for quick tests).

    Returns:
        The dataset's folder.

    Raises:
        TtrlError: unknown name or options out of range, the dataset exists and not ``overwrite``,
            another process is making it (the message names it), too little free disk space, or a
            behaviour policy or replay buffer is missing (the message names the train_behavior
            command that makes it).
    """
    env, level = split_dataset_name(name)
    check_make_options(n_steps, seed, max_episode_steps)
    # one writer per dataset: a second run of the same name fails at once, naming this one
    with dataset_writer(ttrl_minari_id(name), overwrite):
        if level == "random":
            return collect_dataset(
                name, n_steps, seed, "random", overwrite, progress, max_episode_steps
            )
        policies_dir = Path(policies_dir or POLICIES_DIR)
        if level == "medium-replay":
            episodes, metadata = _medium_replay_episodes(env, n_steps, policies_dir)
        elif level == "medium-expert":
            episodes, metadata = _medium_expert_episodes(
                env, n_steps, seed, overwrite, policies_dir, progress, max_episode_steps
            )
        else:
            episodes, metadata = _rollout_episodes(
                env, level, n_steps, seed, policies_dir, progress, max_episode_steps
            )
        return write_level_dataset(
            name,
            episodes,
            {"recipe": f"D4RL {level}", "seed": seed, **metadata},
            overwrite=overwrite,
            description=f"{name} made locally by ttrl with D4RL's recipe for the {level} level",
        )


def _policy_metadata(path: Path) -> dict[str, Any]:
    """What the dataset records about the behaviour policy that made it."""
    info = policy_info(path)
    return {
        "policy": _display_path(path),
        "policy_return_mean": info.get("return_mean"),
        "policy_return_stderr": info.get("return_stderr"),
        "policy_normalized_score": info.get("normalized_score"),
        "policy_training_steps": info.get("training_steps"),
    }


def _display_path(path: Path) -> str:
    """A policy file relative to the repo when it is a shipped one, else absolute."""
    try:
        return str(path.resolve().relative_to(POLICIES_DIR.parent))
    except ValueError:
        return str(path.resolve())


def _rollout_episodes(
    env: str,
    level: str,
    n_steps: int,
    seed: int,
    policies_dir: Path,
    progress: bool,
    max_episode_steps: int | None,
) -> tuple[list, dict[str, Any]]:
    """medium / expert: ``n_steps`` of the level's policy, actions sampled as D4RL did."""
    path = shipped_policy_path(env, level, policies_dir)
    policy = load_policy(path, seed=seed)
    check_rollout_space(env, n_steps, max_episode_steps, ttrl_minari_id(f"{env}-{level}"))
    episodes = collect_episodes(
        ENVS[env].env_id, policy, n_steps, seed, progress, max_episode_steps
    )
    metadata = {
        **_policy_metadata(path),
        "n_steps": n_steps,
        "max_episode_steps": max_episode_steps,
    }
    return episodes, metadata


def load_replay_episodes(
    path: str | Path, n_steps: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Split a saved replay buffer (``medium_replay.npz``) into episodes where its episodes ended.

    Each episode gets its final observation (the one after its last step), so observations have one
    more row than actions. ``n_steps`` keeps only the first steps; a cut episode is marked truncated.
    """
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    total = len(arrays["rewards"])
    n_steps = total if n_steps is None else min(n_steps, total)
    ends = np.flatnonzero(arrays["terminations"] | arrays["truncations"])
    episodes = []
    start = 0
    for index, end in enumerate(ends):
        stop = min(end + 1, n_steps)
        cut = stop < end + 1
        final = arrays["observations"][stop] if cut else arrays["final_observations"][index]
        truncations = arrays["truncations"][start:stop].copy()
        truncations[-1] |= cut
        episodes.append(
            {
                "observations": np.concatenate([arrays["observations"][start:stop], final[None]]),
                "actions": arrays["actions"][start:stop],
                "rewards": arrays["rewards"][start:stop],
                "terminations": arrays["terminations"][start:stop] & ~cut,
                "truncations": truncations,
            }
        )
        start = stop
        if start >= n_steps:
            break
    return episodes


def _medium_replay_episodes(
    env: str, n_steps: int, policies_dir: Path
) -> tuple[list, dict[str, Any]]:
    """medium-replay: the replay buffer up to the medium point (at most ``n_steps`` of it)."""
    path = policies_dir / env / MEDIUM_REPLAY_FILE
    if not path.is_file():
        raise TtrlError(
            f"no medium replay buffer for {env} at {path}; make it with `{train_behavior_command(env, 'medium')}`"
        )
    episodes = load_replay_episodes(path, n_steps)
    medium = shipped_policy_path(env, "medium", policies_dir)
    metadata = {
        **_policy_metadata(medium),
        "policy": "SAC replay buffer up to the medium point",
        "replay_buffer_file": _display_path(path),
        "n_steps": int(sum(len(e["rewards"]) for e in episodes)),
    }
    return episodes, metadata


def _medium_expert_episodes(
    env: str,
    n_steps: int,
    seed: int,
    overwrite: bool,
    policies_dir: Path,
    progress: bool,
    max_episode_steps: int | None,
) -> tuple[list, dict[str, Any]]:
    """medium-expert: the medium then the expert dataset's episodes (parts are made if missing)."""
    import minari

    episodes: list = []
    parts = {}
    for level in ("medium", "expert"):
        part_id = ttrl_minari_id(f"{env}-{level}")
        if overwrite or not minari_dataset_exists(part_id):
            make_level_dataset(
                f"{env}-{level}",
                n_steps,
                seed,
                overwrite=True,
                policies_dir=policies_dir,
                progress=progress,
                max_episode_steps=max_episode_steps,
            )
        episodes += list(minari.load_dataset(part_id).iterate_episodes())
        part_metadata = read_minari_metadata(part_id).get("ttrl", {})
        parts[level] = {"dataset": part_id, **_part_summary(part_metadata)}
    n_total = int(sum(len(e.rewards) for e in episodes))
    return episodes, {"policy": "medium + expert", "parts": parts, "n_steps": n_total}


def _part_summary(metadata: dict[str, Any]) -> dict[str, Any]:
    """The policy and size facts of a part of medium-expert, from its ttrl metadata."""
    return {k: v for k, v in metadata.items() if k.startswith(("policy", "n_", "seed"))}


def level_dataset_summary(name: str, time_limit: int = 1000) -> dict[str, Any]:
    """Size and returns of the local dataset ``name`` (``ttrl/<env>/<level>-v0``), for docs and checks.

    The average return and normalised score are over whole episodes: those that terminated or reached
    the env's ``time_limit``; an episode cut by the step budget (the last one) is left out.
    """
    from ttrl.data.loading import load_transitions
    from ttrl.data.registry import minari_dataset_dir, resolve_dataset
    from ttrl.data.summary import episode_returns

    spec = resolve_dataset(name, source="ttrl")
    data = load_transitions(spec)
    returns, whole = episode_returns(data, time_limit)
    ends = np.flatnonzero(data.terminals | data.timeouts)
    folder = minari_dataset_dir(spec.minari_id)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {
        "name": name,
        "n_steps": len(data),
        "n_episodes": len(ends),
        "n_whole_episodes": int(whole.sum()),
        "return_mean": float(returns[whole].mean()) if whole.any() else None,
        "normalized_score_mean": float(spec.normalized_score(returns[whole].mean()))
        if whole.any()
        else None,
        "size_mb": size / 2**20,
    }
