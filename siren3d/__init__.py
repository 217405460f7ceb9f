"""siren3d: watertight meshes from 3D scans through a SIREN signed distance field.

The pipeline, one module per step::

    io -> normalization -> sampling -> model -> losses -> training -> meshing -> metrics

and the same API the command line uses::

    scan = siren3d.load_scan("scan.ply")
    result = siren3d.fit(scan, siren3d.FitConfig(steps=1900), "runs/scan")
    mesh = siren3d.extract_mesh(result.model, result.normalization, support=result.support)  # = `siren3d mesh`
    siren3d.export_mesh(mesh, "scan.ply")

Names are imported on first use, so ``import siren3d`` (and ``siren3d --help``) does not load torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import SettingError, Siren3dError

#: public name -> the module that defines it
_API = {
    "FitConfig": "config", "MeshConfig": "config", "ModelConfig": "config", "LossWeights": "config",
    "LoadConfig": "config", "fit_config": "config",
    "Scan": "io", "load_scan": "io",
    "Normalization": "normalization",
    "Siren": "model",
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "fit": "training", "FitInterrupted": "training", "FitResult": "training", "Trainer": "training",
    "MeshResult": "meshing", "MeshStats": "meshing", "extract_mesh": "meshing", "export_mesh": "meshing",
    "score_mesh": "metrics",
    "ScanSupport": "support",
    "scan_mesh": "scanner", "viewpoint": "scanner", "VirtualScan": "scanner",
}

__all__ = ["__version__", "Siren3dError", "SettingError", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'siren3d' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
