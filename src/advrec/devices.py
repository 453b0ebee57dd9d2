"""Choosing the torch device ("auto" means CUDA when present) and running torch deterministically."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def deterministic() -> Iterator[None]:
    """Torch's deterministic algorithms inside the block, the caller's setting restored after it.

    The default CPU kernels of some operations accumulate in an order that depends on the thread count (the
    backward pass of embedding look-ups, which BPR-MF and APR train through), so the same seed gave other
    weights with 1 and 2 threads. Operations without a deterministic kernel warn instead of failing. On CUDA,
    cuBLAS needs a fixed workspace for reproducible results (`CUBLAS_WORKSPACE_CONFIG`, set unless already set).
    """
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)
