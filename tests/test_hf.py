"""Compatibility with transformers 4.30.0's TrajectoryTransformerModel (the `hf` extra; CI installs it)."""

from __future__ import annotations

import json

import pytest
import torch

from test_model import TINY  # the same tiny config as the model tests
from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig
from ttrl.model.pretrained import read_safetensors

transformers = pytest.importorskip("transformers")

# T = 7 tokens per transition; the HF loss only works for lengths k*T - 1.
LENGTH = 4 * 7 - 1


def hf_model(seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.TrajectoryTransformerModel(
        transformers.TrajectoryTransformerConfig(**TINY)
    )
    with torch.no_grad():  # HF starts pos_emb at zero too; give it content so position bugs show
        model.pos_emb.normal_(0.0, 0.5)
    return model.eval()


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 11, (3, LENGTH), generator=generator)  # includes stop tokens (10)
    targets = torch.randint(0, 11, (3, LENGTH), generator=generator)
    loss_mask = (torch.rand(3, LENGTH, generator=generator) > 0.2).float()
    return tokens, targets, loss_mask


def assert_same_outputs(ours, theirs):
    tokens, targets, loss_mask = batch()
    mine = ours(tokens, targets=targets, attention_mask=loss_mask)
    hf = theirs(tokens, targets=targets, attention_mask=loss_mask, return_dict=True)
    torch.testing.assert_close(mine.logits, hf.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.loss, hf.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("safe_serialization", [False, True])
def test_hf_saved_model_loads_with_same_logits_and_loss(tmp_path, safe_serialization):
    theirs = hf_model()
    theirs.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    assert (
        tmp_path / ("model.safetensors" if safe_serialization else "pytorch_model.bin")
    ).is_file()
    ours = TrajectoryTransformer.from_pretrained(tmp_path).eval()
    assert ours.config == TrajectoryTransformerConfig(**TINY)
    assert_same_outputs(ours, theirs)


def test_ttrl_saved_model_loads_in_transformers_with_same_logits_and_loss(tmp_path):
    torch.manual_seed(1)
    ours = TrajectoryTransformer(TrajectoryTransformerConfig(**TINY)).eval()
    with torch.no_grad():
        ours.pos_emb.normal_(0.0, 0.5)
    ours.save_pretrained(tmp_path, hf_format=True)
    theirs, info = transformers.TrajectoryTransformerModel.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_same_outputs(ours, theirs.eval())


def test_config_json_has_the_fields_transformers_writes(tmp_path):
    hf_model().save_pretrained(tmp_path / "hf")
    TrajectoryTransformer(TrajectoryTransformerConfig(**TINY)).save_pretrained(
        tmp_path / "ttrl", hf_format=True
    )
    theirs = json.loads((tmp_path / "hf" / "config.json").read_text())
    ours = json.loads((tmp_path / "ttrl" / "config.json").read_text())
    assert ours == theirs


def test_parameter_names_and_shapes_match():
    ours = TrajectoryTransformer(TrajectoryTransformerConfig(**TINY))
    theirs = {
        k: v.shape for k, v in hf_model().state_dict().items() if not k.endswith(".attn.mask")
    }
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs


def test_value_mask_matches_hf_attention_mask():
    ours = TrajectoryTransformer(TrajectoryTransformerConfig(**TINY))
    theirs = hf_model().blocks[0].attn.mask[0, 0].bool()
    assert torch.equal(ours.allowed, theirs)


def test_first_chunk_cache_matches_hf():
    """HF's cache is only position-correct for the first call; ours must agree there."""
    theirs = hf_model()
    ours = TrajectoryTransformer(TrajectoryTransformerConfig(**TINY)).eval()
    ours.load_state_dict(
        {k: v for k, v in theirs.state_dict().items() if not k.endswith(".attn.mask")}
    )
    tokens = batch()[0][:, :12]
    mine = ours(tokens, use_cache=True).past_key_values
    hf = theirs(tokens, use_cache=True, return_dict=True).past_key_values
    for (k1, v1), (k2, v2) in zip(mine, hf, strict=True):
        torch.testing.assert_close(k1, k2, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(v1, v2, atol=1e-6, rtol=1e-6)


def test_safetensors_files_keep_every_dtype(tmp_path):
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.arange(5, dtype=torch.int64),
        "c": torch.randn(2, 2).to(torch.bfloat16),
        "d": torch.tensor([True, False]),
        "e": torch.randn(0, 3),
    }
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(tensors, tmp_path / "t.safetensors", metadata={"format": "pt"})
    loaded = read_safetensors(tmp_path / "t.safetensors")
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def ours_from(theirs) -> TrajectoryTransformer:
    ours = TrajectoryTransformer(TrajectoryTransformerConfig(**TINY)).eval()
    ours.load_state_dict(
        {k: v for k, v in theirs.state_dict().items() if not k.endswith(".attn.mask")}
    )
    return ours


def test_hf_documentation_example_gives_the_same_hidden_states_and_attentions():
    # The call transformers' docs show for TrajectoryTransformerModel, unchanged.
    theirs = hf_model()
    ours = ours_from(theirs)
    tokens, targets, loss_mask = batch()
    kwargs = dict(
        targets=targets,
        attention_mask=loss_mask,
        use_cache=True,
        output_attentions=True,
        output_hidden_states=True,
        return_dict=True,
    )
    mine, hf = ours(tokens, **kwargs), theirs(tokens, **kwargs)
    assert len(mine.hidden_states) == len(hf.hidden_states) == TINY["n_layer"] + 1
    for a, b in zip(mine.hidden_states, hf.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(mine.attentions) == len(hf.attentions) == TINY["n_layer"]
    for a, b in zip(mine.attentions, hf.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mine.logits, hf.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.loss, hf.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "flags",
    [
        dict(),
        dict(use_cache=True),
        dict(output_hidden_states=True),
        dict(use_cache=True, output_attentions=True, output_hidden_states=True),
    ],
    ids=["plain", "cache", "hidden", "all"],
)
def test_return_dict_false_gives_hfs_tuple_layout(flags):
    theirs = hf_model()
    ours = ours_from(theirs)
    tokens, targets, loss_mask = batch()
    mine = ours(tokens, targets=targets, attention_mask=loss_mask, return_dict=False, **flags)
    # HF's config defaults use_cache to True: ask both the same
    hf_flags = {"use_cache": False, **flags}
    hf = theirs(tokens, targets=targets, attention_mask=loss_mask, return_dict=False, **hf_flags)
    assert isinstance(mine, tuple) and len(mine) == len(hf)
    torch.testing.assert_close(mine[0], hf[0], atol=1e-5, rtol=1e-5)  # loss
    torch.testing.assert_close(mine[1], hf[1], atol=1e-5, rtol=1e-5)  # logits
    for a, b in zip(mine[2:], hf[2:], strict=True):  # past, hidden states, attentions, as set
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_main_input_name_is_hfs():
    assert (
        TrajectoryTransformer.main_input_name
        == transformers.TrajectoryTransformerModel.main_input_name
    )
