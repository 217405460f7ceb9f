"""Meshes read with trimesh (OBJ, OFF, STL), without processing; their surface is sampled when
loading (a PLY with faces is read by the PLY module and sampled the same way)."""

from __future__ import annotations

import numpy as np

from ...errors import Siren3dError
from ..parse import first_line
from ..registry import Format
from ..scan import RawScan, ReadOptions


def load_mesh_file(path: str, options: ReadOptions | None = None) -> RawScan:
    import trimesh

    try:
        loaded = trimesh.load(path, force="mesh", process=False)
        if len(getattr(loaded, "faces", ())) == 0 and len(getattr(loaded, "vertices", ())) == 0:
            # A vertex-only OBJ/PLY: force="mesh" drops its vertices, the plain load keeps them.
            loaded = trimesh.load(path, process=False)
    except Exception as e:  # trimesh raises many types on bad input
        raise Siren3dError(f"cannot read as a mesh: {first_line(e)}", path) from None
    try:
        vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64)
        faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise Siren3dError("cannot read as a mesh: vertices or faces are not numeric", path) from None
    if len(vertices) == 0:
        vertices = vertices.reshape(0, 3)
    if len(faces) == 0:
        faces = faces.reshape(0, 3)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise Siren3dError(f"cannot read as a mesh: vertices {vertices.shape}, faces {faces.shape}", path)
    if len(faces) == 0:
        return RawScan(vertices, notes=[f"{path}: mesh has no faces; using its {len(vertices)} vertices as a point cloud"])
    return RawScan(vertices, faces=faces)


FORMATS = (Format("OBJ", (".obj",), load_mesh_file, mesh=True),
           Format("OFF", (".off",), load_mesh_file, mesh=True),
           Format("STL", (".stl",), load_mesh_file, mesh=True))
