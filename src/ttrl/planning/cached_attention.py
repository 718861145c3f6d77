"""The planner cache's attention as one compiled CPU call (``cached_attention.cpp``), built on first use.

On the CPU, the per-token attention of beam search is hundreds of tiny products per decision, and
torch spends most of their time dispatching small ops. :class:`~ttrl.planning.decoder.CachedDecoder`
therefore runs each layer's attention (storing the new keys/values and attending over the shared,
parent and own segments) as one call of a small C++ extension when it is available, and with torch
ops otherwise. Both compute the same thing; tests hold them to each other and to the plain model.

``TTRL_CACHED_ATTENTION`` picks the implementation:

- ``auto`` (default): the compiled kernel on the CPU when it builds, else torch ops (one warning);
- ``torch``: torch ops only (no compiler needed);
- ``compiled``: the compiled kernel, or one line saying why it cannot be built.

The extension is compiled once per machine kind (about half a minute, with the C++ compiler and
ninja that ``make setup`` installs) into ``$TTRL_KERNEL_DIR`` (default ``~/.cache/ttrl/kernels``),
named by a hash of its source, torch, Python and the CPU's instruction sets, so a cluster's nodes
with other CPUs build their own. Builds go to a private folder and are moved in place whole, so an
interrupted or concurrent build never leaves a broken one behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import torch

from ttrl.errors import TtrlError

SOURCE = Path(__file__).with_name("cached_attention.cpp")
CHOICES = ("auto", "torch", "compiled")
ENV_VAR = "TTRL_CACHED_ATTENTION"
# Built on the machine that runs it, for its own CPU; OpenMP is torch's own (its libgomp is loaded).
FLAGS = ("-O3", "-march=native", "-fopenmp")

_loaded: dict[str, ModuleType | None] = {}


def choice() -> str:
    """The implementation ``TTRL_CACHED_ATTENTION`` asks for (one line if it is not a choice)."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise TtrlError(f"{ENV_VAR}={value!r} is not one of {', '.join(CHOICES)}")
    return value


def kernel_for(device: torch.device, dtype: torch.dtype) -> ModuleType | None:
    """The compiled kernel for a cache on ``device`` in ``dtype``, or None for torch ops."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return None
    wanted = choice()
    if wanted == "torch":
        return None
    if wanted not in _loaded:
        try:
            _loaded[wanted] = load_extension()
        except Exception as error:  # no compiler, no ninja, a read-only cache: fall back
            if wanted == "compiled":
                raise TtrlError(
                    f"{ENV_VAR}=compiled but the kernel did not build ({_one_line(error)}); "
                    f"install g++ and ninja (make setup), or set {ENV_VAR}=torch"
                ) from error
            warnings.warn(
                f"ttrl: the planner's compiled attention did not build ({_one_line(error)}); "
                f"planning with torch ops, which is slower on the CPU. Set {ENV_VAR}=torch to "
                f"skip the build",
                RuntimeWarning,
                stacklevel=2,
            )
            _loaded[wanted] = None
    return _loaded[wanted]


def extension_name() -> str:
    """The build's name: what it is compiled from and for."""
    parts = [
        SOURCE.read_text(),
        " ".join(FLAGS),
        torch.__version__,
        sys.version,
        platform.machine(),
        _cpu_flags(),
    ]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"ttrl_cached_attention_{digest}"


def kernel_dir() -> Path:
    """Where built kernels are kept."""
    return Path(os.environ.get("TTRL_KERNEL_DIR", Path.home() / ".cache" / "ttrl" / "kernels"))


def load_extension() -> ModuleType:
    """Import the built kernel, building it first if this machine kind has none yet."""
    name = extension_name()
    folder = kernel_dir()
    built = folder / f"{name}.so"
    if not built.exists():
        return _build(name, built)
    try:
        spec = importlib.util.spec_from_file_location(name, built)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:  # not the build it is named after (a stray file): build it anew
        return _build(name, built)
    return module


def _build(name: str, target: Path) -> ModuleType:
    from torch.utils import cpp_extension

    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        "ttrl: compiling the planner's attention kernel (once per machine kind, about 30 s)",
        file=sys.stderr,
        flush=True,
    )
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        module = cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=list(FLAGS),
            extra_ldflags=["-fopenmp"],
            build_directory=str(scratch),
            verbose=False,
        )
        # torch names a second build of the same name in one process name_v1: such a module
        # cannot be imported under the file's name later, so it is used but not kept
        if module.__name__ == name:
            os.replace(module.__file__, target)  # whole or not at all
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return module


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return text if len(text) <= 300 else text[:300] + "…"
