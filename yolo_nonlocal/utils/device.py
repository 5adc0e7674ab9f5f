"""Device strings as Ultralytics writes them (``''``, ``cpu``, ``0``, ``0,1``, ``cuda:1``, ``mps``) to a torch device."""

from __future__ import annotations

from typing import Any

__all__ = ["torch_device"]


def torch_device(device: Any = None):
    """The first torch device of an Ultralytics-style ``device`` argument; None or ``''`` picks cuda:0 when present."""
    import torch

    if device is None or device == "":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    if isinstance(device, bool):
        raise ValueError(f"device={device!r} is not a device; use device=cpu, device=0 or device=cuda:0")
    if isinstance(device, int):
        return torch.device(f"cuda:{device}")
    if isinstance(device, (list, tuple)):
        if not device:
            raise ValueError("device=[] names no device; use device=cpu or device=0")
        return torch_device(device[0])
    s = str(device).split(",")[0].strip().lower()
    try:
        return torch.device(f"cuda:{s}" if s.isdigit() else s)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device; use device=cpu, device=0 or device=cuda:0") from None
