"""Evaluating a fitted field at many points: values, values with gradients, and regular grids.

The one place that chunks network evaluations (meshing, the viewer's slices and surfaces, the
benchmarks all come here). A *field* is a :class:`~siren3d.model.Siren`, a :class:`ScanField`, or
any callable taking unit-box points (N, 3) to values (N,) (the analytic shapes of
:mod:`siren3d.synthetic`, say).

:class:`ScanField` is the fitted field as a distance in the whole box. A network trained on the
surface losses is a distance only near the surface (farther out it says the side, not how far:
the median f/d beyond 5 % of the diagonal was 0.41 on the project's sample shape); training it to
be one everywhere (a loss on f - s d at off-surface points, ``LossWeights.distance``) takes capacity
from the surface (Lucy's Chamfer 1.47x -> 1.80x Poisson's at weight 1000, 1.62x at 100). So the
network keeps the surface, and beyond a band around the scan the field is the distance to the
nearest scan point with the network's sign: the distance to the measured surface, up to the point
spacing. A smoothstep blends the two between ``near`` and ``far`` (1 % and 2 % of the scan's
diagonal, at least 3 and 6 point spacings), where both agree to a fraction of a percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import MeshConfig
from .model import Siren

#: Points per network call when evaluating many points (MeshConfig.chunk's default).
DEFAULT_CHUNK = MeshConfig().chunk


@dataclass(frozen=True)
class Grid:
    """A regular grid in unit-box coordinates: sample (i, j, k) sits at lo + h * (i, j, k)."""

    lo: tuple[float, float, float]
    h: float
    shape: tuple[int, int, int]  # samples per axis

    @classmethod
    def cube(cls, res: int, pad: float = 0.0) -> "Grid":
        """``res`` samples per axis over [-1 - pad, 1 + pad]^3."""
        a = 1.0 + pad
        return cls((-a, -a, -a), 2 * a / (res - 1), (res, res, res))

    @classmethod
    def box(cls, lo, hi, res: int) -> "Grid":
        """``res`` samples along the longest side of the box [lo, hi] (unit coordinates)."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        ext = hi - lo
        h = float(ext.max()) / (res - 1)
        shape = tuple(int(max(2, math.ceil(e / h - 1e-9) + 1)) for e in ext)
        return cls(tuple(float(v) for v in lo), h, shape)

    @property
    def cells(self) -> np.ndarray:
        return np.asarray(self.shape, dtype=np.int64) - 1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def points(self, index: np.ndarray) -> np.ndarray:
        """(M, 3) integer sample indices (or fractional index coordinates) -> unit coordinates."""
        return np.asarray(self.lo) + self.h * np.asarray(index, dtype=np.float64)

    def axes(self) -> list[np.ndarray]:
        """The sample coordinates along x, y and z (float64)."""
        return [self.lo[a] + self.h * np.arange(n, dtype=np.float64) for a, n in enumerate(self.shape)]


#: ScanField: within this fraction of the scan's diagonal from the scan only the network counts ...
BLEND_NEAR = 0.01
#: ... and within this many (median) point spacings, on sparse scans where that is farther (3 before
#: Adam's beta2 0.98: a default fit of a 20,000-point torus then fell short of the distance about 3
#: spacings out, so that the field dipped along a ray leaving the surface; its near-surface points
#: lie within one spacing).
BLEND_NEAR_SPACINGS = 2.0
#: The blend to the scan distance ends at this multiple of ``near``.
BLEND_FAR = 2.0
#: The blend weight goes by min(scan distance, BLEND_ZERO * |network|): next to a zero crossing of
#: the network away from the scan it falls back to the network (a default fit's network is 0.3-0.4 of
#: the distance far out, so elsewhere the scan distance decides).
BLEND_ZERO = 10.0
#: Far from the scan its distance comes from a seeded subset of this many points: a nearest-point
#: search far from a surface sample visits many nearly equidistant points (about 20 us a query on
#: 100k points against 2 us on 10k), and there the subset's distance is within 0.1 % of the
#: diagonal on average (Lucy, the bunny: 100k surface samples, uniform points in the box).
COARSE_POINTS = 10_000
#: Beyond this fraction of the diagonal (and 2 ``far``) the subset's distance is used.
COARSE_FAR = 0.05


