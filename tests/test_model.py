"""The Trajectory Transformer against a direct loop-based reimplementation of the released model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ttrl.checkpoint import save_bundle
from ttrl.errors import TtrlError
from ttrl.model import (
    TrajectoryTransformer,
    TrajectoryTransformerConfig,
    TrajectoryTransformerOutput,
    reorder_cache,
)
from ttrl.model.pretrained import read_safetensors

# 3 observation dims + 2 action dims + reward + value: T = 7; 5 transitions - 1 = 34 tokens.
TINY = dict(
    vocab_size=10,
    observation_dim=3,
    action_dim=2,
    transition_dim=7,
    block_size=34,
    n_layer=2,
    n_head=2,
    n_embd=16,
)


def tiny_model(seed: int = 0, **overrides) -> TrajectoryTransformer:
    torch.manual_seed(seed)
    model = TrajectoryTransformer(TrajectoryTransformerConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # pos_emb starts at zero; give it content so position bugs show
        model.pos_emb.normal_(0.0, 0.5)
    return model


def random_tokens(batch: int, length: int, n_bins: int, seed: int = 1) -> torch.Tensor:
    """Bin ids with a sprinkling of stop tokens (id n_bins)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, n_bins, (batch, length), generator=generator)
    stops = torch.rand(batch, length, generator=generator) < 0.15
    return tokens.masked_fill(stops, n_bins)


def reference_forward(model, tokens, targets=None, loss_mask=None):
    """The released model written out position by position, sharing only the weights."""
    cfg = model.config
    n_bins, n_dims, n_head = cfg.vocab_size, cfg.transition_dim, cfg.n_head
    batch, length = tokens.shape
    ids = tokens.clone()
    for p in range(length):
        stop = tokens[:, p] == n_bins
        ids[:, p] = torch.where(stop, n_bins * n_dims, tokens[:, p] + (p % n_dims) * n_bins)
    x = model.tok_emb.weight[ids] + model.pos_emb[0, :length]
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        for j in range(i + 1):
            allowed[i, j] = j % n_dims != n_dims - 1
    for block in model.blocks:
        h = F.layer_norm(x, (cfg.n_embd,), block.ln1.weight, block.ln1.bias)
        q, k, v = (
            layer(h).view(batch, length, n_head, -1).transpose(1, 2)
            for layer in (block.attn.query, block.attn.key, block.attn.value)
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~allowed, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, cfg.n_embd)
        x = x + block.attn.proj(y)
        h = F.layer_norm(x, (cfg.n_embd,), block.ln2.weight, block.ln2.bias)
        x = x + block.l2(F.gelu(block.l1(h)))
    x = F.layer_norm(x, (cfg.n_embd,), model.ln_f.weight, model.ln_f.bias)
    logits = torch.stack([x[:, p] @ model.head.weight[p % n_dims].T for p in range(length)], 1)
    if targets is None:
        return logits, None
    dim_weight = [1.0] * cfg.observation_dim + [cfg.action_weight] * cfg.action_dim
    dim_weight += [cfg.reward_weight, cfg.value_weight]
    total = torch.zeros(())
    for b in range(batch):
        for p in range(length):
            ce = F.cross_entropy(logits[b, p], targets[b, p])
            mask = 1.0 if loss_mask is None else loss_mask[b, p]
            total = total + ce * dim_weight[(p + 1) % n_dims] * mask
    return logits, total / (batch * length)


# --- config ------------------------------------------------------------------------------------


def test_config_rejects_inconsistent_transition_dim():
    with pytest.raises(TtrlError, match="transition_dim"):
        TrajectoryTransformerConfig(observation_dim=11, action_dim=3, transition_dim=25)


def test_config_rejects_heads_not_dividing_width():
    with pytest.raises(TtrlError, match="n_head"):
        TrajectoryTransformerConfig(n_embd=100, n_head=3)


def test_config_round_trips_through_dict_and_ignores_hf_extras():
    config = TrajectoryTransformerConfig(**TINY)
    assert TrajectoryTransformerConfig.from_dict(config.to_hf_dict()) == config


