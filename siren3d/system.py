"""What the machine offers: the compute device and free memory. Used by training, meshing and the viewer.
And one request to it: that freed memory be kept for reuse while training (:func:`keep_freed_memory`)."""

from __future__ import annotations

import ctypes
import os
import sys

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


#: glibc malloc options (mallopt): M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: The mmap threshold asked for (glibc before 2.27 or so refuses more than 32 MiB: then that).
MMAP_THRESHOLDS = (64 << 20, 32 << 20)
#: What keep_freed_memory set: None before it ran, else the mmap threshold in bytes (0: nothing set).
kept_mmap_threshold: int | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of handing it back to the system
    at once: allocations up to 64 MiB (32 MiB on older glibc) come from the heap, not one mmap each,
    and up to 256 MiB of free heap is kept. A training step allocates and frees tens of tensors of
    about a megabyte; handed back and faulted in again each time, they cost a default fit on the
    bundled sample 14.5M page faults and 40 s of system time in a 75 s fit (42 s with them kept).
    Tried once per process, Linux with glibc only, and not with SIREN3D_KEEP_FREED_MEMORY=0 in the
    environment; returns whether the options were set.
    """
    global kept_mmap_threshold
    if kept_mmap_threshold is None:
        kept_mmap_threshold = _set_malloc_options()
    return kept_mmap_threshold > 0


def _set_malloc_options() -> int:
    if not sys.platform.startswith("linux") or os.environ.get("SIREN3D_KEEP_FREED_MEMORY") == "0":
        return 0
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library: no search for it
    except (OSError, AttributeError):  # no mallopt: not glibc
        return 0
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    threshold = next((t for t in MMAP_THRESHOLDS if mallopt(_M_MMAP_THRESHOLD, t) == 1), 0)
    kept = mallopt(_M_TRIM_THRESHOLD, 256 << 20) == 1 and mallopt(_M_TOP_PAD, 64 << 20) == 1
    return threshold if kept else 0
