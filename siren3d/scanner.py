"""A virtual range scanner: what a real scanner would record of a mesh from chosen viewpoints.

Each viewpoint is a pinhole range camera aimed at the mesh: one ray per pixel, cast with Open3D's
RaycastingScene; a ray that hits the mesh gives a point (with optional Gaussian range noise along
the ray), the hit triangle's normal turned towards the sensor, and the sensor's position. Rays that
meet the surface at a grazing angle return nothing, as on real scanners. Points are never seen
through the mesh: a single view gives the near side only, which makes realistic partial scans of
known shapes for tests and benchmarks (``benchmarks/partial.py``).

    scan = scan_mesh(vertices, faces, [viewpoint(center, 3 * radius, azimuth=30, elevation=20)])
    scan.to_scan()   # a siren3d Scan (points, sensor-facing normals)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class VirtualScan:
    """Points seen from one or more viewpoints.

    points: (N, 3) float64, the mesh's coordinates. normals: (N, 3) float32 unit, towards the sensor.
    sensors: (N, 3) float64, where each point was seen from. view: (N,) int32, index into viewpoints.
    viewpoints: (V, 3) float64.
    """

    points: np.ndarray
    normals: np.ndarray
    sensors: np.ndarray
    view: np.ndarray
    viewpoints: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    def to_scan(self, path: str = "virtual-scan", colors: np.ndarray | None = None):
        """A :class:`siren3d.io.Scan` of these points with their sensor-facing normals and per-point
        sensor positions (and ``colors`` (N, 3|4) uint8, if given)."""
        from .io import Scan

        return Scan(points=np.ascontiguousarray(self.points, dtype=np.float64),
                    normals=np.ascontiguousarray(self.normals, dtype=np.float32), path=path,
                    colors=None if colors is None else np.asarray(colors, dtype=np.uint8),
                    sensor=self.sensors.copy())


def viewpoint(target, distance: float, azimuth: float = 0.0, elevation: float = 0.0, up=(0.0, 0.0, 1.0)
              ) -> np.ndarray:
    """A sensor position ``distance`` from ``target``, at ``azimuth`` degrees around the ``up`` axis
    and ``elevation`` degrees above the plane normal to it. Returns (3,) float64."""
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    a = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = a - (a @ up) * up
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    az, el = math.radians(azimuth), math.radians(elevation)
    direction = math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * up
    return np.asarray(target, dtype=np.float64) + distance * direction


def scan_mesh(vertices: np.ndarray, faces: np.ndarray, viewpoints, *, resolution: int = 256,
              fov: float | None = None, target=None, up=None, noise: float = 0.0,
              max_incidence: float = 80.0, seed: int = 0) -> VirtualScan:
    """Ray-cast the mesh (vertices (V, 3), faces (F, 3)) from each viewpoint ((3,) or (K, 3)).

    Each view is ``resolution`` x ``resolution`` rays through a square field of view of ``fov``
    degrees (default: just wide enough for the mesh's bounding sphere) aimed at ``target`` (default:
    the centre of the mesh's bounding box), ``up`` the image's up direction (default z, or y when
    looking along z). ``noise``: standard deviation of Gaussian range noise, in mesh units, along
    each ray. Hits at more than ``max_incidence`` degrees from the surface normal are lost.
    """
    import open3d as o3d

    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    views = np.atleast_2d(np.asarray(viewpoints, dtype=np.float64))
    if views.shape[1] != 3 or len(faces) == 0:
        raise ValueError("viewpoints must be (3,) or (K, 3), and the mesh must have faces")
    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2 if target is None else np.asarray(target, dtype=np.float64)
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    rng = np.random.default_rng(seed)
    cos_max = math.cos(math.radians(max_incidence))
    out = {k: [] for k in ("points", "normals", "sensors", "view")}
    for i, eye in enumerate(views):
        dist = float(np.linalg.norm(eye - centre))
        if dist <= radius and fov is None:
            raise ValueError(f"viewpoint {i} is inside the mesh's bounding sphere: give a fov")
        view_fov = fov if fov is not None else 2 * math.degrees(math.asin(min(radius / dist, 1.0))) * 1.05
        look = (centre - eye) / dist
        cam_up = np.asarray(up if up is not None else ((0, 0, 1) if abs(look[2]) < 0.95 else (0, 1, 0)),
                            dtype=np.float64)
        rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
            fov_deg=float(view_fov), center=centre.astype(np.float32).tolist(), eye=eye.astype(np.float32).tolist(),
            up=cam_up.astype(np.float32).tolist(), width_px=int(resolution), height_px=int(resolution))
        hit = scene.cast_rays(rays)
        t = hit["t_hit"].numpy().reshape(-1).astype(np.float64)
        ok = np.isfinite(t)
        d = rays.numpy().reshape(-1, 6)[ok, 3:].astype(np.float64)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        t = t[ok] * np.linalg.norm(rays.numpy().reshape(-1, 6)[ok, 3:], axis=1)  # t_hit is in ray-length units
        n = hit["primitive_normals"].numpy().reshape(-1, 3)[ok].astype(np.float64)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        facing = np.einsum("ij,ij->i", n, d)
        n[facing > 0] *= -1  # towards the sensor
        keep = np.abs(facing) >= cos_max
        t, d, n = t[keep], d[keep], n[keep]
        if noise > 0:
            t = t + rng.normal(scale=noise, size=len(t))
        out["points"].append(eye + t[:, None] * d)
        out["normals"].append(n.astype(np.float32))
        out["sensors"].append(np.broadcast_to(eye, (len(t), 3)).copy())
        out["view"].append(np.full(len(t), i, dtype=np.int32))
    return VirtualScan(*(np.concatenate(out[k]) for k in ("points", "normals", "sensors", "view")), views.copy())