def test_default_model_has_the_paper_size():
    model = TrajectoryTransformer(TrajectoryTransformerConfig())
    n, t, d = 100, 25, 128
    per_block = 4 * (d * d + d) + 2 * 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    expected = (n * t + 1) * d + 249 * d + 4 * per_block + 2 * d + t * (n + 1) * d
    assert model.num_parameters() == expected
    assert 1.46e6 < expected < 1.48e6


def test_state_dict_uses_the_huggingface_names():
    model = tiny_model()
    keys = set(model.state_dict())
    assert {"tok_emb.weight", "pos_emb", "ln_f.weight", "ln_f.bias", "head.weight"} <= keys
    for i in range(TINY["n_layer"]):
        for part in ("ln1", "ln2", "attn.key", "attn.query", "attn.value", "attn.proj", "l1", "l2"):
            assert {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"} <= keys
    assert len(keys) == 5 + TINY["n_layer"] * 16
    assert model.head.weight.shape == (7, 11, 16)
    assert model.tok_emb.weight.shape == (10 * 7 + 1, 16)


def test_initialisation_follows_the_released_model():
    torch.manual_seed(0)
    model = TrajectoryTransformer(TrajectoryTransformerConfig())
    assert torch.all(model.pos_emb == 0)
    assert abs(model.blocks[0].l1.weight.std().item() - 0.02) < 1e-3
    assert torch.all(model.blocks[0].l1.bias == 0)
    assert torch.all(model.ln_f.weight == 1) and torch.all(model.ln_f.bias == 0)
    bound = 1 / math.sqrt(128)  # kaiming_uniform(a=sqrt 5) on a [101, 128] head
    assert model.head.weight.abs().max() <= bound
    assert model.head.weight.abs().max() > 0.95 * bound


# --- forward and loss --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [34, 20, 1, 7])
def test_logits_and_loss_match_the_reference(length):
    model = tiny_model()
    tokens = random_tokens(3, length, 10)
    targets = random_tokens(3, length, 10, seed=2)
    loss_mask = (torch.rand(3, length, generator=torch.Generator().manual_seed(3)) > 0.3).float()
    out = model(tokens, targets=targets, attention_mask=loss_mask)
    ref_logits, ref_loss = reference_forward(model, tokens, targets, loss_mask)
    assert out.logits.shape == (3, length, 11)
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref_loss, atol=1e-5, rtol=1e-5)


def test_loss_mask_of_shape_bl1_equals_bl_and_none_means_all():
    model = tiny_model()
    tokens, targets = random_tokens(2, 20, 10), random_tokens(2, 20, 10, seed=5)
    mask = (torch.rand(2, 20) > 0.5).float()
    flat = model(tokens, targets=targets, attention_mask=mask).loss
    column = model(tokens, targets=targets, attention_mask=mask[..., None]).loss
    torch.testing.assert_close(flat, column)
    unmasked = model(tokens, targets=targets).loss
    torch.testing.assert_close(
        unmasked, model(tokens, targets=targets, attention_mask=torch.ones(2, 20)).loss
    )


def test_value_tokens_are_hidden_from_every_later_position():
    model = tiny_model()
    tokens = random_tokens(1, 34, 10)
    changed = tokens.clone()
    changed[0, 6] = (tokens[0, 6] + 3) % 10  # the first transition's value token
    before, after = model(tokens).logits, model(changed).logits
    assert not torch.allclose(before[0, 6], after[0, 6])  # its own prediction sees its embedding
    torch.testing.assert_close(before[0, :6], after[0, :6])
    torch.testing.assert_close(before[0, 7:], after[0, 7:])


def test_tuple_style_outputs():
    model = tiny_model()
    tokens = random_tokens(2, 13, 10)
    out = model(tokens, targets=tokens, use_cache=True)
    assert isinstance(out, TrajectoryTransformerOutput)
    assert out[0] is out.loss and out[1] is out.logits and out["logits"] is out.logits
    as_tuple = model(tokens, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], out.logits)


def test_sequence_longer_than_block_size_is_a_user_error():
    model = tiny_model()
    with pytest.raises(TtrlError, match="block_size"):
        model(random_tokens(1, 35, 10))


# --- key/value cache ---------------------------------------------------------------------------


