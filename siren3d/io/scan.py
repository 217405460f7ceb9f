"""The two shapes a scan takes: as a format module reads it (:class:`RawScan`) and as fitting gets
it (:class:`Scan`), plus the seeded subsampling both the cleaner and the chunked readers use."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class ReadOptions:
    """What a format module may use to read less than the whole file (LAS/LAZ, E57): at most
    ``max_points`` points, chosen by :func:`subsample_indices` with ``seed``."""

    max_points: int
    seed: int = 0


@dataclass
class RawScan:
    """A file's content as its format module read it, before cleaning.

    points: (N, 3) float64; normals: (N, 3) or None, any length; colors: (N, 3|4) uint8 or None;
    intensity: (N,) float32 or None; sensor: None, a (3,) position or (N, 3) per-point positions;
    faces: (F, 3) int64 when the file is a mesh (then only ``points`` is used, as its vertices).
    ``total``: the point count of the file when the reader already subsampled to ``max_points``.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    intensity: np.ndarray | None = None
    sensor: np.ndarray | None = None
    faces: np.ndarray | None = None
    total: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Scan:
    """A scan ready for fitting.

    points: (N, 3) float64, the scan's own coordinates and units.
    normals: (N, 3) float32, unit length, pointing out of the object.
    colors: (N, 3) or (N, 4) uint8 (RGB or RGBA) when the file has colour, else None.
    intensity: (N,) float32, the scanner's return intensity as stored in the file, or None.
    sensor: where the scanner stood: None (unknown), a (3,) position, or (N, 3) per point.
    outliers: stray points dropped on loading (see :mod:`siren3d.io.outliers`).
    """

    points: np.ndarray
    normals: np.ndarray
    path: str = ""
    normals_estimated: bool = False
    from_mesh: bool = False
    notes: list[str] = field(default_factory=list)
    colors: np.ndarray | None = None
    intensity: np.ndarray | None = None
    sensor: np.ndarray | None = None
    outliers: int = 0

    def __len__(self) -> int:
        return len(self.points)

    def take(self, index: np.ndarray) -> "Scan":
        """A copy with the points at ``index`` (indices or a boolean mask), every per-point array
        (normals, colours, intensity, per-point sensor positions) kept aligned with them."""
        return replace(self, **take_per_point(self, index, ("points", "normals", "colors", "intensity", "sensor")))


def take_per_point(obj, index, names) -> dict:
    """{name: getattr(obj, name)[index]} for each per-point array of ``obj`` (None and a single
    (3,) sensor position are passed through unchanged)."""
    n = len(obj.points)
    out = {}
    for name in names:
        value = getattr(obj, name)
        if value is not None and value.ndim >= 1 and len(value) == n and not (name == "sensor" and value.ndim == 1):
            value = value[index]
        out[name] = value
    return out


def subsample_indices(total: int, keep: int, seed: int) -> np.ndarray:
    """Sorted indices of ``keep`` of ``total`` items, chosen uniformly without replacement (seeded).

    The one rule for every subsampling, so a reader that picks points while streaming a file keeps
    exactly the points that reading everything and subsampling afterwards would keep.
    """
    return np.sort(np.random.default_rng(seed).choice(total, keep, replace=False))


def note(notes: list[str], message: str) -> None:
    """Record a recoverable oddity (saved in fit.json) and log it as a warning."""
    notes.append(message)
    log.warning(message)
