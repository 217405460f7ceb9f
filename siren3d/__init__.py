"""siren3d: watertight meshes from 3D scans through a SIREN signed distance field.

The pipeline, one module per step::

    io -> normalization -> sampling -> model -> losses -> training -> meshing -> metrics

and the same API the command line uses::

    scan = siren3d.load_scan("scan.ply")
    result = siren3d.fit(scan, siren3d.FitConfig(steps=1200), "runs/scan")
    mesh = siren3d.extract_mesh(result.model, result.normalization, res=256)
    siren3d.export_mesh(mesh, "scan.ply")
"""

__version__ = "0.1.0"

from .errors import Siren3dError  # noqa: E402
from .io import Scan, load_scan  # noqa: E402
from .normalization import Normalization  # noqa: E402
from .model import ModelConfig, Siren  # noqa: E402
from .losses import LossWeights  # noqa: E402
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from .training import FitConfig, FitInterrupted, FitResult, config_from_preset, fit  # noqa: E402
from .meshing import MeshResult, export_mesh, extract_mesh  # noqa: E402

__all__ = [
    "Siren3dError", "Scan", "load_scan", "Normalization", "ModelConfig", "Siren", "LossWeights",
    "Checkpoint", "load_checkpoint", "save_checkpoint", "FitConfig", "FitInterrupted", "FitResult",
    "config_from_preset", "fit", "MeshResult", "export_mesh", "extract_mesh",
]
