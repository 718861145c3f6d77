"""The device a model runs on, shared by training and planning."""

from __future__ import annotations

import torch

from ttrl.errors import TtrlError

DEVICES = ("auto", "cpu", "cuda")  # the values of the `device` setting


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise TtrlError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    if choice == "cpu" or (choice == "auto" and not cuda):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)
