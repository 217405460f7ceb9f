"""Evaluating a fitted field at many points: values, values with gradients, and regular grids.

The one place that chunks network evaluations (meshing, the viewer's slices and surfaces, the
benchmarks all come here). A *field* is a :class:`~siren3d.model.Siren` or any callable taking
unit-box points (N, 3) to values (N,) (the analytic shapes of :mod:`siren3d.synthetic`, say).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .model import Siren

#: Points per network call when evaluating many points.
DEFAULT_CHUNK = 65536


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


def field_values(field, points, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """f at unit-box points, in chunks. points: (N, 3) -> (N,) float32."""
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
