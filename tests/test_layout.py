"""The token layout, with and without a prefix, against definitions written out by hand."""

from __future__ import annotations

import pytest
import torch

from ttrl.errors import TtrlError
from ttrl.layout import ACTION, OBSERVATION, PREFIX, REWARD, VALUE, TransitionLayout

S, A = 3, 2  # T = 7


def kinds_by_hand(length: int, prefix: int) -> list[int]:
    kinds = []
    for p in range(length):
        if p < prefix:
            kinds.append(PREFIX)
            continue
        d = (p - prefix) % (S + A + 2)
        kinds.append(
            OBSERVATION if d < S else ACTION if d < S + A else REWARD if d == S + A else VALUE
        )
    return kinds


@pytest.mark.parametrize("prefix", [0, 4])
def test_kinds_dims_and_value_keys_follow_the_definition(prefix):
    layout = TransitionLayout(S, A, n_bins=10, prefix_length=prefix)
    assert layout.transition_dim == 7 and layout.stop_token == 10 and layout.vocab_size == 11
    assert (layout.observation, layout.action, layout.reward_dim, layout.value_dim) == (
        slice(0, 3),
        slice(3, 5),
        5,
        6,
    )
    positions = torch.arange(prefix + 3 * 7)
    assert layout.kinds(positions).tolist() == kinds_by_hand(len(positions), prefix)
    dims = layout.dims(positions).tolist()
    assert dims[:prefix] == [-1] * prefix
    assert dims[prefix:] == [p % 7 for p in range(3 * 7)]
    values = [p for p in range(len(positions)) if p >= prefix and (p - prefix) % 7 == 6]
    assert layout.is_value(positions).nonzero().squeeze(-1).tolist() == values


@pytest.mark.parametrize("prefix", [0, 4])
def test_attention_mask_is_causal_and_hides_every_value_key(prefix):
    layout = TransitionLayout(S, A, prefix_length=prefix)
    length = prefix + 2 * 7
    mask = layout.attention_mask(length)
    kinds = kinds_by_hand(length, prefix)
    for q in range(length):
        for k in range(length):
            assert bool(mask[q, k]) == (k <= q and kinds[k] != VALUE), (q, k)
    # every trajectory token sees the whole prefix
    assert bool(mask[prefix:, :prefix].all())


@pytest.mark.parametrize("prefix", [0, 4])
def test_block_size_and_the_crop_rule(prefix):
    layout = TransitionLayout(S, A, prefix_length=prefix)
    assert layout.block_size(10) == prefix + 10 * 7 - 1
    assert layout.transitions_fitting(layout.block_size(4)) == 4
    assert layout.transitions_fitting(layout.block_size(4) - 1) == 3
    # windows of at most 13 trajectory tokens (2 transitions - 1), cropped by whole transitions
    for length in range(0, 40):
        start = layout.crop_start(length, 13)
        assert start % 7 == 0 and length - start <= 13
        assert start == 0 or length - (start - 7) > 13  # no more than needed is cropped
    assert layout.crop_start(100, None) == 0
    with pytest.raises(TtrlError):
        layout.block_size(0)


def test_bad_dims_are_one_line():
    with pytest.raises(TtrlError, match="observation_dim=0"):
        TransitionLayout(0, 2)
    with pytest.raises(TtrlError, match="prefix_length=-1"):
        TransitionLayout(3, 2, prefix_length=-1)
    assert TransitionLayout(3, 2).with_prefix(5).prefix_length == 5


def test_the_model_takes_its_tables_from_the_layout():
    from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig

    config = TrajectoryTransformerConfig.for_dims(S, A, sequence_length=3, vocab_size=10, n_layer=1)
    assert config.block_size == config.layout.block_size(3) == 20
    model = TrajectoryTransformer(config)
    assert torch.equal(model.allowed, config.layout.attention_mask(20))
    weights = model.loss_weights.tolist()
    kinds = kinds_by_hand(21, 0)[1:]  # the weight of the target at p is the token at p + 1's
    expected = {OBSERVATION: 1.0, ACTION: 5.0, REWARD: 1.0, VALUE: 1.0}
    assert weights == [expected[k] for k in kinds]
