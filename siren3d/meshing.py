"""Extracting the zero level set of a fitted field as a triangle mesh in the scan's coordinates.

The field is evaluated on a regular grid of ``res`` samples per axis spanning the unit box
[-1, 1]^3 (sample i sits at -1 + 2 i / (res - 1) on every axis), in chunks so memory stays bounded,
and marching cubes (PyMCubes or scikit-image) extracts the surface. Faces are oriented outward
(the field is negative inside).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import Siren3dError
from .io import atomic_output
from .model import Siren
from .normalization import Normalization

log = logging.getLogger(__name__)

BACKENDS = ("mcubes", "skimage")
EXPORT_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb")
#: Points per network call when evaluating a grid.
DEFAULT_CHUNK = 65536


@dataclass
class MeshResult:
    vertices: np.ndarray  # (V, 3) float64, scan coordinates
    faces: np.ndarray     # (F, 3) int64, outward
    stats: dict = field(default_factory=dict)

    def to_trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


def grid_axis(res: int) -> np.ndarray:
    """The sample positions along one axis of the unit box: (res,) float64, exact endpoints."""
    return -1.0 + 2.0 * np.arange(res, dtype=np.float64) / (res - 1)


@torch.no_grad()
def evaluate(model: Siren, points: np.ndarray | torch.Tensor, chunk: int = DEFAULT_CHUNK,
             device: str | torch.device | None = None) -> np.ndarray:
    """f at unit-box points, in chunks. points: (N, 3) -> (N,) float32."""
    device = device or next(model.parameters()).device
    pts = torch.as_tensor(points, dtype=torch.float32)
    out = np.empty(len(pts), dtype=np.float32)
    for i in range(0, len(pts), chunk):
        out[i:i + chunk] = model(pts[i:i + chunk].to(device)).float().cpu().numpy()
    return out


@torch.no_grad()
def dense_grid(model: Siren, res: int, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """f on the full res^3 grid, (res, res, res) float32 indexed [ix, iy, iz]."""
    ax = torch.as_tensor(grid_axis(res), dtype=torch.float32)
    vol = np.empty((res, res, res), dtype=np.float32)
    yy, zz = torch.meshgrid(ax, ax, indexing="ij")
    plane = torch.stack([torch.zeros_like(yy), yy, zz], dim=-1).reshape(-1, 3)
    for ix in range(res):
        plane[:, 0] = ax[ix]
        vol[ix] = evaluate(model, plane, chunk).reshape(res, res)
    return vol


def marching_cubes(volume: np.ndarray, level: float = 0.0, backend: str = "mcubes"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of the ``level`` set in index coordinates, oriented so normals point to larger values.

    volume: (X, Y, Z) float32. Returns (vertices (V, 3) float64, faces (F, 3) int64).
    """
    if backend == "mcubes":
        import mcubes

        v, f = mcubes.marching_cubes(np.ascontiguousarray(volume, dtype=np.float64), float(level))
        f = np.asarray(f, dtype=np.int64)
        f = f[:, ::-1]  # PyMCubes winds faces toward smaller values
    elif backend == "skimage":
        from skimage.measure import marching_cubes as sk_mc

        v, f, _, _ = sk_mc(volume, level=float(level), allow_degenerate=False)
        f = np.asarray(f, dtype=np.int64)  # skimage already winds toward larger values
    else:
        raise Siren3dError(f"unknown marching cubes backend '{backend}'; choose from {', '.join(BACKENDS)}")
    return np.asarray(v, dtype=np.float64), f


def extract_mesh(model: Siren, normalization: Normalization, res: int = 256, *, backend: str = "mcubes",
                 level: float = 0.0, chunk: int = DEFAULT_CHUNK) -> MeshResult:
    """The zero level set (or ``level``, in scan units) of ``model`` as a mesh in scan coordinates."""
    if res < 8:
        raise Siren3dError(f"--res {res} is too small; use at least 8")
    if backend not in BACKENDS:
        raise Siren3dError(f"unknown marching cubes backend '{backend}'; choose from {', '.join(BACKENDS)}")
    need = res ** 3 * 4 * 3  # the grid plus marching cubes' working copies
    _check_memory(need, res)
    t0 = time.perf_counter()
    model.eval()
    vol = dense_grid(model, res, chunk)
    unit_level = level / normalization.scale
    lo, hi = float(vol.min()), float(vol.max())
    if not (lo < unit_level < hi):
        where = "positive (outside)" if lo >= unit_level else "negative (inside)"
        raise Siren3dError(
            f"the field has no zero crossing in the box: it is everywhere {where} "
            f"(min {normalization.distance_to_scan(lo):.4g}, max {normalization.distance_to_scan(hi):.4g} scan units); "
            f"the fit probably failed: check loss.png and refit with more --steps")
    v, f = marching_cubes(vol, unit_level, backend)
    unit = -1.0 + v * (2.0 / (res - 1))
    vertices = normalization.to_scan(unit)
    stats = {"res": res, "backend": backend, "evaluations": res ** 3, "dense_evaluations": res ** 3,
             "seconds": time.perf_counter() - t0, "vertices": len(vertices), "faces": len(f)}
    return MeshResult(vertices, f, stats)


def _check_memory(need_bytes: int, res: int) -> None:
    avail = _available_memory()
    if avail is not None and need_bytes > 0.8 * avail:
        raise Siren3dError(
            f"--res {res} needs about {need_bytes / 2**30:.1f} GiB but only {avail / 2**30:.1f} GiB is available; "
            f"use a lower --res")


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def export_mesh(mesh: MeshResult, path: str | Path) -> Path:
    """Write the mesh by suffix (PLY, OBJ, STL, OFF, GLB), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise Siren3dError(f"cannot write '{suffix or '(no extension)'}' meshes; use one of "
                           f"{' '.join(EXPORT_SUFFIXES)}", path)
    tm = mesh.to_trimesh()
    try:
        with atomic_output(path) as tmp:
            tm.export(tmp, file_type=suffix[1:])
    except OSError as e:
        raise Siren3dError(f"cannot write the mesh ({e.strerror or e})", path) from None
    return path
