"""Training speed: forward + backward + AdamW steps of the model, next to the transformers port.

Random tokens stand in for data: the cost of a step depends only on the sizes. Both models get the
same weights, the same batch and the same optimiser, and their timed steps are interleaved so that a
busy machine slows both alike.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from ttrl.errors import TtrlError
from ttrl.model.config import TrajectoryTransformerConfig
from ttrl.model.transformer import TrajectoryTransformer


def config_for_env(env: str) -> TrajectoryTransformerConfig:
    """The paper's model for a D4RL env name (halfcheetah, hopper, walker2d): 10-transition block."""
    from ttrl.data.registry import ENVS

    if env not in ENVS:
        raise TtrlError(f"unknown env {env!r}; use one of {', '.join(ENVS)}")
    return TrajectoryTransformerConfig.for_dims(ENVS[env].observation_dim, ENVS[env].action_dim)


def random_batch(
    config: TrajectoryTransformerConfig, batch_size: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, next-token targets and a loss mask of a full block (bin ids and stop tokens)."""
    generator = torch.Generator().manual_seed(seed)
    sequence = torch.randint(
        0, config.vocab_size + 1, (batch_size, config.block_size + 1), generator=generator
    )
    loss_mask = torch.ones(batch_size, config.block_size)
    # contiguous: the transformers port views the targets
    inputs, targets = sequence[:, :-1].contiguous(), sequence[:, 1:].contiguous()
    return inputs.to(device), targets.to(device), loss_mask.to(device)


def make_train_step(
    model: torch.nn.Module, forward: Callable[..., Any], batch: tuple, bf16: bool
) -> Callable[[], None]:
    """One optimisation step as training runs it: AdamW (0.9, 0.95), grad-norm clip 1.0."""
    device = batch[0].device
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=6e-4,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        fused=device.type == "cuda",
    )
    tokens, targets, loss_mask = batch

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(tokens, targets=targets, attention_mask=loss_mask, return_dict=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def hf_port(ours: TrajectoryTransformer) -> torch.nn.Module | None:
    """transformers' TrajectoryTransformerModel with the same config and weights, if importable."""
    try:
        import transformers
    except ImportError:
        return None
    config = transformers.TrajectoryTransformerConfig(**ours.config.to_dict())
    model = transformers.TrajectoryTransformerModel(config)
    model.load_state_dict(ours.state_dict(), strict=False)  # its attention-mask buffers are built
    return model.to(next(ours.parameters()).device).train()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(step: Callable[[], None], n_steps: int, device: torch.device) -> float:
    """Run ``n_steps`` untimed steps (compilation, optimiser state); return peak memory in MiB."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(n_steps):
        step()
    synchronize(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS: the whole process's peak so far.
    scale = 2**20 if sys.platform == "darwin" else 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def time_interleaved(
    steps: dict[str, Callable[[], None]], n_steps: int, device: torch.device
) -> dict[str, float]:
    """Mean seconds per step of each contender, taking turns step by step."""
    total = dict.fromkeys(steps, 0.0)
    for _ in tqdm(range(n_steps), desc="timed steps", file=sys.stderr, leave=False):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            total[name] += time.perf_counter() - start
    return {name: seconds / n_steps for name, seconds in total.items()}


# aten ops by the kind of work they do, for --breakdown; everything else counts as "other".
OP_KINDS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm"),
    "dropout_masks": ("aten::bernoulli_", "aten::uniform_", "aten::rand", "aten::native_dropout"),
    "softmax": ("aten::_softmax", "aten::_softmax_backward_data", "aten::_safe_softmax"),
}


def step_time_by_kind(step: Callable[[], None], n_steps: int) -> dict[str, float]:
    """CPU milliseconds per step spent in each kind of op (self time), from torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(n_steps):
            step()
    kind_of = {op: kind for kind, ops in OP_KINDS.items() for op in ops}
    totals = dict.fromkeys([*OP_KINDS, "other"], 0.0)
    for event in profiler.key_averages():
        totals[kind_of.get(event.key, "other")] += event.self_cpu_time_total / 1000 / n_steps
    return {kind: round(ms, 1) for kind, ms in totals.items()}


def benchmark_training(
    env: str = "halfcheetah",
    batch_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    device: str = "cpu",
    compile: bool = False,
    bf16: bool = False,
    compare_hf: bool = True,
    seed: int = 0,
    threads: int | None = None,
    breakdown: bool = False,
) -> dict[str, Any]:
    """Tokens/s, ms/step and peak memory of training steps on one full block per sequence.

    With ``compare_hf`` and transformers importable, the transformers port (always eager) is timed on
    the same weights and batch and ``ttrl_over_hf`` is the ratio of tokens/s. ``threads`` sets torch's
    CPU threads (default: torch's choice). ``breakdown`` (CPU only) adds each contender's profiled
    milliseconds per step by kind of op (matmul, dropout masks, softmax, other), after the timing.
    """
    if steps < 1 or warmup < 1 or batch_size < 1:
        raise TtrlError("--steps, --warmup and --batch-size must be at least 1")
    target = torch.device(device)
    if breakdown and target.type != "cpu":
        raise TtrlError("--breakdown profiles CPU ops only; drop it, or use --device cpu")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise TtrlError("--device cuda but CUDA is not available; use --device cpu")
    if threads is not None:
        torch.set_num_threads(threads)
    config = config_for_env(env)
    torch.manual_seed(seed)
    ours = TrajectoryTransformer(config).to(target).train()
    batch = random_batch(config, batch_size, target, seed)
    forward = torch.compile(ours) if compile else ours
    contenders = {"ttrl": make_train_step(ours, forward, batch, bf16)}
    peaks = {"ttrl": warm_up(contenders["ttrl"], warmup, target)}
    theirs = hf_port(ours) if compare_hf else None
    if theirs is not None:
        contenders["hf"] = make_train_step(theirs, theirs, batch, bf16)
        peaks["hf"] = warm_up(contenders["hf"], warmup, target)
    seconds = time_interleaved(contenders, steps, target)
    tokens_per_step = batch_size * config.block_size
    result: dict[str, Any] = {
        "bench": "train",
        "env": env,
        "batch_size": batch_size,
        "seq_len": config.block_size,
        "steps": steps,
        "device": str(target),
        "dtype": "bf16-autocast" if bf16 else "fp32",
        "compile": compile,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
        "tokens_per_s": round(tokens_per_step / seconds["ttrl"], 1),
        "ms_per_step": round(seconds["ttrl"] * 1000, 2),
        "peak_memory_mb": round(peaks["ttrl"], 1),
        "peak_memory_kind": "cuda_max_allocated" if target.type == "cuda" else "process_max_rss",
    }
    if theirs is not None:
        result.update(
            hf_tokens_per_s=round(tokens_per_step / seconds["hf"], 1),
            hf_ms_per_step=round(seconds["hf"] * 1000, 2),
            hf_peak_memory_mb=round(peaks["hf"], 1),
            hf_compile=False,
            ttrl_over_hf=round(seconds["hf"] / seconds["ttrl"], 3),
        )
    if breakdown:  # profiled separately: the profiler's overhead stays out of the timings above
        for name, step in contenders.items():
            prefix = "" if name == "ttrl" else f"{name}_"
            result[f"{prefix}profiled_ms_per_step_by_kind"] = step_time_by_kind(step, steps)
    return result