def decode_in_chunks(model, tokens, chunk_lengths):
    """Feed ``tokens`` through the cache in consecutive chunks; return the concatenated logits."""
    past, logits, begin = None, [], 0
    for length in chunk_lengths:
        out = model(tokens[:, begin : begin + length], past_key_values=past, use_cache=True)
        past, begin = out.past_key_values, begin + length
        logits.append(out.logits)
    assert begin == tokens.shape[1]
    return torch.cat(logits, 1), past


def test_token_by_token_decoding_equals_one_full_forward():
    model = tiny_model()
    tokens = random_tokens(4, 34, 10)
    assert (tokens == 10).any()  # stop tokens are part of the test
    full = model(tokens).logits
    stepped, past = decode_in_chunks(model, tokens, [1] * 34)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    assert past[0][0].shape == (4, 2, 34, 8)


@pytest.mark.parametrize("chunks", [[30, 1, 1, 1, 1], [30, 4], [11, 1, 9, 13], [3, 1, 16, 1, 13]])
def test_decoding_continues_a_cached_prefix_that_ends_mid_transition(chunks):
    model = tiny_model()
    tokens = random_tokens(3, sum(chunks), 10, seed=7)
    full = model(tokens).logits
    stepped, _ = decode_in_chunks(model, tokens, chunks)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)


def test_cached_loss_uses_the_continued_positions():
    model = tiny_model()
    tokens, targets = random_tokens(2, 30, 10), random_tokens(2, 30, 10, seed=9)
    past = model(tokens[:, :12], use_cache=True).past_key_values
    cached = model(tokens[:, 12:], targets=targets[:, 12:], past_key_values=past).loss
    _, ref_loss = reference_forward(
        model, tokens, targets, torch.cat([torch.zeros(2, 12), torch.ones(2, 18)], 1)
    )
    torch.testing.assert_close(cached * 18, ref_loss * 30, atol=1e-5, rtol=1e-5)


def test_cache_overflowing_block_size_is_a_user_error():
    model = tiny_model()
    past = model(random_tokens(1, 30, 10), use_cache=True).past_key_values
    with pytest.raises(TtrlError, match="block_size"):
        model(random_tokens(1, 5, 10), past_key_values=past)


def test_reordered_cache_continues_the_selected_rows():
    model = tiny_model()
    tokens = random_tokens(4, 20, 10)
    past = model(tokens[:, :15], use_cache=True).past_key_values
    index = torch.tensor([2, 2, 0, 3, 1])  # beams repeat and reorder
    continued = model(tokens[index, 15:], past_key_values=reorder_cache(past, index)).logits
    torch.testing.assert_close(continued, model(tokens[index]).logits[:, 15:], atol=1e-5, rtol=1e-5)


# --- training mode -----------------------------------------------------------------------------


def test_training_step_uses_dropout_and_reduces_the_loss():
    model = tiny_model().train()
    tokens, targets = random_tokens(8, 34, 10), random_tokens(8, 34, 10, seed=4)
    assert not torch.equal(model(tokens).logits, model(tokens).logits)  # dropout is active
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(tokens, targets=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < 0.8 * losses[0]


# --- checkpoints -------------------------------------------------------------------------------


def assert_same_model(a, b):
    assert a.config == b.config
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_save_pretrained_round_trip_in_ttrl_format(tmp_path):
    model = tiny_model()
    path = model.save_pretrained(tmp_path / "export")
    assert path == tmp_path / "export" / "ttrl_model.safetensors"
    assert_same_model(model, TrajectoryTransformer.from_pretrained(tmp_path / "export"))
    assert_same_model(model, TrajectoryTransformer.from_pretrained(path))


def test_from_pretrained_reads_a_training_run_dir(tmp_path):
    model = tiny_model()
    weights = {
        f"_orig_mod.{k}": v for k, v in model.state_dict().items()
    }  # a compiled model's keys
    save_bundle(
        tmp_path / "run" / "checkpoints" / "last.safetensors",
        model_config=model.config.to_dict(),
        model=weights,
    )
    assert_same_model(model, TrajectoryTransformer.from_pretrained(tmp_path / "run"))


def test_save_pretrained_round_trip_in_hf_format(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "hf", hf_format=True)
    saved = read_safetensors(tmp_path / "hf" / "model.safetensors")
    assert "blocks.0.attn.mask" in saved
    assert_same_model(model, TrajectoryTransformer.from_pretrained(tmp_path / "hf"))


def test_mismatched_config_names_the_field(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "hf", hf_format=True)
    config_file = tmp_path / "hf" / "config.json"
    config_file.write_text(config_file.read_text().replace('"block_size": 34', '"block_size": 41'))
    with pytest.raises(TtrlError, match=r"pos_emb.*block_size"):
        TrajectoryTransformer.from_pretrained(tmp_path / "hf")


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_unreadable_hf_weights_are_a_user_error(tmp_path, weights_file):
    tiny_model().save_pretrained(tmp_path, hf_format=True)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / weights_file).write_bytes(b"not a checkpoint")
    with pytest.raises(TtrlError, match=weights_file.replace(".", r"\.")):
        TrajectoryTransformer.from_pretrained(tmp_path)


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(TtrlError):
        TrajectoryTransformer.from_pretrained(tmp_path / "nothing")


