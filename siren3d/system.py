"""What the machine offers: the compute device and free memory. Used by training, meshing and the viewer."""

from __future__ import annotations

import torch

from .errors import Siren3dError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N' as a torch.device; refuses CUDA without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICES and not name.startswith("cuda:"):
        raise Siren3dError(f"unknown device '{name}': use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise Siren3dError("device cuda was asked for but no CUDA GPU is available; use device cpu")
    return torch.device(name)


def available_memory(device: torch.device | None = None) -> int | None:
    """Free memory in bytes: free GPU memory for CUDA, MemAvailable for the CPU (None: unknown)."""
    if device is not None and device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no answer is not an error
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
