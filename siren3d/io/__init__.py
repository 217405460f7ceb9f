"""Reading scans: point clouds and meshes in the formats scanners and tools write.

:func:`load_scan` returns a :class:`Scan` of finite points with unit normals (and the file's colours,
intensity and sensor positions, aligned with the points), or raises
:class:`~siren3d.errors.Siren3dError` naming the file and the problem. Files are never trusted: a
lying header or a truncated body is an error, not a crash.

Layout::

    formats/       one module per format family, each listing its formats (suffixes, leading
                   bytes, loader) in FORMATS; registry.py gathers them
    load.py        load_scan: file checks, the format's loader, cleaning
    outliers.py    stray points
    normals.py     normal estimation and orientation
    surface.py     sampling a mesh's surface
    write.py       save_points_ply
"""

from __future__ import annotations

from .load import MIN_POINTS, load_scan
from .normals import estimate_normals, orient_toward
from .outliers import find_outliers
from .registry import FORMATS, MESH_SUFFIXES, SUPPORTED, Format
from .scan import RawScan, ReadOptions, Scan
from .surface import sample_mesh_surface
from .write import save_points_ply

__all__ = ["load_scan", "Scan", "RawScan", "ReadOptions", "Format", "FORMATS", "SUPPORTED", "MESH_SUFFIXES",
           "MIN_POINTS", "save_points_ply", "sample_mesh_surface", "estimate_normals", "orient_toward",
           "find_outliers"]
