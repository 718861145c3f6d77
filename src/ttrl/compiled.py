"""Small C++ extensions for the CPU, compiled on first use, once per machine kind.

Two extensions exist: the planner cache's attention (:mod:`ttrl.planning.cached_attention`) and the
model's inference layers (:mod:`ttrl.model.cpu_ops`). Each has an environment variable that picks
``auto`` (default: the extension when it builds, else torch ops with one warning), ``torch`` (no
compiler needed) or ``compiled`` (the extension, or one line saying why it cannot be built).

An extension is compiled (about half a minute, with the C++ compiler and ninja that ``make setup``
installs) into ``$TTRL_KERNEL_DIR`` (default ``~/.cache/ttrl/kernels``), named by a hash of its
source, torch, Python and the CPU's instruction sets, so a cluster's nodes with other CPUs build
their own. Builds go to a private folder and are moved in place whole, so an interrupted or
concurrent build never leaves a broken one behind.
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
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from ttrl.errors import TtrlError

CHOICES = ("auto", "torch", "compiled")
# Built on the machine that runs it, for its own CPU; OpenMP is torch's own (its libgomp is loaded).
FLAGS = ("-O3", "-march=native", "-fopenmp")


def choice(env_var: str) -> str:
    """The implementation ``env_var`` asks for (one line if it is not a choice)."""
    value = os.environ.get(env_var, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise TtrlError(f"{env_var}={value!r} is not one of {', '.join(CHOICES)}")
    return value


def load_chosen(
    loaded: dict[str, ModuleType | None],
    env_var: str,
    load: Callable[[], ModuleType],
    what: str,
    fallback: str,
) -> ModuleType | None:
    """The extension ``load`` gives, or None for torch ops, as ``env_var`` chooses; remembered in
    ``loaded``. ``what`` names it and ``fallback`` says what runs instead in the one warning a
    failed ``auto`` build gives."""
    wanted = choice(env_var)
    if wanted == "torch":
        return None
    if wanted not in loaded:
        try:
            loaded[wanted] = load()
        except Exception as error:  # no compiler, no ninja, a read-only cache: fall back
            if wanted == "compiled":
                raise TtrlError(
                    f"{env_var}=compiled but the kernel did not build ({one_line(error)}); "
                    f"install g++ and ninja (make setup), or set {env_var}=torch"
                ) from error
            warnings.warn(
                f"ttrl: {what} did not build ({one_line(error)}); {fallback}, which is slower "
                f"on the CPU. Set {env_var}=torch to skip the build",
                RuntimeWarning,
                stacklevel=3,
            )
            loaded[wanted] = None
    return loaded[wanted]


def build_name(source: Path, prefix: str) -> str:
    """A build's name: what it is compiled from and for."""
    parts = [
        source.read_text(),
        " ".join(FLAGS),
        torch.__version__,
        sys.version,
        platform.machine(),
        cpu_flags(),
    ]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"{prefix}_{digest}"


def kernel_dir() -> Path:
    """Where built kernels are kept."""
    return Path(os.environ.get("TTRL_KERNEL_DIR", Path.home() / ".cache" / "ttrl" / "kernels"))


def load(source: Path, name: str, what: str) -> ModuleType:
    """Import the build ``name`` of ``source``, building it first if this machine kind has none."""
    built = kernel_dir() / f"{name}.so"
    if not built.exists():
        return _build(source, name, built, what)
    try:
        spec = importlib.util.spec_from_file_location(name, built)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:  # not the build it is named after (a stray file): build it anew
        return _build(source, name, built, what)
    return module


def _build(source: Path, name: str, target: Path, what: str) -> ModuleType:
    from torch.utils import cpp_extension

    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"ttrl: compiling {what} (once per machine kind, about 30 s)", file=sys.stderr, flush=True
    )
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        module = cpp_extension.load(
            name=name,
            sources=[str(source)],
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


def cpu_flags() -> str:
    """The CPU's instruction sets, as the kernel reports them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def one_line(error: BaseException) -> str:
    """An exception's message on one line of at most about 300 characters."""
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return text if len(text) <= 300 else text[:300] + "…"
