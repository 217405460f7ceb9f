"""PLY (Stanford polygon file): ascii and binary of either endianness, point clouds and meshes.

Parsed here with explicit checks, since a header that lies about its counts or a truncated body
must be an error, not a crash: vertices with x y z, optional normals (nx ny nz), colour
(red green blue [alpha], uchar, ushort or float), intensity and per-point sensor positions
(sensor_x sensor_y sensor_z); faces (any polygon, fan-triangulated) make the file a mesh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import Siren3dError
from ..parse import MAX_HEADER_BYTES, parse_numeric_rows
from ..registry import Format
from ..scan import RawScan, ReadOptions
from ._columns import colors_from, intensity_from, sensor_from

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}

_GEOMETRY = {"x", "y", "z", "nx", "ny", "nz"}


@dataclass
class _PlyElement:
    name: str
    count: int
    props: list  # (name, dtype) or (name, count_dtype, item_dtype) for lists


def _parse_ply_header(data: bytes, path: str) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise Siren3dError("not a PLY file (it does not start with 'ply')", path)
    end = data.find(b"end_header", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise Siren3dError("PLY header has no 'end_header' line (file truncated or not PLY)", path)
    nl = data.find(b"\n", end)
    body_start = len(data) if nl < 0 else nl + 1
    try:
        header = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise Siren3dError("PLY header is not ASCII text", path) from None
    fmt = None
    elements: list[_PlyElement] = []
    for lineno, raw in enumerate(header.splitlines()[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
            if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise Siren3dError(f"unknown PLY format '{fmt}'", path)
        elif words[0] == "element" and len(words) == 3:
            try:
                count = int(words[2])
            except ValueError:
                raise Siren3dError(f"PLY header line {lineno}: element count '{words[2]}' is not an integer", path) from None
            if count < 0:
                raise Siren3dError(f"PLY header line {lineno}: negative element count", path)
            elements.append(_PlyElement(words[1], count, []))
        elif words[0] == "property" and elements:
            if len(words) == 5 and words[1] == "list":
                if words[2] not in _PLY_TYPES or words[3] not in _PLY_TYPES:
                    raise Siren3dError(f"PLY header line {lineno}: unknown property type in '{raw.strip()}'", path)
                if _PLY_TYPES[words[2]][0] == "f" or _PLY_TYPES[words[3]][0] == "f":
                    raise Siren3dError(f"PLY header line {lineno}: list counts and indices must be integers "
                                       f"in '{raw.strip()}'", path)
                elements[-1].props.append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1].props.append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise Siren3dError(f"PLY header line {lineno}: cannot read '{raw.strip()}'", path)
        else:
            raise Siren3dError(f"PLY header line {lineno}: cannot read '{raw.strip()}'", path)
    if fmt is None:
        raise Siren3dError("PLY header has no 'format' line", path)
    return fmt, elements, body_start


def _read_ply_binary(data: bytes, pos: int, el: _PlyElement, order: str, path: str):
    """Return (columns dict, faces or None, new position)."""
    scalar = [p for p in el.props if len(p) == 2]
    lists = [p for p in el.props if len(p) == 3]
    avail = len(data) - pos
    if el.count == 0 or not el.props:  # nothing stored for it
        return {}, None, pos
    if not lists:
        dt = np.dtype([(f"p{i}", order + p[1]) for i, p in enumerate(el.props)])
        need = dt.itemsize * el.count
        if need > avail:
            have = avail // max(dt.itemsize, 1)
            raise Siren3dError(
                f"PLY file is truncated: header declares {el.count} '{el.name}' elements, "
                f"the file holds only {have}", path)
        arr = np.frombuffer(data, dtype=dt, count=el.count, offset=pos)
        cols = {p[0]: arr[f"p{i}"] for i, p in enumerate(el.props)}
        return cols, None, pos + need
    if len(lists) != 1 or el.props[-1] is not lists[0] or scalar:
        # Uncommon layouts (several lists, or scalars around a list): only skip them if not faces.
        if el.name == "face":
            raise Siren3dError("PLY face element has an unsupported property layout", path)
    name, cdt, idt = lists[0]
    cdt, idt = np.dtype(order + cdt), np.dtype(order + idt)
    # Fast path: every face is a triangle (nearly always true). Check, else walk row by row.
    tri = np.dtype([("n", cdt), ("v", idt, (3,))])
    if tri.itemsize * el.count <= avail and el.count > 0:
        arr = np.frombuffer(data, dtype=tri, count=el.count, offset=pos)
        if np.all(arr["n"] == 3):
            return {}, arr["v"].astype(np.int64), pos + tri.itemsize * el.count
    faces = []
    for _ in range(el.count):
        if pos + cdt.itemsize > len(data):
            raise Siren3dError(f"PLY file is truncated inside the '{el.name}' element", path)
        n = int(np.frombuffer(data, dtype=cdt, count=1, offset=pos)[0])
        pos += cdt.itemsize
        if n < 0 or pos + n * idt.itemsize > len(data):
            raise Siren3dError(f"PLY file is truncated or corrupt inside the '{el.name}' element", path)
        idx = np.frombuffer(data, dtype=idt, count=n, offset=pos).astype(np.int64)
        pos += n * idt.itemsize
        faces.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, n - 1))  # fan-triangulate
    return {}, np.asarray(faces, dtype=np.int64).reshape(-1, 3), pos


def _read_ply_ascii(lines: list[str], start: int, el: _PlyElement, path: str):
    stop = start + el.count
    if stop > len(lines):
        raise Siren3dError(
            f"PLY file is truncated: header declares {el.count} '{el.name}' elements, "
            f"the file holds only {max(len(lines) - start, 0)}", path)
    if el.count == 0 or not el.props:
        return {}, None, start
    rows = lines[start:stop]
    if any(len(p) == 3 for p in el.props):
        faces = []
        for i, row in enumerate(rows):
            try:
                vals = [int(float(t)) for t in row.split()]
            except (ValueError, OverflowError):
                raise Siren3dError(f"non-numeric value in '{el.name}' row {i + 1}: '{row.strip()[:40]}'", path) from None
            if not vals or vals[0] != len(vals) - 1:
                if el.name == "face":
                    raise Siren3dError(f"malformed face row {i + 1}: '{row.strip()[:40]}'", path)
                continue
            v = vals[1:]
            faces.extend((v[0], v[k], v[k + 1]) for k in range(1, len(v) - 1))
        return {}, np.asarray(faces, dtype=np.int64).reshape(-1, 3), stop
    width = len(el.props)
    arr = parse_numeric_rows(rows, path, what=f"'{el.name}' element", widths=(width,))
    # Integer attributes keep their declared type (a uchar colour of 0 or 1 is not a fraction);
    # coordinates stay float64, so a 'nan' in them is cleaned later rather than cast to garbage.
    return {p[0]: arr[:, i].astype(p[1]) if p[1][0] in "iu" and p[0] not in _GEOMETRY else arr[:, i]
            for i, p in enumerate(el.props)}, None, stop


def _declared(elements: list[_PlyElement]) -> str:
    return ", ".join(f"{el.count} {el.name}" for el in elements) or "no elements"


def load_ply(path: str, options: ReadOptions | None = None) -> RawScan:
    """Vertices with x y z [nx ny nz] [red green blue [alpha]] [intensity] [sensor_x ...], and faces if any."""
    data = Path(path).read_bytes()
    fmt, elements, pos = _parse_ply_header(data, path)
    vertex_cols = faces = None
    if fmt == "ascii":
        try:
            lines = [ln for ln in data[pos:].decode("ascii").splitlines() if ln.strip()]
        except UnicodeDecodeError:
            raise Siren3dError("PLY body declared ascii holds non-text bytes", path) from None
        at = 0
        for el in elements:
            cols, f, at = _read_ply_ascii(lines, at, el, path)
            if el.name == "vertex":
                vertex_cols = cols
            elif el.name == "face":
                faces = f
        if at < len(lines):
            raise Siren3dError(
                f"PLY file holds {len(lines) - at} more data lines than its header declares "
                f"({_declared(elements)}): the header's counts are wrong or the file is corrupt", path)
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        for el in elements:
            cols, f, pos = _read_ply_binary(data, pos, el, order, path)
            if el.name == "vertex":
                vertex_cols = cols
            elif el.name == "face":
                faces = f
        # A stray newline or padding is harmless; a whole vertex record or more means the header lies.
        record = sum(np.dtype(p[1]).itemsize for el in elements if el.name == "vertex"
                     for p in el.props if len(p) == 2)
        if len(data) - pos >= max(record, 4):
            raise Siren3dError(
                f"PLY file holds {len(data) - pos} bytes more than its header declares "
                f"({_declared(elements)}): the header's counts are wrong or the file is corrupt", path)
    if vertex_cols is None:
        raise Siren3dError("PLY file has no 'vertex' element", path)
    missing = [c for c in "xyz" if c not in vertex_cols]
    if missing:
        raise Siren3dError(f"PLY vertices have no '{missing[0]}' property", path)
    points = np.stack([vertex_cols[c] for c in "xyz"], axis=1).astype(np.float64)
    normals = None
    if all(c in vertex_cols for c in ("nx", "ny", "nz")):
        normals = np.stack([vertex_cols[c] for c in ("nx", "ny", "nz")], axis=1).astype(np.float64)
    if faces is not None and len(faces) == 0:
        faces = None
    return RawScan(points, normals, colors=colors_from(vertex_cols), intensity=intensity_from(vertex_cols),
                   sensor=sensor_from(vertex_cols), faces=faces)


FORMATS = (Format("PLY", (".ply",), load_ply, magic=re.compile(rb"ply\r?\n")),)
