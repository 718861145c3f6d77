"""The model's linear, LayerNorm and GELU layers as compiled CPU ops, for float32 inference.

Beam search runs the model's layers on 32 to 64 rows thousands of times per decision. At that size
torch's matrix product packs the weight anew on every call, and its LayerNorm and GELU pay a fixed
cost per call, as large as their arithmetic. Without gradients on the CPU in float32, the model
therefore runs these layers as ops of a small C++ extension (``cpu_ops.cpp``): a linear layer's
weight is packed once (kept until the weight changes) and each op is one loop over its rows.

They compute the same functions as torch's, in another order of floating-point operations: a
linear layer sums over its inputs one after another from the bias, and GELU takes erf by
Abramowitz & Stegun 7.1.26 (torch's own CPU GELU also approximates erf; both are within about
1e-6 of float64). Training, gradients, other dtypes and devices, and any layer with a hook or of
another class (a wrapper, a quantised layer) run torch's modules unchanged: :func:`apply` calls
the module itself unless it is a plain ``nn.Linear``, ``nn.LayerNorm`` or ``nn.GELU`` without hooks.

``TTRL_CPU_OPS`` picks the implementation, like ``TTRL_CACHED_ATTENTION`` (:mod:`ttrl.compiled`):
``auto`` (default), ``torch`` or ``compiled``. The ops are built for AVX-512 CPUs; elsewhere the
model uses torch's ops.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from ttrl import compiled

SOURCE = Path(__file__).with_name("cpu_ops.cpp")
ENV_VAR = "TTRL_CPU_OPS"
PANEL = 64  # output columns per packed panel (cpu_ops.cpp's kPanel)

_loaded: dict[str, ModuleType | None] = {}


def choice() -> str:
    """The implementation ``TTRL_CPU_OPS`` asks for (one line if it is not a choice)."""
    return compiled.choice(ENV_VAR)


def extension() -> ModuleType | None:
    """The built ops, or None where torch's ops run (``TTRL_CPU_OPS=torch``, no build, no AVX-512)."""
    ops = compiled.load_chosen(
        _loaded,
        ENV_VAR,
        lambda: load_extension(),
        "the model's compiled CPU ops",
        "running the model with torch ops",
    )
    return ops if ops is not None and ops.available() else None


def extension_name() -> str:
    """The build's name: what it is compiled from and for."""
    return compiled.build_name(SOURCE, "ttrl_cpu_ops")


def load_extension() -> ModuleType:
    """Import the built ops, building them first if this machine kind has none yet."""
    return compiled.load(SOURCE, extension_name(), "the model's CPU ops")


def ops_for(x: Tensor) -> ModuleType | None:
    """The compiled ops when they compute ``x``'s layers: a plain float32 CPU tensor, no gradients,
    and nothing that watches torch's ops (a tensor subclass, a torch function or dispatch mode such
    as the flop counter, ``torch.compile``'s tracing), which the ops would bypass."""
    if (
        type(x) is not Tensor
        or x.dtype is not torch.float32
        or x.device.type != "cpu"
        or torch.is_grad_enabled()
        or torch._C._len_torch_dispatch_stack()
        or torch._C._len_torch_function_stack()
        or torch.compiler.is_compiling()
    ):
        return None
    return extension()


def _hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` would run a forward hook (its own or a global one)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
    )


def apply(module: nn.Module, x: Tensor, ops: ModuleType | None) -> Tensor:
    """``module(x)``, by the compiled ``ops`` (:func:`ops_for` ``x``) where that is the same layer
    (see the module's docstring)."""
    if ops is None or _hooked(module):
        return module(x)
    kind = type(module)
    if kind is nn.Linear:
        return linear(x, module.weight, module.bias, module.__dict__, ops)
    if kind is nn.LayerNorm and _plain_layer_norm(module, x):
        return ops.layer_norm(x, module.weight, module.bias, module.eps)
    if kind is nn.GELU and module.approximate == "none":
        return ops.gelu(x)
    return module(x)


def _plain_layer_norm(module: nn.LayerNorm, x: Tensor) -> bool:
    return (
        module.weight is not None
        and module.bias is not None
        and tuple(module.normalized_shape) == (x.shape[-1],)
    )


def linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, holder: dict, ops: ModuleType | None
) -> Tensor:
    """``F.linear(x, weight, bias)``, by the compiled ``ops`` (:func:`ops_for` ``x``) where they
    apply; the packed weight is kept in ``holder`` (a dict of the layer's owner) until ``weight``
    changes."""
    if ops is None or bias is None or weight.shape[0] % PANEL or weight.dtype is not torch.float32:
        return F.linear(x, weight, bias)
    return ops.linear(x, packed_weight(weight, holder, ops), bias)


def packed_weight(weight: Tensor, holder: dict, ops: ModuleType) -> Tensor:
    """``weight`` in the ops' panel layout, packed once and kept in ``holder`` under a stamp of
    the weight (its storage, shape and, for a parameter, version), so a changed weight repacks."""
    stamp = (
        weight.data_ptr(),
        tuple(weight.shape),
        0 if weight.is_inference() else weight._version,
    )
    held = holder.get("_ttrl_packed")
    if held is None or held[0] != stamp:
        # the weight's storage is held too, so no other weight can take its address meanwhile
        held = holder["_ttrl_packed"] = (stamp, weight.detach(), ops.pack_weight(weight))
    return held[2]