# --- accelerators ------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_model_matches_eager_for_full_cached_and_training_calls():
    model = tiny_model()
    compiled = torch.compile(model)
    tokens = random_tokens(2, 34, 10)
    full = model(tokens).logits
    torch.testing.assert_close(compiled(tokens).logits, full, atol=1e-5, rtol=1e-5)
    stepped, _ = decode_in_chunks(compiled, tokens, [30, 1, 1, 1, 1])
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)
    model.train()
    loss = compiled(tokens, targets=tokens).loss
    loss.backward()
    assert torch.isfinite(loss) and model.head.weight.grad is not None


@pytest.mark.gpu
def test_cuda_cached_decoding_bf16_and_compile():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny_model().cuda()
    tokens = random_tokens(4, 34, 10).cuda()
    full = model(tokens).logits
    stepped, _ = decode_in_chunks(model, tokens, [10] + [1] * 24)
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.train()(tokens, targets=tokens)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    compiled = torch.compile(model.eval())
    torch.testing.assert_close(compiled(tokens).logits, full, atol=1e-4, rtol=1e-4)


def test_attention_maps_path_gives_the_same_logits_and_rows_that_sum_to_one():
    model = tiny_model()
    tokens = torch.randint(0, 11, (2, 20))
    plain = model(tokens).logits
    out = model(tokens, output_attentions=True)
    torch.testing.assert_close(out.logits, plain, atol=1e-6, rtol=1e-5)
    for weights in out.attentions:
        assert weights.shape == (2, TINY["n_head"], 20, 20)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, TINY["n_head"], 20))
        value_keys = torch.arange(20) % TINY["transition_dim"] == TINY["transition_dim"] - 1
        assert torch.all(weights[..., value_keys] == 0)  # no query attends to a value token
        assert torch.all(weights.triu(1) == 0)  # causal


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    tokens = torch.randint(0, 11, (2, 20))
    targets = torch.randint(0, 11, (2, 20))
    results = []
    for checkpointing in (False, True):
        model = tiny_model().train()  # dropout on: checkpointing must replay its random draws
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(7)
        out = model(tokens, targets=targets, use_cache=True)
        out.loss.backward()
        assert (out.past_key_values is None) == checkpointing  # as in transformers
        results.append((out.loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    model = tiny_model()
    model.gradient_checkpointing_enable()
    model.gradient_checkpointing_disable()
    assert not model.gradient_checkpointing


def test_targets_passed_positionally_get_a_clear_error():
    model = tiny_model()
    tokens = torch.randint(0, 11, (2, 6))
    with pytest.raises(TtrlError, match="second positional argument of forward is past_key_values"):
        model(tokens, tokens)


def test_fused_qkv_weights_follow_weight_changes_without_gradients():
    model = tiny_model()
    tokens = torch.randint(0, 11, (2, 9))
    with torch.inference_mode():
        before = model(tokens).logits
    with torch.no_grad():
        model.blocks[0].attn.key.weight.mul_(3.0)  # an in-place change, as an optimiser makes
    fresh = tiny_model()
    with torch.no_grad():
        fresh.blocks[0].attn.key.weight.mul_(3.0)
    with torch.inference_mode():
        after, expected = model(tokens).logits, fresh(tokens).logits
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected)
    # and gradients still reach the separate q, k, v layers
    model.train()
    model(tokens, targets=tokens).loss.backward()
    assert model.blocks[0].attn.query.weight.grad is not None
