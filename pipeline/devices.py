"""Where tensors run: ``device: auto | cpu | cuda | cuda:N`` of every params section."""

from __future__ import annotations

import torch

from pipeline.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (checked).

    Raises
    ------
    ConfigError
        A CUDA device asked for on a machine without one.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for but CUDA is not available; use auto or cpu")
    return device
