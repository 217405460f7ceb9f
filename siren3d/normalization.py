"""The similarity transform between a scan's own frame and the network's unit box.

The network sees coordinates in [-1, 1]^3; the scan keeps its own units. The transform is stored
in every checkpoint so meshes, slices and metrics come back in the scan's coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .config import DEFAULT_MARGIN



@dataclass(frozen=True)
class Normalization:
    """x_unit = (x_scan - center) / scale; a uniform scale keeps angles and normals unchanged."""

    center: tuple[float, float, float]
    scale: float

    @classmethod
    def fit(cls, points: np.ndarray, margin: float = DEFAULT_MARGIN) -> "Normalization":
        """Centre the bounding box; the longest half-extent maps to ``1 - margin``.

        points: (N, 3) in scan units (any float dtype; computed in float64).
        """
        p = np.asarray(points, dtype=np.float64)
        lo, hi = p.min(0), p.max(0)
        half = float((hi - lo).max()) / 2
        if not half > 0:
            raise ValueError("points have zero extent")
        return cls(center=tuple(float(c) for c in (lo + hi) / 2), scale=half / (1.0 - margin))

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) scan coordinates -> (N, 3) float32 unit-box coordinates."""
        return ((np.asarray(points, dtype=np.float64) - np.asarray(self.center)) / self.scale).astype(np.float32)

    def to_scan(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) unit-box coordinates -> (N, 3) float64 scan coordinates."""
        return np.asarray(points, dtype=np.float64) * self.scale + np.asarray(self.center)

    def distance_to_scan(self, d):
        """Signed distances in unit-box units -> scan units."""
        return d * self.scale

    def distance_to_unit(self, d):
        """Signed distances (an iso level, an offset) in scan units -> unit-box units."""
        return d / self.scale

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        center = tuple(float(c) for c in d["center"])
        scale = float(d["scale"])
        if len(center) != 3 or not np.all(np.isfinite(center)) or not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"invalid normalization {d!r}")
        return cls(center=center, scale=scale)
