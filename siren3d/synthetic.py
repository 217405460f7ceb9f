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


# --------------------------------------------------------------------------------------------
# Exact distances to pieces of boundary, for shapes whose boundary is a union of simple pieces:
# the unsigned distance is the smallest distance to any piece, the sign an inside test. Exact
# where the pieces are the whole boundary (no piece hidden inside another part).


def _segment_distance(q: np.ndarray, a, b) -> np.ndarray:
    """Distance from 2-D points q (N, 2) to the segment a-b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    qa, ba = q - a, b - a
    h = np.clip((qa @ ba) / (ba @ ba), 0.0, 1.0)
    return np.linalg.norm(qa - h[:, None] * ba, axis=1)


def _arc_distance(q: np.ndarray, center, radius: float, start: float, span: float) -> np.ndarray:
    """Distance from 2-D points q (N, 2) to the circular arc from angle ``start`` over ``span`` (radians, ccw)."""
    c = np.asarray(center, dtype=np.float64)
    d = q - c
    angle = np.mod(np.arctan2(d[:, 1], d[:, 0]) - start, 2 * np.pi)
    ends = [c + radius * np.array([np.cos(t), np.sin(t)]) for t in (start, start + span)]
    to_end = np.minimum(np.linalg.norm(q - ends[0], axis=1), np.linalg.norm(q - ends[1], axis=1))
    return np.where(angle <= span, np.abs(np.linalg.norm(d, axis=1) - radius), to_end)


def _extrude(d2: np.ndarray, z: np.ndarray, half_height: float) -> np.ndarray:
    """Exact signed distance of a 2-D region (its exact signed distance d2) extruded over |z| <= half_height."""
    w0, w1 = d2, np.abs(z) - half_height
    return np.minimum(np.maximum(w0, w1), 0.0) + np.hypot(np.maximum(w0, 0.0), np.maximum(w1, 0.0))


def box(half, center=(0.0, 0.0, 0.0)):
    """An axis-aligned box with sharp edges and corners."""
    half, c = np.asarray(half, dtype=np.float64), np.asarray(center, dtype=np.float64)

    def sdf(p):
        q = np.abs(p - c) - half
        return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(-1), 0.0)

    return sdf


def cad_part(half=(0.7, 0.5, 0.25), chamfer: float = 0.2, round_radii=(0.12, 0.2)):
    """A machined plate: flat faces, sharp 90° edges, through-holes and a slot.

    Its outline in the xy plane is a rectangle (half sides ``half[:2]``) with the (+x, +y) and
    (-x, -y) corners chamfered at 45° (legs ``chamfer``) and the (-x, +y) and (+x, -y) corners
    rounded (``round_radii``), pierced along z by two round holes (radii 0.15 and 0.09) and a
    slot (0.14 wide), and extruded over |z| <= half[2]: large flat top and bottom faces meeting
    the walls at sharp edges, the "orange peel" test for planar faces. The distance is exact
    everywhere (outline pieces and holes are disjoint, and extrusion keeps a 2-D distance exact).
    """
    a, b, h = (float(v) for v in half)
    c, (r_tl, r_br) = float(chamfer), (float(v) for v in round_radii)
    # The outline, counter-clockwise from the right edge: segments and quarter arcs.
    segments = [((a, -b + r_br), (a, b - c)), ((a, b - c), (a - c, b)), ((a - c, b), (-a + r_tl, b)),
                ((-a, b - r_tl), (-a, -b + c)), ((-a, -b + c), (-a + c, -b)), ((-a + c, -b), (a - r_br, -b))]
    arcs = [((-a + r_tl, b - r_tl), r_tl, np.pi / 2), ((a - r_br, -b + r_br), r_br, 1.5 * np.pi)]
    holes = [((-0.35, 0.0), 0.15), ((0.3, 0.22), 0.09)]
    slot = ((0.15, -0.22), (0.45, -0.22), 0.07)

    def profile(q):
        """Exact signed distance of the outline minus the holes; q (N, 2)."""
        dist = np.min([_segment_distance(q, s0, s1) for s0, s1 in segments]
                      + [_arc_distance(q, ctr, r, start, np.pi / 2) for ctr, r, start in arcs], axis=0)
        inside = np.ones(len(q), dtype=bool)
        for s0, s1 in segments:  # the outline is convex: left of every edge...
            e, v = np.subtract(s1, s0), q - np.asarray(s0)
            inside &= e[0] * v[:, 1] - e[1] * v[:, 0] >= 0
        for ctr, r, start in arcs:  # ...and within each rounded corner's circle beyond its centre
            d = q - np.asarray(ctr)
            corner = (np.cos(start + np.pi / 4) * d[:, 0] > 0) & (np.sin(start + np.pi / 4) * d[:, 1] > 0)
            inside &= ~corner | (np.linalg.norm(d, axis=1) <= r)
        for ctr, r in holes:
            rho = np.linalg.norm(q - np.asarray(ctr), axis=1)
            dist, inside = np.minimum(dist, np.abs(rho - r)), inside & (rho >= r)
        d_slot = _segment_distance(q, slot[0], slot[1])
        dist, inside = np.minimum(dist, np.abs(d_slot - slot[2])), inside & (d_slot >= slot[2])
        return np.where(inside, -dist, dist)

    def sdf(p):
        p = np.asarray(p, dtype=np.float64).reshape(-1, 3)
        return _extrude(profile(p[:, :2]), p[:, 2], h)

    return sdf


def thin_parts():
    """Thin and sharp parts on a thin base: a heat sink's fins and a knife edge and a spike.

    A base plate 0.06 thick; on it four fins 0.06, 0.04, 0.03 and 0.02 thick (0.8 x 0.8), a
    wedge whose top is a knife edge (its cross-section a triangle 0.12 wide at the base, apex
    angle about 8°) and a cone 0.12 wide tapering to a point. Each part's distance is exact; their
    union (the minimum) is exact outside the shape and underestimates the depth inside where parts
    overlap (it stays 1-Lipschitz, with the exact zero set).
    """
    z0 = -0.42  # the base plate's top face, where the fins stand
    base = box((0.66, 0.46, 0.03), (0.0, 0.0, z0 - 0.03))
    fins = [box((t / 2, 0.4, 0.4), (x, 0.0, z0 + 0.4 - 1e-3)) for x, t in
            ((-0.5, 0.06), (-0.3, 0.04), (-0.1, 0.03), (0.1, 0.02))]
    knife = [(0.3, z0 - 0.01), (0.42, z0 - 0.01), (0.36, z0 + 0.82)]  # (x, z) triangle, ccw
    spike_base, spike_tip, spike_r, spike_xy = z0 - 0.01, z0 + 0.9, 0.06, np.array([0.55, 0.0])

    def wedge(p):
        q = p[:, [0, 2]]
        dist = np.min([_segment_distance(q, knife[i], knife[(i + 1) % 3]) for i in range(3)], axis=0)
        inside = np.ones(len(q), dtype=bool)
        for i in range(3):
            e, v = np.subtract(knife[(i + 1) % 3], knife[i]), q - np.asarray(knife[i])
            inside &= e[0] * v[:, 1] - e[1] * v[:, 0] >= 0
        return _extrude(np.where(inside, -dist, dist), p[:, 1], 0.4)

    def spike(p):
        # A solid of revolution: the distance in the (rho, z) half-plane to the triangle, whose
        # edge on the axis is not part of the boundary.
        q = np.stack([np.linalg.norm(p[:, :2] - spike_xy, axis=1), p[:, 2]], axis=1)
        slope = _segment_distance(q, (spike_r, spike_base), (0.0, spike_tip))
        bottom = _segment_distance(q, (0.0, spike_base), (spike_r, spike_base))
        inside = (q[:, 1] >= spike_base) & (q[:, 0] <= spike_r * (spike_tip - q[:, 1]) / (spike_tip - spike_base))
        return np.where(inside, -1.0, 1.0) * np.minimum(slope, bottom)

    def sdf(p):
        p = np.asarray(p, dtype=np.float64).reshape(-1, 3)
        return np.min([base(p)] + [fin(p) for fin in fins] + [wedge(p), spike(p)], axis=0)

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


class _AnalyticField:
    """An analytic sdf seen as a field for :func:`siren3d.meshing.extract_mesh` (which evaluates any callable)."""

    def __init__(self, sdf):
        self.sdf = sdf

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return self.sdf(p)

    def eval(self) -> "_AnalyticField":
        return self


def mesh_sdf(sdf, res: int = 512, scale: float = 1.0, offset=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """The zero level set of an analytic sdf over the unit box as a mesh, mapped by x * scale + offset.

    Marching cubes on a ``res``-sample grid, evaluated only near the surface (the sparse extraction
    ``siren3d mesh`` uses); every piece is kept. Returns vertices (V, 3) float64 and faces (F, 3)
    int64, wound outward.
    """
    from .meshing import extract_mesh
    from .normalization import Normalization

    norm = Normalization(center=tuple(float(v) for v in offset), scale=float(scale))
    mesh = extract_mesh(_AnalyticField(sdf), norm, res=res, normals=False, min_component=0.0, keep_inner=True)
    return mesh.vertices, np.asarray(mesh.faces, dtype=np.int64)
