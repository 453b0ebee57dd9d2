"""Choosing the torch device: "auto" means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from advrec.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" → CUDA when present, else CPU; anything else as torch understands it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not a torch device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available")
    return dev
