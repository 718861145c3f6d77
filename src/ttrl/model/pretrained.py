"""Reading and writing Trajectory Transformer weights: ttrl bundles and HuggingFace directories.

A HuggingFace directory (what ``TrajectoryTransformerModel.save_pretrained`` writes in transformers
<= 4.30) holds ``config.json`` and ``pytorch_model.bin`` or ``model.safetensors``. It is read here
without importing transformers: safetensors files through the safetensors library, and
``pytorch_model.bin`` through torch's ``weights_only`` unpickler, so a shared checkpoint can never
run code. ttrl writes HuggingFace directories as ``model.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ttrl.checkpoint import BUNDLE_SUFFIX, MODEL_FILE, load_bundle, save_bundle
from ttrl.errors import TtrlError
from ttrl.io import atomic_write_bytes, atomic_write_json
from ttrl.model.config import HF_MODEL_TYPE, TrajectoryTransformerConfig

if TYPE_CHECKING:
    from ttrl.model.transformer import TrajectoryTransformer

TTRL_MODEL_FILE = f"{MODEL_FILE}{BUNDLE_SUFFIX}"
HF_CONFIG_FILE = "config.json"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_MASK_SUFFIX = ".attn.mask"  # a buffer HF stores; it is rebuilt from the config
COMPILED_PREFIX = "_orig_mod."  # torch.compile's wrapper prefix, in case a compiled model was saved
HF_SAFETENSORS_METADATA = {"format": "pt"}  # transformers refuses safetensors files without it


def load_config_and_weights(
    path: str | os.PathLike, which: str = "last"
) -> tuple[TrajectoryTransformerConfig, dict[str, Tensor]]:
    """Config and state dict from a bundle file, a run dir, a ``ttrl_model.safetensors`` dir or a HuggingFace dir."""
    path = Path(path)
    if path.is_dir() and (path / HF_CONFIG_FILE).is_file():
        return load_hf_directory(path)
    bundle = load_bundle(path, which=which, map_location="cpu")
    if not isinstance(bundle.get("model_config"), dict) or not isinstance(
        bundle.get("model"), dict
    ):
        raise TtrlError(
            f"checkpoint {path} holds no model_config/model; save it with save_pretrained"
        )
    config = TrajectoryTransformerConfig.from_dict(bundle["model_config"])
    return config, strip_compiled_prefix(bundle["model"])


def load_hf_directory(
    directory: Path,
) -> tuple[TrajectoryTransformerConfig, dict[str, Tensor]]:
    """Config and state dict from a directory written by transformers' save_pretrained."""
    try:
        fields = json.loads((directory / HF_CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise TtrlError(
            f"cannot read {directory / HF_CONFIG_FILE}: {err}; fix or re-save the model"
        ) from err
    model_type = fields.get("model_type", HF_MODEL_TYPE)
    if model_type != HF_MODEL_TYPE:
        raise TtrlError(
            f"{directory / HF_CONFIG_FILE} has model_type {model_type!r}, not {HF_MODEL_TYPE!r}; "
            f"pass a Trajectory Transformer checkpoint"
        )
    config = TrajectoryTransformerConfig.from_dict(fields)
    weights_file = next((directory / n for n in HF_WEIGHT_FILES if (directory / n).is_file()), None)
    if weights_file is None:
        raise TtrlError(
            f"{directory} has config.json but no {' or '.join(HF_WEIGHT_FILES)}; add the weights file"
        )
    if weights_file.suffix == ".safetensors":
        state_dict = read_safetensors(weights_file)
    else:
        try:
            state_dict = torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or not a weights file
            raise TtrlError(
                f"cannot read {weights_file} ({type(err).__name__}); re-save the model"
            ) from err
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith(HF_MASK_SUFFIX)}
    return config, state_dict


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of a ``.safetensors`` file, read by the safetensors library."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise TtrlError(
            f"{path} is not a readable safetensors file ({str(err)[:120]}); re-save the model"
        ) from err


def strip_compiled_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop torch.compile's ``_orig_mod.`` key prefix so compiled and plain models share checkpoints."""
    return {k.removeprefix(COMPILED_PREFIX): v for k, v in state_dict.items()}


def expected_shapes_explained(name: str) -> str:
    """Which config fields set the shape of weight ``name`` (for error messages)."""
    if name == "tok_emb.weight":
        return "vocab_size * transition_dim + 1, n_embd"
    if name == "pos_emb":
        return "1, block_size, n_embd"
    if name == "head.weight":
        return "transition_dim, vocab_size + 1, n_embd"
    return "n_embd"


def check_state_dict(model: TrajectoryTransformer, state_dict: dict[str, Tensor]) -> None:
    """Raise a one-line TtrlError if ``state_dict`` lacks, adds or mis-shapes a weight of ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    if missing or extra:
        layers = any(k.startswith("blocks.") for k in missing + extra)
        hint = f" (n_layer={model.config.n_layer} may not match the weights)" if layers else ""
        raise TtrlError(
            f"checkpoint weights do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}"
            f"{hint}; load weights saved from a TrajectoryTransformer with the same config"
        )
    for name, tensor in expected.items():
        if tuple(state_dict[name].shape) != tuple(tensor.shape):
            raise TtrlError(
                f"weight {name} has shape {tuple(state_dict[name].shape)} but the config gives "
                f"{tuple(tensor.shape)} ({expected_shapes_explained(name)}); "
                f"make the config's fields match the checkpoint"
            )


def load_weights(model: TrajectoryTransformer, state_dict: dict[str, Tensor]) -> None:
    """Copy ``state_dict`` into ``model`` after checking its keys and shapes."""
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict)


def cpu_state_dict(model: TrajectoryTransformer) -> dict[str, Tensor]:
    """Detached CPU copies of the weights, under the HuggingFace names."""
    return {
        k: v.detach().cpu().clone() for k, v in strip_compiled_prefix(model.state_dict()).items()
    }


def save_model(
    model: TrajectoryTransformer, directory: str | os.PathLike, hf_format: bool = False
) -> Path:
    """Write ``directory/ttrl_model.safetensors`` (a ttrl bundle), or HF's ``config.json`` +
    ``model.safetensors`` with ``hf_format``."""
    directory = Path(directory)
    weights = cpu_state_dict(model)
    if not hf_format:
        return save_bundle(
            directory / TTRL_MODEL_FILE, model_config=model.config.to_dict(), model=weights
        )
    # transformers registers the attention mask as a persistent buffer; include it so it loads cleanly.
    mask = model.allowed.detach().cpu().float()[None, None]
    for i in range(model.config.n_layer):
        weights[f"blocks.{i}{HF_MASK_SUFFIX}"] = mask.clone()
    dtype = str(model.head.weight.dtype).removeprefix("torch.")
    atomic_write_json(directory / HF_CONFIG_FILE, model.config.to_hf_dict(torch_dtype=dtype))
    from safetensors.torch import save

    data = save(weights, metadata=HF_SAFETENSORS_METADATA)
    atomic_write_bytes(directory / HF_WEIGHT_FILES[0], data)
    return directory
