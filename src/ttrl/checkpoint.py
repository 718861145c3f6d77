"""The checkpoint bundle: one file that rebuilds a trained model, its discretiser and its config.

A bundle is a dict::

    {
      "format": "ttrl-bundle", "version": <ttrl version>,
      "model_config": {...TrajectoryTransformerConfig fields...},
      "model": <state dict>,
      "discretizer": <Discretizer.state_dict()> or None,
      "config": <resolved run config as plain dict> or None,
      "trainer": <optimizer, scheduler, step, RNG states, W&B run id, best val loss> or None,
    }

stored as one ``.safetensors`` file: every tensor (and numpy array) is a safetensors tensor, and
the rest of the dict is JSON in the file's metadata, with each tensor replaced by a reference to
it. Checkpoints come from other people, so reading one must never run code from it: there is no
unpickling. Bundles that earlier ttrl versions wrote with ``torch.save`` (``*.pt``) still load,
through torch's ``weights_only`` unpickler, which builds tensors and plain containers only.

Training writes ``<run_dir>/checkpoints/last.safetensors`` and ``best.safetensors``; planning reads
them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttrl.errors import TtrlError
from ttrl.io import atomic_write_bytes

BUNDLE_FORMAT = "ttrl-bundle"
BUNDLE_SUFFIX = ".safetensors"
LEGACY_SUFFIX = ".pt"  # bundles that ttrl 0.1 wrote with torch.save
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "ttrl_model"  # what save_pretrained writes in its dir (+ BUNDLE_SUFFIX)
TREE_KEY = "ttrl_tree"  # metadata entry holding the JSON of everything but the tensors

# JSON stand-ins for what JSON cannot hold. A dict that uses one of these keys, or keys other
# than strings, is written as a list of pairs.
TENSOR, ARRAY, TUPLE, PAIRS = "__tensor__", "__ndarray__", "__tuple__", "__pairs__"
MARKERS = (TENSOR, ARRAY, TUPLE, PAIRS)
# numpy RNG states (np.random.get_state) hold uint32 arrays; nothing else needs other dtypes.
ARRAY_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
ARRAY_DTYPES += ("float16", "float32", "float64")


class _Packer:
    """Turns a bundle into (JSON-able tree, {name: tensor}), naming tensors by their path."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def name(self, path: str) -> str:
        name, n = path or "tensor", 1
        while name in self.tensors:
            name, n = f"{path}#{n}", n + 1
        return name

    def pack(self, obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            name = self.name(path)
            self.tensors[name] = obj.detach().cpu().contiguous().clone()
            return {TENSOR: name}
        if isinstance(obj, np.ndarray):
            if obj.dtype.name not in ARRAY_DTYPES:
                raise TypeError(f"cannot store a numpy array of dtype {obj.dtype} at {path}")
            name = self.name(path)
            # stored widened (safetensors' torch side lacks some unsigned types), narrowed on load
            widened = obj.astype(np.int64) if obj.dtype.kind == "u" else obj
            self.tensors[name] = torch.from_numpy(np.ascontiguousarray(widened)).clone()
            return {ARRAY: name, "dtype": obj.dtype.name}
        if isinstance(obj, tuple):
            return {TUPLE: [self.pack(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.pack(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and k not in MARKERS for k in obj):
                return {k: self.pack(v, f"{path}.{k}" if path else k) for k, v in obj.items()}
            return {
                PAIRS: [[self.pack(k, path), self.pack(v, f"{path}.{k}")] for k, v in obj.items()]
            }
        if isinstance(obj, np.generic):
            return obj.item()
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint bundle (at {path})")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :meth:`_Packer.pack`; raises KeyError/TypeError/ValueError on a bad tree."""
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if TENSOR in obj:
        return tensors[obj[TENSOR]]
    if ARRAY in obj:
        dtype = obj["dtype"]
        if dtype not in ARRAY_DTYPES:
            raise ValueError(f"unknown array dtype {dtype!r}")
        return tensors[obj[ARRAY]].numpy().astype(dtype)
    if TUPLE in obj:
        return tuple(_unpack(v, tensors) for v in obj[TUPLE])
    if PAIRS in obj:
        return {_unpack(k, tensors): _unpack(v, tensors) for k, v in obj[PAIRS]}
    return {k: _unpack(v, tensors) for k, v in obj.items()}


def encode_bundle(bundle: dict[str, Any]) -> bytes:
    """The bytes of a bundle file: safetensors tensors plus the JSON tree in its metadata."""
    from safetensors.torch import save

    packer = _Packer()
    tree = packer.pack(bundle, "")
    return save(packer.tensors, metadata={TREE_KEY: json.dumps(tree)})


def decode_bundle(file: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a bundle file written by :func:`encode_bundle`, without running anything from it."""
    from safetensors import safe_open

    device = str(map_location) if map_location is not None else "cpu"
    try:
        with safe_open(str(file), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        return _unpack(json.loads(metadata[TREE_KEY]), tensors)
    except Exception as err:  # safetensors' own error type, a missing key, bad JSON, a bad tree
        raise TtrlError(
            f"cannot read checkpoint {file} ({type(err).__name__}: {str(err)[:120]}); it may be "
            f"truncated or not a ttrl bundle: pass one written by scripts/train.py"
        ) from err


def bundle_name(stem: str) -> str:
    """A bundle's file name: ``last`` -> ``last.safetensors``."""
    return f"{stem}{BUNDLE_SUFFIX}"


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    """``<run_dir>/checkpoints/<which>.safetensors``, where training writes ``which``."""
    return Path(run_dir) / CHECKPOINT_DIR / bundle_name(which)


def resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The ``last`` checkpoint a run in ``run_dir`` resumes from (ttrl 0.1's ``last.pt`` too)."""
    current = checkpoint_path(run_dir, "last")
    legacy = current.with_suffix(LEGACY_SUFFIX)
    return next((p for p in (current, legacy) if p.is_file()), None)


def save_bundle(path: str | os.PathLike, **parts: Any) -> Path:
    """Write a bundle holding ``parts`` (model_config, model, discretizer, config, trainer) atomically."""
    from ttrl import __version__

    bundle = {"format": BUNDLE_FORMAT, "version": __version__, **parts}
    return atomic_write_bytes(path, encode_bundle(bundle))


def bundle_candidates(path: Path, which: str) -> list[Path]:
    """Where a run dir or a saved-model dir may hold its bundle, newest format first."""
    stems = [Path(CHECKPOINT_DIR) / which, Path(MODEL_FILE), Path("model")]
    return [path / f"{s}{suffix}" for suffix in (BUNDLE_SUFFIX, LEGACY_SUFFIX) for s in stems]


def find_bundle(path: str | os.PathLike, which: str = "last") -> Path:
    """Resolve a bundle file, a directory holding a saved model, or a run dir to a bundle path."""
    path = Path(path)
    candidates = [path] if path.is_file() else bundle_candidates(path, which)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if not path.exists():
        raise TtrlError(f"{path} does not exist; pass a training run dir or a checkpoint file")
    current = [str(c.relative_to(path)) for c in candidates if c.suffix == BUNDLE_SUFFIX]
    raise TtrlError(
        f"no checkpoint in {path} (looked for {', '.join(current)}, and the same with "
        f"{LEGACY_SUFFIX}); train one with `python scripts/train.py` or pass the run dir that holds it"
    )


def is_torch_pickle(file: Path) -> bool:
    """True for a ``torch.save`` file (a zip archive), whatever its name."""
    with open(file, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _numpy_reconstruct() -> list[Any]:
    """numpy's array-unpickling function under the names numpy 1 and numpy 2 pickle it by."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x, which pyproject allows
        from numpy.core.multiarray import _reconstruct

    return [
        (_reconstruct, f"{module}.multiarray._reconstruct")
        for module in ("numpy.core", "numpy._core")
    ]


def load_legacy_bundle(file: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A ``torch.save``'d bundle of ttrl 0.1, through torch's ``weights_only`` unpickler.

    That unpickler only builds tensors and plain containers; the numpy arrays of the saved RNG
    states are the one other thing allowed. Anything else (a file that would run code) is refused.
    """
    allowed = [np.ndarray, np.dtype, np.dtypes.UInt32DType, *_numpy_reconstruct()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for forbidden objects, or a damaged file
        raise TtrlError(
            f"refusing to load {file}: it is a torch pickle that holds more than tensors and plain "
            f"values ({type(err).__name__}), and loading it could run code from it; use a bundle "
            f"written by ttrl (checkpoints/*{BUNDLE_SUFFIX}) or re-save the weights as safetensors"
        ) from err


def load_bundle(path: str | os.PathLike, which: str = "last", map_location: Any = "cpu") -> dict:
    """Load a bundle from a file, a saved-model dir or a run dir, checking its format."""
    file = find_bundle(path, which)
    try:
        legacy = is_torch_pickle(file)
    except OSError as err:
        raise TtrlError(f"cannot read checkpoint {file}: {err}") from err
    bundle = load_legacy_bundle(file, map_location) if legacy else decode_bundle(file, map_location)
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise TtrlError(
            f"{file} is not a ttrl checkpoint bundle; pass one written by scripts/train.py"
        )
    return bundle
