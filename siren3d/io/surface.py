"""Points on a triangle mesh's surface: how a mesh given as input becomes a scan (and how the
benchmarks and tests sample reference shapes)."""

from __future__ import annotations

import numpy as np

from ..errors import Siren3dError


def sample_mesh_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0,
                        path: str = "") -> tuple[np.ndarray, np.ndarray, int]:
    """Area-weighted samples on a triangle mesh, with the face normals.

    Returns (points (count, 3) float64, normals (count, 3) float64, number of degenerate faces).
    """
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise Siren3dError(f"mesh faces index vertices out of range (0..{len(vertices) - 1})", path)
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    good = np.isfinite(area2) & (area2 > 1e-12 * max(float(np.nanmax(area2, initial=0.0)), 1e-300))
    degenerate = int((~good).sum())
    if not good.any():
        raise Siren3dError(f"all {len(faces)} mesh faces are degenerate (zero area)", path)
    tri, cross, area2 = tri[good], cross[good], area2[good]
    rng = np.random.default_rng(seed)
    weight = area2 / area2.max()  # scaled first: the sum of huge areas must not overflow
    idx = rng.choice(len(tri), size=count, p=weight / weight.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[idx]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[idx] / area2[idx, None]
    return points, normals, degenerate
