"""E57 (ASTM E2807, terrestrial laser scanners), read with pye57's libE57 bindings.

Every scan of the file is read, cartesian or spherical, in chunks of :data:`CHUNK` points (the
points kept from a file larger than ``max_points`` are chosen before reading, by the same seeded
rule as every other subsampling). Points flagged invalid are skipped; each scan's pose moves its
points into the file's frame, and where the scanner stood is known, per point, when the scan is
spherical (its origin is the scanner) or has a pose that is not the identity. Colour is scaled from
the file's declared limits to 8 bits; intensity is kept as stored.
"""

from __future__ import annotations

import re

import numpy as np

from ...errors import Siren3dError
from ..parse import colors_to_uint8, first_line, reader_errors
from ..registry import Format
from ..scan import RawScan, ReadOptions, subsample_indices
from ._optional import require

#: Points per chunk read.
CHUNK = 500_000
_CARTESIAN = ("cartesianX", "cartesianY", "cartesianZ")
_SPHERICAL = ("sphericalRange", "sphericalAzimuth", "sphericalElevation")
_COLOR = ("colorRed", "colorGreen", "colorBlue")


class _ScanInfo:
    """What is needed to read one data3D scan: its fields, pose and limits."""

    def __init__(self, lib, node):
        from pye57.utils import get_fields, get_node

        self.points = get_node(node, "points")
        self.count = int(self.points.childCount())
        proto = lib.StructureNode(self.points.prototype())
        self.fields = set(get_fields(proto))
        if set(_CARTESIAN) <= self.fields:
            self.coords, self.spherical = _CARTESIAN, False
        elif set(_SPHERICAL) <= self.fields:
            self.coords, self.spherical = _SPHERICAL, True
        else:
            self.coords = None
        self.invalid = next((f for f in ("cartesianInvalidState", "sphericalInvalidState") if f in self.fields
                             and f.startswith("spherical" if self.spherical else "cartesian")), None)
        self.has_color = set(_COLOR) <= self.fields
        self.has_intensity = "intensity" in self.fields
        self.rotation, self.translation = np.eye(3), np.zeros(3)
        posed = False
        if node.isDefined("pose"):
            pose = get_node(node, "pose")
            if pose.isDefined("rotation"):
                q = get_node(pose, "rotation")
                self.rotation = _rotation_matrix(*(get_node(q, c).value() for c in "wxyz"))
            if pose.isDefined("translation"):
                t = get_node(pose, "translation")
                self.translation = np.array([get_node(t, c).value() for c in "xyz"], dtype=np.float64)
            posed = not (np.allclose(self.rotation, np.eye(3)) and not self.translation.any())
        # A spherical scan's origin is the scanner; a cartesian one's only when a real pose says where it is.
        self.sensor_known = self.spherical or posed
        self.color_limits = _limits(lib, node, proto, "colorLimits", ("colorRedMinimum", "colorRedMaximum"), "colorRed") \
            if self.has_color else None


def _limits(lib, node, proto, group: str, names: tuple[str, str], field: str):
    """The declared (min, max) of a field: the scan's limits structure, else the prototype's bounds."""
    from pye57.utils import get_node

    if node.isDefined(group):
        lim = get_node(node, group)
        if lim.isDefined(names[0]) and lim.isDefined(names[1]):
            return float(get_node(lim, names[0]).value()), float(get_node(lim, names[1]).value())
    element = get_node(proto, field)
    if isinstance(element, lib.IntegerNode):
        return float(element.minimum()), float(element.maximum())
    if isinstance(element, lib.ScaledIntegerNode):
        return float(element.scaledMinimum()), float(element.scaledMaximum())
    return None  # floats without declared limits: colors_to_uint8 reads the values


