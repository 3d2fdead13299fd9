"""Device selection, done once per process and passed down."""

from __future__ import annotations

import torch


def resolve_device(setting: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is taken
    as a torch device string (``cpu``, ``cuda``, ``cuda:1``)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(setting)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {setting!r} requested but torch sees no CUDA GPU")
    return dev