class ScanField:
    """The fitted network next to the scan and the signed distance to the scan beyond it.

    model: the fitted :class:`~siren3d.model.Siren`. support: the scan's
    :class:`~siren3d.support.ScanSupport` (points and spacings in the unit box). Within ``near`` of
    the scan the values are the network's; beyond ``far`` they are the distance to the nearest scan
    point with the network's sign; a smoothstep in the distance blends the two in between, and
    falls back to the network next to the network's own zero crossings away from the scan (the unseen
    side of a partial scan, a ghost), where a sign flip would otherwise be a jump. The zero level set
    is the network's. Evaluate with :func:`field_values` and
    :func:`field_values_and_grads` (the gradient of the blend, exactly).
    """

    def __init__(self, model: Siren, support, seed: int = 0):
        self.model, self.support = model, support
        diagonal = support.diagonal
        self.near = max(BLEND_NEAR * diagonal, BLEND_NEAR_SPACINGS * float(np.median(support.spacing)))
        self.far = BLEND_FAR * self.near
        self.coarse_far = max(COARSE_FAR * diagonal, 2 * self.far)
        pts = np.asarray(support.points, dtype=np.float64)
        if len(pts) > COARSE_POINTS:
            pts = pts[np.random.default_rng(seed).choice(len(pts), COARSE_POINTS, replace=False)]
        self._coarse_points = pts
        self._coarse = None

    def scan_distance(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance (N,), its gradient (N, 3)) of unit-box points x (N, 3) to the scan, float64.
        Exact between ``near`` and ``coarse_far``; below ``near`` it is only an upper bound (the
        blend does not use it there); beyond ``coarse_far`` it moves linearly over another half of
        it to the subset's distance (a little larger), so the handover is not a step."""
        if self._coarse is None:
            from scipy.spatial import cKDTree

            self._coarse = cKDTree(self._coarse_points)
        x = np.asarray(x, dtype=np.float64)
        d, j = self._coarse.query(x, k=1, workers=-1)  # >= the distance to the whole scan
        grad = (x - self._coarse_points[j]) / np.maximum(d, 1e-12)[:, None]
        band = 0.5 * self.coarse_far
        exact = np.flatnonzero((d > self.near) & (d <= self.coarse_far + band))
        if len(exact):
            de, je = self.support.tree.query(x[exact], k=1, workers=-1)
            ge = (x[exact] - self.support.points[je]) / np.maximum(de, 1e-12)[:, None]
            v = np.clip((de - self.coarse_far) / band, 0.0, 1.0)[:, None]
            dv = ((de > self.coarse_far) & (de < self.coarse_far + band))[:, None] / band * ge
            dc, gc = d[exact][:, None], grad[exact]
            grad[exact] = (1 - v) * ge + v * gc + (dc - de[:, None]) * dv
            d[exact] = ((1 - v) * de[:, None] + v * dc)[:, 0]
        return d, grad

    def blend(self, x: np.ndarray, f: np.ndarray, g: np.ndarray | None = None):
        """The field from the network's values f (N,) (and gradients g (N, 3)) at unit-box points x."""
        x = np.asarray(x, dtype=np.float64)
        f = np.asarray(f, dtype=np.float64).copy()
        g = None if g is None else np.asarray(g, dtype=np.float64).copy()
        p, u = self.scan_distance(x)
        sel = np.flatnonzero(p > self.near)  # nearer, the network alone
        if len(sel) == 0:
            return f if g is None else (f, g)
        p, u = p[sel], u[sel]
        n = f[sel]
        s = np.where(n >= 0, 1.0, -1.0)
        # The blend goes by the scan distance, and back to the network next to the network's own zero
        # set (where it changes sign away from the scan: the unseen side of a partial scan, a ghost),
        # so the field stays continuous there instead of jumping from -p to +p.
        by_net = BLEND_ZERO * np.abs(n) < p
        m = np.where(by_net, BLEND_ZERO * np.abs(n), p)
        t = np.clip((m - self.near) / (self.far - self.near), 0.0, 1.0)
        w = t * t * (3 - 2 * t)
        f[sel] = (1 - w) * n + w * s * p
        if g is None:
            return f
        dw = 6 * t * (1 - t) / (self.far - self.near)
        grad_m = np.where(by_net[:, None], BLEND_ZERO * s[:, None] * g[sel], u)
        g[sel] = (1 - w)[:, None] * g[sel] + (w * s)[:, None] * u + ((s * p - n) * dw)[:, None] * grad_m
        return f, g


def field_values(field, points, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """f at unit-box points, in chunks. points: (N, 3) -> (N,) float32."""
    if isinstance(field, ScanField):
        x = points.detach().cpu().numpy() if torch.is_tensor(points) else np.asarray(points)
        return field.blend(x, field_values(field.model, x, chunk)).astype(np.float32)
    if not isinstance(field, Siren):
        return np.asarray(field(np.asarray(points, dtype=np.float64)), dtype=np.float32).reshape(len(points))
    device = next(field.parameters()).device
    f = field.evaluator()
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32) if not torch.is_tensor(points) else points,
                          dtype=torch.float32)
    out = np.empty(len(pts), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(pts), chunk):
            out[i:i + chunk] = f(pts[i:i + chunk].to(device)).float().cpu().numpy()
    return out


def field_values_and_grads(field, points, chunk: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """f and grad f at unit-box points: (N, 3) -> ((N,) float64, (N, 3) float64).

    A Siren's gradient is its exact one (``Siren.grad_evaluator``); a plain callable's comes from
    central differences.
    """
    points = np.asarray(points)
    if isinstance(field, ScanField):
        return field.blend(points, *field_values_and_grads(field.model, points, chunk))
    if not isinstance(field, Siren):
        from .synthetic import gradient

        p = points.astype(np.float64)
        values = lambda q: np.asarray(field(q), dtype=np.float64).reshape(len(q))  # noqa: E731
        return values(p), gradient(values, p, eps=1e-4)
    device = next(field.parameters()).device
    fg = field.grad_evaluator()
    f_out = np.empty(len(points), dtype=np.float64)
    g_out = np.empty((len(points), 3), dtype=np.float64)
    with torch.inference_mode():
        for i in range(0, len(points), chunk):
            x = torch.as_tensor(points[i:i + chunk], dtype=torch.float32, device=device)
            f, g = fg(x)
            f_out[i:i + chunk] = f.double().cpu().numpy()
            g_out[i:i + chunk] = g.double().cpu().numpy()
    return f_out, g_out


def grid_values(field, grid: Grid, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """f on every sample of ``grid``, float32 indexed [ix, iy, iz], evaluated one x-plane at a time."""
    ax, ay, az = grid.axes()
    vol = np.empty(grid.shape, dtype=np.float32)
    yy, zz = np.meshgrid(ay, az, indexing="ij")
    plane = np.stack([np.zeros_like(yy), yy, zz], axis=-1).reshape(-1, 3)
    for ix in range(grid.shape[0]):
        plane[:, 0] = ax[ix]
        vol[ix] = field_values(field, plane, chunk).reshape(grid.shape[1], grid.shape[2])
    return vol
