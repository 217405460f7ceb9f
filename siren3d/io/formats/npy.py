"""NumPy files, never unpickled: ``.npy`` (N, 3) points or (N, 6) points and normals; ``.npz`` with
``points`` (or xyz, positions, vertices, coords), optional ``normals``, ``colors`` (uint8 0-255 or
float 0-1), ``intensity`` and ``sensor_position`` (a (3,) position or one per point)."""

from __future__ import annotations

import re

import numpy as np

from ...errors import Siren3dError
from ..parse import colors_to_uint8, first_line
from ..registry import Format
from ..scan import RawScan, ReadOptions

_POINT_KEYS = ("points", "xyz", "positions", "vertices", "coords")
_NORMAL_KEYS = ("normals", "normal", "nrm")
_COLOR_KEYS = ("colors", "colours", "rgb", "rgba")
_SENSOR_KEYS = ("sensor_position", "sensor_positions", "sensor", "viewpoint")


def load_numpy(path: str, options: ReadOptions | None = None) -> RawScan:
    with open(path, "rb") as fh:  # our own handle: closed even when numpy gives up half-way
        return _read_numpy(fh, path)


def _read_numpy(fh, path: str) -> RawScan:
    try:
        obj = np.load(fh, allow_pickle=False)
    except ValueError as e:
        raise Siren3dError(f"cannot read as NumPy without unpickling ({e}); save plain arrays", path) from None
    except (OSError, EOFError, Exception) as e:  # zipfile.BadZipFile, truncated headers, ...
        raise Siren3dError(f"cannot read as a NumPy file: {first_line(e)}", path) from None
    extra: dict[str, np.ndarray | None] = {"colors": None, "intensity": None, "sensor": None}
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.keys())
            key = next((k for k in _POINT_KEYS if k in keys), None)
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None:
                raise Siren3dError(f"NPZ has no 'points' array (it holds: {', '.join(keys) or 'nothing'})", path)
            try:
                arr = np.asarray(obj[key])
                nkey = next((k for k in _NORMAL_KEYS if k in keys), None)
                normals = None if nkey is None else np.asarray(obj[nkey], dtype=np.float64)
                for name, choices in (("colors", _COLOR_KEYS), ("intensity", ("intensity",)), ("sensor", _SENSOR_KEYS)):
                    k = next((k for k in choices if k in keys), None)
                    extra[name] = None if k is None else np.asarray(obj[k])
            except Exception as e:
                raise Siren3dError(f"cannot read NPZ array: {first_line(e)}", path) from None
    else:
        arr, normals = np.asarray(obj), None
    if arr.dtype.kind not in "fiu":
        raise Siren3dError(f"array has non-numeric dtype {arr.dtype}", path)
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise Siren3dError(f"array has shape {arr.shape}; expected (N, 3) points or (N, 6) points and normals", path)
    arr = arr.astype(np.float64)
    if arr.shape[1] == 6:
        arr, normals = arr[:, :3], arr[:, 3:]
    n = len(arr)
    if normals is not None and normals.shape != arr.shape:
        raise Siren3dError(f"normals have shape {normals.shape}, points {arr.shape}", path)
    colors, intensity, sensor = extra["colors"], extra["intensity"], extra["sensor"]
    for name, value, shapes in (("colors", colors, ((n, 3), (n, 4))), ("intensity", intensity, ((n,),)),
                                ("sensor_position", sensor, ((3,), (n, 3)))):
        if value is not None and (value.shape not in shapes or value.dtype.kind not in "fiub"):
            raise Siren3dError(f"'{name}' has shape {value.shape} and dtype {value.dtype}; expected "
                               f"{' or '.join(str(s) for s in shapes)}, numeric", path)
    return RawScan(arr, normals, colors=None if colors is None else colors_to_uint8(colors),
                   intensity=None if intensity is None else intensity.astype(np.float32),
                   sensor=None if sensor is None else sensor.astype(np.float64))


FORMATS = (Format("NumPy .npy", (".npy",), load_numpy, magic=re.compile(rb"\x93NUMPY")),
           Format("NumPy .npz (zip)", (".npz",), load_numpy, magic=re.compile(rb"PK\x03\x04")))
