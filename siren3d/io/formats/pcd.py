"""PCD (Point Cloud Library), ascii and binary: x y z, normals (normal_x ...), colour (the packed
``rgb`` / ``rgba`` field, or r g b), intensity, and the sensor position from the VIEWPOINT line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import Siren3dError
from ..parse import MAX_HEADER_BYTES, parse_numeric_rows
from ..registry import Format
from ..scan import RawScan, ReadOptions
from ._columns import colors_from, intensity_from, sensor_from

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
              ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
#: What PCL writes when nobody set a viewpoint: it says nothing about where the sensor was.
_DEFAULT_VIEWPOINT = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


def load_pcd(path: str, options: ReadOptions | None = None) -> RawScan:
    data = Path(path).read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0 or pos > MAX_HEADER_BYTES:
            raise Siren3dError("PCD header has no DATA line (truncated or not PCD)", path)
        try:
            line = data[pos:nl].decode("ascii").strip()
        except UnicodeDecodeError:
            raise Siren3dError("not a PCD file (header is not text)", path) from None
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = [t.upper() for t in header["TYPE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        npts = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
        mode = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError):
        raise Siren3dError("PCD header lacks FIELDS/SIZE/TYPE/POINTS or has bad values", path) from None
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise Siren3dError("PCD header FIELDS, SIZE, TYPE and COUNT have different lengths", path)
    if npts < 0:
        raise Siren3dError("PCD header declares a negative point count", path)
    if any(c < 1 for c in counts) or any(s < 1 for s in sizes):
        raise Siren3dError("PCD header has a SIZE or COUNT below 1", path)
    if not all(c in fields for c in "xyz"):
        raise Siren3dError("PCD file has no x y z fields", path)
    if mode == "ascii":
        lines = [ln for ln in data[pos:].decode("ascii", errors="replace").splitlines() if ln.strip()]
        if len(lines) < npts:
            raise Siren3dError(f"PCD file is truncated: header declares {npts} points, the file holds {len(lines)}", path)
        arr = parse_numeric_rows(lines[:npts], path, what="PCD data", widths=(sum(counts),))
        starts = np.cumsum([0] + counts[:-1])
        cols = {f: arr[:, s] for f, s in zip(fields, starts)}  # the first value of multi-count fields
    elif mode == "binary":
        try:
            dt = np.dtype([(f, "<" + _PCD_TYPES[(t, s)], (c,)) for f, s, t, c in zip(fields, sizes, types, counts)])
        except (KeyError, ValueError, TypeError):
            raise Siren3dError("PCD header has an unsupported field type or duplicate field names", path) from None
        if dt.itemsize * npts > len(data) - pos:
            raise Siren3dError(
                f"PCD file is truncated: header declares {npts} points, the file holds {(len(data) - pos) // dt.itemsize}", path)
        arr = np.frombuffer(data, dtype=dt, count=npts, offset=pos)
        cols = {f: arr[f][:, 0] for f in fields}
    else:
        raise Siren3dError(f"PCD data mode '{mode}' is not supported; save it as ascii or binary", path)
    points = np.stack([cols[c] for c in "xyz"], axis=1).astype(np.float64)
    normals = None
    if all(c in cols for c in ("normal_x", "normal_y", "normal_z")):
        normals = np.stack([cols[c] for c in ("normal_x", "normal_y", "normal_z")], axis=1).astype(np.float64)
    kinds = dict(zip(fields, types))
    colors = _packed_colors(cols, kinds, ascii=mode == "ascii")
    notes: list[str] = []
    sensor = sensor_from(cols)
    return RawScan(points, normals, colors=colors if colors is not None else colors_from(cols),
                   intensity=intensity_from(cols),
                   sensor=sensor if sensor is not None else _viewpoint(header, notes, path), notes=notes)


def _packed_colors(cols: dict, kinds: dict, ascii: bool) -> np.ndarray | None:
    """PCL's packed colour: one 32-bit field 'rgb' (0x00RRGGBB or 0xFFRRGGBB stored in a float's
    bits) or 'rgba' (0xAARRGGBB), as (N, 3) or (N, 4) uint8."""
    name = next((n for n in ("rgba", "rgb") if n in cols), None)
    if name is None:
        return None
    values = cols[name]
    if values.dtype.kind == "f" and values.dtype.itemsize == 4:
        packed = np.ascontiguousarray(values).view(np.uint32)
    elif ascii:
        # PCL writes the packed value as an unsigned integer, others the float whose bits it is.
        finite = values[np.isfinite(values)]
        integral = len(finite) == len(values) and np.all(finite == np.round(finite)) and np.all(finite >= 0) \
            and np.all(finite < 2 ** 32) and finite.max(initial=0) >= 1
        if integral or kinds.get(name) in ("U", "I"):
            packed = np.nan_to_num(values).astype(np.uint64).astype(np.uint32)
        else:
            packed = values.astype(np.float32).view(np.uint32)
    else:
        packed = values.astype(np.uint32)
    channels = [(packed >> 16) & 255, (packed >> 8) & 255, packed & 255]
    if name == "rgba":
        channels.append(packed >> 24)
    return np.stack(channels, axis=1).astype(np.uint8)


def _viewpoint(header: dict, notes: list[str], path: str) -> np.ndarray | None:
    """The VIEWPOINT translation (the sensor position, in the points' frame), unless it is PCL's
    default, which says nothing about where the sensor was, or unreadable (then noted)."""
    words = header.get("VIEWPOINT")
    if not words:
        return None
    try:
        vp = tuple(float(v) for v in words)
    except ValueError:
        vp = ()
    if len(vp) != 7 or not np.all(np.isfinite(vp)):
        notes.append(f"{path}: PCD VIEWPOINT line is not 7 finite numbers ('{' '.join(words)[:60]}'); ignored it")
        return None
    if vp == _DEFAULT_VIEWPOINT:
        return None
    return np.array(vp[:3], dtype=np.float64)


FORMATS = (Format("PCD", (".pcd",), load_pcd, magic=re.compile(rb"(#[^\n]*\n)*VERSION 0\.\d")),)