def _rotation_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    """Rotation of the unit quaternion (w, x, y, z) (normalized first)."""
    q = np.array([w, x, y, z], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm == 0:
        return np.eye(3)
    w, x, y, z = q / norm
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def load_e57(path: str, options: ReadOptions | None = None) -> RawScan:
    options = options or ReadOptions(max_points=0)
    require("pye57", "pye57", "E57", path)
    from pye57 import libe57 as lib
    from pye57.utils import get_node

    try:
        imf = lib.ImageFile(path, "r")
    except Exception as e:  # libE57 checks the signature, length, checksums and the XML section
        raise Siren3dError(f"cannot read as E57 (truncated or corrupt): {first_line(e)}", path) from None
    try:
        with reader_errors("E57", path):
            root = imf.root()
            if not root.isDefined("data3D"):
                raise Siren3dError("E57 file holds no point scans (no data3D section)", path)
            data3d = get_node(root, "data3D")
            scans = [_ScanInfo(lib, lib.StructureNode(data3d.get(i))) for i in range(data3d.childCount())]
            if not scans:
                raise Siren3dError("E57 file holds no point scans", path)
            for i, s in enumerate(scans):
                if s.coords is None:
                    raise Siren3dError(f"E57 scan {i} has neither cartesian nor spherical coordinates", path)
            return _read_scans(lib, imf, scans, path, options)
    finally:
        imf.close()


def _read_scans(lib, imf, scans: list[_ScanInfo], path: str, options: ReadOptions) -> RawScan:
    total = sum(s.count for s in scans)
    keep = None
    if options.max_points and total > options.max_points:
        keep = subsample_indices(total, options.max_points, options.seed)
    xyz, rgb, intensity, sensor = [], [], [], []
    color = all(s.has_color for s in scans)
    with_intensity = all(s.has_intensity for s in scans)
    sensors_known = all(s.sensor_known for s in scans)
    start = 0  # index of the scan's first point among all the file's points
    invalid = 0
    for s in scans:
        names = list(s.coords) + ([s.invalid] if s.invalid else []) + (list(_COLOR) if color else []) \
            + (["intensity"] if with_intensity else [])
        cap = max(1, min(CHUNK, s.count))
        buffers = {n: np.empty(cap, np.float64) for n in names}
        vec = lib.VectorSourceDestBuffer()
        for n in names:
            vec.append(lib.SourceDestBuffer(imf, n, buffers[n], cap, True, True))
        reader = s.points.reader(vec)
        at = start
        scan_rgb: list[np.ndarray] = []
        try:
            while True:
                got = reader.read()
                if got == 0:
                    break
                if keep is None:
                    rows = np.arange(got)
                else:
                    lo, hi = np.searchsorted(keep, [at, at + got])
                    rows = keep[lo:hi] - at
                at += got
                if s.invalid:
                    valid = buffers[s.invalid][rows] == 0
                    invalid += int((~valid).sum())
                    rows = rows[valid]
                c = np.stack([buffers[n][rows] for n in s.coords], axis=1)
                if s.spherical:
                    r, az, el = c[:, 0], c[:, 1], c[:, 2]
                    c = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], axis=1)
                xyz.append(c @ s.rotation.T + s.translation)
                if color:
                    scan_rgb.append(np.stack([buffers[n][rows] for n in _COLOR], axis=1))
                if with_intensity:
                    intensity.append(buffers["intensity"][rows].astype(np.float32))
                if sensors_known:
                    sensor.append(np.broadcast_to(s.translation, (len(rows), 3)))
        finally:
            reader.close()
        if at != start + s.count:
            raise Siren3dError(f"E57 scan is truncated: it declares {s.count:,} points, the file holds {at - start:,}",
                               path)
        start += s.count
        if scan_rgb:  # one scaling per scan: its declared limits, or (floats without limits) its values
            rgb.append(colors_to_uint8(np.concatenate(scan_rgb), s.color_limits))
    points = np.concatenate(xyz) if xyz else np.zeros((0, 3))
    if sensors_known and len(scans) == 1:
        where = scans[0].translation.copy()
    elif sensors_known:
        where = np.concatenate(sensor) if sensor else np.zeros((0, 3))
    else:
        where = None
    notes = [f"{path}: skipped {invalid:,} points the scanner flagged invalid"] if invalid else []
    if not sensors_known and any(s.sensor_known for s in scans):
        notes.append(f"{path}: only some of the {len(scans)} scans say where the scanner stood; not using "
                     f"scanner positions")
    return RawScan(points, colors=np.concatenate(rgb) if color and rgb else None,
                   intensity=np.concatenate(intensity) if with_intensity and intensity else None,
                   sensor=where, total=total if keep is not None else None, notes=notes)


FORMATS = (Format("E57", (".e57",), load_e57, magic=re.compile(rb"ASTM-E57")),)
