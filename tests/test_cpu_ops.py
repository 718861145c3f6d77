"""The model's compiled CPU layers against float64 torch, and when the model takes them."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ttrl import TrajectoryTransformer
from ttrl.errors import TtrlError
from ttrl.model import cpu_ops
from ttrl.model.config import TrajectoryTransformerConfig


@pytest.fixture(scope="module")
def ops():
    built = cpu_ops.extension()
    if built is None:
        pytest.skip("the model's CPU ops need an AVX-512 CPU and a compiler")
    return built


def _f64_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.double() - reference).abs().max())


@pytest.mark.parametrize("rows", [1, 5, 6, 7, 32, 64, 95, 96, 97, 250])
@pytest.mark.parametrize(("k", "n"), [(128, 384), (512, 128), (130, 64)])
def test_linear_matches_float64(ops, rows, k, n):
    """Every row-tile size (6, then 1-5 left over) and the per-thread split at 96 rows."""
    gen = torch.Generator().manual_seed(rows + k)
    x = torch.randn(rows, k, generator=gen)
    weight = torch.randn(n, k, generator=gen) / k**0.5
    bias = torch.randn(n, generator=gen)
    ours = ops.linear(x, ops.pack_weight(weight), bias)
    reference = F.linear(x.double(), weight.double(), bias.double())
    torch_error = _f64_error(F.linear(x, weight, bias), reference)
    assert ours.shape == (rows, n)
    assert _f64_error(ours, reference) < max(8 * torch_error, 2e-5)


def test_linear_keeps_the_leading_dims_and_reads_any_strides(ops):
    x = torch.randn(4, 12, 3, 128).transpose(1, 2)  # not contiguous
    weight, bias = torch.randn(192, 128) / 11, torch.randn(192)
    out = ops.linear(x, ops.pack_weight(weight), bias)
    assert out.shape == (4, 3, 12, 192)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=2e-5)


def test_gelu_matches_float64_and_torch_at_the_edges(ops):
    x = torch.linspace(-15, 15, 300_001)
    reference = F.gelu(x.double())
    assert _f64_error(ops.gelu(x), reference) < 5e-7  # erf's own bound is 1.5e-7 (times |x|/2)
    assert _f64_error(F.gelu(x), reference) < 5e-6  # torch's, for scale
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-30, -20.0])
    out = ops.gelu(special)
    assert out[0] == 0 and out[1] == 0 and torch.signbit(out[1])
    assert out[2] == float("inf") and out[3].isnan() and out[4].isnan()
    assert out[5] == pytest.approx(5e-31) and out[6] == 0
    odd = torch.randn(3, 7, 5)  # a masked tail, three dims
    torch.testing.assert_close(ops.gelu(odd), F.gelu(odd), rtol=0, atol=1e-6)


@pytest.mark.parametrize("d", [128, 100, 7])
def test_layer_norm_matches_float64(ops, d):
    x = torch.randn(33, 2, d) * 3 + 1
    weight, bias = torch.randn(d), torch.randn(d)
    reference = F.layer_norm(x.double(), (d,), weight.double(), bias.double(), 1e-5)
    assert _f64_error(ops.layer_norm(x, weight, bias, 1e-5), reference) < 5e-6


def test_bad_operands_are_refused(ops):
    with pytest.raises(RuntimeError, match="multiple of 64"):
        ops.pack_weight(torch.randn(100, 8))
    with pytest.raises(RuntimeError, match="float32"):
        ops.gelu(torch.randn(4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="packed must be"):
        ops.linear(torch.randn(2, 9), ops.pack_weight(torch.randn(64, 8)), torch.randn(64))


def _model() -> TrajectoryTransformer:
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig(
        observation_dim=3, action_dim=2, transition_dim=7, vocab_size=20, block_size=27,
        n_layer=2, n_head=2, n_embd=64,
    )  # fmt: skip
    return TrajectoryTransformer(config).eval()


def test_the_model_gives_torchs_logits_with_the_compiled_layers(ops, monkeypatch):
    model = _model()
    tokens = torch.randint(0, 20, (5, 20))
    with torch.no_grad():
        monkeypatch.setenv(cpu_ops.ENV_VAR, "torch")
        plain = model(tokens).logits
        monkeypatch.setenv(cpu_ops.ENV_VAR, "compiled")
        compiled = model(tokens).logits
        model.double()
        exact = model(tokens).logits
    assert not torch.equal(plain, compiled)  # the compiled layers did run
    assert _f64_error(compiled, exact) < 4 * _f64_error(plain, exact) + 1e-5


def test_hooks_gradients_and_other_layers_run_torchs_modules(ops, monkeypatch):
    """A hook sees its module's call; with gradients, or another class of layer, torch runs."""
    monkeypatch.setenv(cpu_ops.ENV_VAR, "compiled")
    model = _model()
    tokens = torch.randint(0, 20, (2, 14))
    seen = []
    handle = model.blocks[1].l1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(tokens)
    handle.remove()
    assert seen == [(2, 14, 256)]
    with torch.no_grad():
        hooked_globally = []
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, i, o: hooked_globally.append(type(m))
        )
        try:
            model(tokens)
        finally:
            handle.remove()
    assert hooked_globally.count(nn.GELU) == 2
    calls = []
    original = nn.GELU.forward
    monkeypatch.setattr(nn.GELU, "forward", lambda self, x: calls.append(1) or original(self, x))
    with torch.no_grad():
        model(tokens)
    assert not calls  # plain, unhooked, no gradients: the compiled op
    model(tokens).logits.sum().backward()
    assert len(calls) == 2 and model.blocks[0].l1.weight.grad is not None
    model.blocks[0].act = nn.GELU(approximate="tanh")  # another layer: its own module
    with torch.no_grad():
        model(tokens)
    assert len(calls) == 3


