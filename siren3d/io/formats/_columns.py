"""Named per-point columns (PLY properties, PCD fields, NPZ keys) -> colours, intensity, sensors."""

from __future__ import annotations

import numpy as np

from ..parse import colors_to_uint8

#: Colour channel names, in the spellings tools write (PLY: red; some: diffuse_red; PCD: r).
_COLOR_NAMES = (("red", "green", "blue", "alpha"), ("diffuse_red", "diffuse_green", "diffuse_blue", "diffuse_alpha"),
                ("r", "g", "b", "a"))
_INTENSITY_NAMES = ("intensity", "scalar_intensity", "scalar_Intensity", "reflectance")
#: Per-point sensor (scanner) positions, e.g. from multi-view registrations.
_SENSOR_NAMES = (("sensor_x", "sensor_y", "sensor_z"), ("sensor_position_x", "sensor_position_y", "sensor_position_z"))


def colors_from(cols: dict) -> np.ndarray | None:
    """(N, 3|4) uint8 from red/green/blue[/alpha]-like columns, or None."""
    for names in _COLOR_NAMES:
        if all(n in cols for n in names[:3]):
            use = names if names[3] in cols else names[:3]
            return colors_to_uint8(np.stack([np.asarray(cols[n]) for n in use], axis=1))
    return None


def intensity_from(cols: dict) -> np.ndarray | None:
    name = next((n for n in _INTENSITY_NAMES if n in cols), None)
    return None if name is None else np.asarray(cols[name], dtype=np.float32)


def sensor_from(cols: dict) -> np.ndarray | None:
    """(N, 3) float64 per-point sensor positions, or None."""
    for names in _SENSOR_NAMES:
        if all(n in cols for n in names):
            return np.stack([np.asarray(cols[n], dtype=np.float64) for n in names], axis=1)
    return None
