"""Analytic shapes with exact signed distances: the bundled sample, test fixtures, benchmarks.

Each shape is a function sdf(points (N, 3) float64) -> (N,) float64, negative inside.
"""

from __future__ import annotations

import numpy as np


def sphere(radius: float = 0.5, center=(0.0, 0.0, 0.0)):
    c = np.asarray(center, dtype=np.float64)

    def sdf(p):
        return np.linalg.norm(p - c, axis=-1) - radius

    return sdf


def torus(major: float = 0.5, minor: float = 0.15):
    """A ring in the xy plane around the z axis: it has a hole through it."""

    def sdf(p):
        q = np.stack([np.hypot(p[..., 0], p[..., 1]) - major, p[..., 2]], axis=-1)
        return np.linalg.norm(q, axis=-1) - minor

    return sdf


def capsule(a, b, radius: float):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def sdf(p):
        pa, ba = p - a, b - a
        h = np.clip((pa @ ba) / (ba @ ba), 0.0, 1.0)
        return np.linalg.norm(pa - h[..., None] * ba, axis=-1) - radius

    return sdf


def _smooth_union(d1, d2, k):
    h = np.clip(0.5 + 0.5 * (d2 - d1) / k, 0.0, 1.0)
    return d2 * (1 - h) + d1 * h - k * h * (1 - h)


def _smooth_subtract(d, cut, k):
    return -_smooth_union(-d, cut, k)


def sample_shape():
    """The bundled sample: a ring (a hole through it), a thin post, and a dented ball (concave)."""
    ring = torus(0.45, 0.13)
    post = capsule((0.45, 0.0, 0.0), (0.45, 0.0, 0.62), 0.045)
    ball = sphere(0.3, (-0.3, 0.0, 0.3))
    dent = sphere(0.2, (-0.3, -0.3, 0.5))

    def sdf(p):
        d = _smooth_union(ring(p), post(p), 0.04)
        dented_ball = _smooth_subtract(ball(p), dent(p), 0.04)
        return _smooth_union(d, dented_ball, 0.06)

    return sdf


def gradient(sdf, p: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central-difference gradient of an analytic sdf. p: (N, 3) -> (N, 3)."""
    g = np.empty_like(p)
    for i in range(3):
        e = np.zeros(3)
        e[i] = eps
        g[:, i] = (sdf(p + e) - sdf(p - e)) / (2 * eps)
    return g


def sample_surface(sdf, count: int, *, bound: float = 1.0, res: int = 128, seed: int = 0,
                   noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Points on the zero level set of ``sdf`` with unit outward normals.

    Marching cubes gives a triangulation; area-weighted samples on it are projected onto the exact
    surface with Newton steps, and normals are the exact gradient. ``noise`` adds isotropic Gaussian
    displacement (standard deviation, same units as the points) after projection.
    Returns (points (count, 3) float64, normals (count, 3) float64).
    """
    import mcubes

    from .io import sample_mesh_surface

    ax = np.linspace(-bound, bound, res)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    vol = sdf(grid).reshape(res, res, res)
    v, f = mcubes.marching_cubes(vol, 0.0)
    v = -bound + v * (2 * bound / (res - 1))
    pts, _, _ = sample_mesh_surface(v, np.asarray(f, dtype=np.int64), count, seed=seed)
    for _ in range(4):
        g = gradient(sdf, pts)
        pts = pts - (sdf(pts) / np.maximum((g * g).sum(1), 1e-12))[:, None] * g
    normals = gradient(sdf, pts)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    if noise > 0:
        pts = pts + np.random.default_rng(seed + 1).normal(scale=noise, size=pts.shape)
    return pts, normals