def test_a_changed_weight_is_packed_again(ops, monkeypatch):
    monkeypatch.setenv(cpu_ops.ENV_VAR, "compiled")
    layer = nn.Linear(32, 64)
    x = torch.randn(3, 32)
    with torch.no_grad():
        first = cpu_ops.apply(layer, x, cpu_ops.ops_for(x))
        layer.weight.mul_(2)  # in place: a new version
        second = cpu_ops.apply(layer, x, cpu_ops.ops_for(x))
        layer.weight = nn.Parameter(torch.zeros(64, 32))  # another tensor
        third = cpu_ops.apply(layer, x, cpu_ops.ops_for(x))
    torch.testing.assert_close(second - layer.bias, 2 * (first - layer.bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(third, layer.bias.expand(3, -1))


def test_choice_reads_the_environment_and_a_failed_build_falls_back(monkeypatch):
    monkeypatch.setenv(cpu_ops.ENV_VAR, "torch")
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert cpu_ops.ops_for(x) is None
    monkeypatch.setenv(cpu_ops.ENV_VAR, "quick")
    with pytest.raises(TtrlError, match="TTRL_CPU_OPS='quick' is not one of"):
        cpu_ops.choice()

    def broken():
        raise OSError("g++: not found")

    monkeypatch.setattr(cpu_ops, "load_extension", broken)
    monkeypatch.setattr(cpu_ops, "_loaded", {})
    monkeypatch.setenv(cpu_ops.ENV_VAR, "auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cpu_ops.extension() is None
    assert "model's compiled CPU ops did not build (g++: not found)" in str(caught[0].message)
    monkeypatch.setenv(cpu_ops.ENV_VAR, "compiled")
    with pytest.raises(TtrlError, match="=compiled but the kernel did not build"):
        cpu_ops.extension()
    with torch.no_grad():
        assert cpu_ops.ops_for(x.double()) is None and cpu_ops.ops_for(x.half()) is None


def test_tensor_subclasses_and_compiled_graphs_keep_torchs_layers(ops, monkeypatch):
    """A subclass's __torch_function__, a dispatch mode (the flop counter) or torch.compile's
    tracing would be skipped by the compiled ops: those take torch's layers."""

    class Traced(torch.Tensor):
        pass

    monkeypatch.setenv(cpu_ops.ENV_VAR, "compiled")
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert cpu_ops.ops_for(x) is ops
        assert cpu_ops.ops_for(x.as_subclass(Traced)) is None
        assert cpu_ops.ops_for(nn.Parameter(x)) is None
        with FlopCounterMode(display=False) as counter:
            assert cpu_ops.ops_for(x) is None
            cpu_ops.apply(nn.Linear(4, 64), x, cpu_ops.ops_for(x))
        assert counter.get_total_flops() == 2 * 2 * 4 * 64
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert cpu_ops.ops_for(x) is None
