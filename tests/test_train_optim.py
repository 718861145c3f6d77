"""The optimiser's weight-decay groups, the learning-rate schedule and the training budget."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf

from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig
from ttrl.training import LRSchedule, build_optimizer, decay_parameter_names
from ttrl.training.optim import build_scheduler, schedule_from_epochs
from ttrl.training.trainer import step_budget


@pytest.fixture
def model():
    config = TrajectoryTransformerConfig(
        observation_dim=3, action_dim=2, transition_dim=7, block_size=20, n_layer=2, n_embd=16
    )
    return TrajectoryTransformer(config)


def test_decay_applies_to_linear_and_head_weights_only(model):
    decayed, plain = decay_parameter_names(model)
    # Written out from the paper's rule and the HF module names: per block the 6 Linear weights.
    expected = {
        f"blocks.{i}.{name}.weight"
        for i in range(2)
        for name in ("attn.key", "attn.query", "attn.value", "attn.proj", "l1", "l2")
    } | {"head.weight"}
    assert set(decayed) == expected
    assert {"tok_emb.weight", "pos_emb", "ln_f.weight", "ln_f.bias"} <= set(plain)
    assert all(
        n.endswith("bias") or ".ln" in n or n.startswith(("tok_emb", "pos_emb", "ln_f"))
        for n in plain
    )
    assert sorted(decayed + plain) == sorted(n for n, _ in model.named_parameters())


def test_optimizer_groups_carry_the_decay(model):
    optimizer = build_optimizer(model, 6e-4, (0.9, 0.95), 0.1)
    decayed, plain = decay_parameter_names(model)
    params = dict(model.named_parameters())
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_decay[0.1] == {id(params[n]) for n in decayed}
    assert by_decay[0.0] == {id(params[n]) for n in plain}
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(6e-4)


def released_lr_multiplier(n_tokens: float, warmup_tokens: float, final_tokens: float) -> float:
    """The released code's schedule, in tokens, with its unclamped progress."""
    if n_tokens < warmup_tokens:
        return n_tokens / max(1, warmup_tokens)
    progress = (n_tokens - warmup_tokens) / max(1, final_tokens - warmup_tokens)
    return max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))


def test_schedule_matches_the_released_code_until_the_floor_then_stays_there():
    # 1000 windows, batch 10 -> 100 steps per epoch; released: warmup 1 epoch, final 20 epochs.
    schedule = schedule_from_epochs(100, warmup_epochs=1, decay_epochs=20, floor=0.1)
    assert (schedule.warmup_steps, schedule.decay_steps) == (100, 2000)
    tokens_per_step = 10 * 49
    warmup_tokens, final_tokens = 1000 * 49, 20 * 1000 * 49
    for step in [0, 1, 50, 98, 99, 100, 500, 1000, 1500, 1998]:
        # the released code sets the LR from the tokens counted so far, this batch included
        released = released_lr_multiplier((step + 1) * tokens_per_step, warmup_tokens, final_tokens)
        assert schedule(step) == pytest.approx(released, abs=1e-12), step
    assert schedule(99) == pytest.approx(1.0)
    # Past the end the released cosine climbs back towards 1; ours is clamped at the floor.
    assert released_lr_multiplier(39 * 1000 * 49, warmup_tokens, final_tokens) > 0.9
    assert [schedule(s) for s in (2000, 3000, 3900, 10**6)] == [0.1] * 4


def test_schedule_is_monotone_after_warmup_and_disabled_means_constant():
    schedule = LRSchedule(warmup_steps=5, decay_steps=50, floor=0.1)
    values = [schedule(s) for s in range(200)]
    assert values[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
    assert values[49] == pytest.approx(0.1) and values[30] > 0.3
    assert min(values) == pytest.approx(0.1)
    assert LRSchedule(5, 50, enabled=False)(3) == 1.0


def test_scheduler_sets_the_optimizer_lr(model):
    optimizer = build_optimizer(model, 1e-3, (0.9, 0.95), 0.1)
    scheduler = build_scheduler(optimizer, LRSchedule(warmup_steps=4, decay_steps=8))
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [1e-3 * LRSchedule(4, 8)(s) for s in range(10)]
    assert seen == pytest.approx(expected)


def test_budget_precedence_and_the_paper_formula():
    cfg = OmegaConf.create(
        {"env": {"n_epochs_ref": 50}, "trainer": {"max_steps": None, "epochs": None}}
    )
    # paper: n_epochs = 1e6 / n_windows * 50; one epoch = n_windows / batch steps
    steps, per_epoch = step_budget(cfg, n_windows=200_000, global_batch=256)
    assert per_epoch == pytest.approx(200_000 / 256)
    assert steps == math.ceil(1e6 / 200_000 * 50 * 200_000 / 256)
    cfg.trainer.epochs = 2.0
    assert step_budget(cfg, 1000, 10)[0] == 200
    cfg.trainer.max_steps = 7
    assert step_budget(cfg, 1000, 10)[0] == 7


def test_clip_and_step_keep_parameters_finite(model):
    optimizer = build_optimizer(model, 6e-4, (0.9, 0.95), 0.1)
    tokens = torch.randint(0, 100, (2, 14))
    loss = model(tokens[:, :-1], targets=tokens[:, 1:]).loss
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    assert torch.isfinite(norm)
    assert all(torch.isfinite(p).all() for p in model.parameters())
