"""Reading scans: point clouds and meshes in the formats scanners and tools write.

Every loader returns a :class:`Scan` of finite points with unit normals, or raises
:class:`~siren3d.errors.Siren3dError` naming the file and the problem. Files are never trusted:
PLY, PCD and text are parsed here with explicit checks (a lying header or a truncated body is an
error, not a crash), NumPy files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import LoadConfig
from .errors import Siren3dError
from .files import atomic_output

log = logging.getLogger(__name__)

#: Fewest points a scan may have: normal estimation and a meaningful fit need a neighbourhood.
MIN_POINTS = 16
#: Largest coordinate magnitude accepted; beyond it the file is corrupt, not a scan.
MAX_COORDINATE = 1e30

POINT_SUFFIXES = (".ply", ".xyz", ".xyzn", ".pts", ".txt", ".pcd", ".npy", ".npz")
MESH_SUFFIXES = (".obj", ".off", ".stl")
SUPPORTED = POINT_SUFFIXES + MESH_SUFFIXES


@dataclass
class Scan:
    """A scan ready for fitting.

    points: (N, 3) float64, the scan's own coordinates and units.
    normals: (N, 3) float32, unit length, pointing out of the object.
    colors: (N, 3) or (N, 4) uint8 RGB(A) per point, or None.
    """

    points: np.ndarray
    normals: np.ndarray
    path: str = ""
    normals_estimated: bool = False
    from_mesh: bool = False
    notes: list[str] = field(default_factory=list)
    colors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)


def _note(notes: list[str], message: str) -> None:
    notes.append(message)
    log.warning(message)


# --------------------------------------------------------------------------------------------
# PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_MAX_HEADER = 1 << 20


@dataclass
class _PlyElement:
    name: str
    count: int
    props: list  # (name, dtype) or (name, count_dtype, item_dtype) for lists


def _parse_ply_header(data: bytes, path: str) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise Siren3dError("not a PLY file (it does not start with 'ply')", path)
    end = data.find(b"end_header", 0, _MAX_HEADER)
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
    arr = _parse_numeric_rows(rows, path, what=f"'{el.name}' element", widths=(width,))
    return {p[0]: arr[:, i] for i, p in enumerate(el.props)}, None, stop


def _parse_numeric_rows(rows: list[str], path: str, what: str, widths: tuple[int, ...] | None = None,
                        first_line: int = 1) -> np.ndarray:
    """Parse whitespace/comma separated numeric rows of one width into (N, W) float64."""
    if rows and not any("," in r for r in rows):
        # Well-formed rows (nearly always): numpy's C reader, without a Python string per value.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = np.loadtxt(rows, dtype=np.float64, ndmin=2, comments=None)
            if arr.shape[0] == len(rows) and arr.shape[1] > 0 and (widths is None or arr.shape[1] in widths):
                return arr
        except ValueError:
            pass  # the careful pass below finds the line and says what is wrong
    split = [r.replace(",", " ").split() for r in rows]
    lengths = np.fromiter((len(s) for s in split), dtype=np.int64, count=len(split))
    if len(split) == 0:
        raise Siren3dError(f"no data rows in {what}", path)
    width = int(lengths[0]) if widths is None else None
    expect = (width,) if widths is None else widths
    bad = np.flatnonzero(~np.isin(lengths, expect))
    if widths is not None and len(bad) == 0 and len(set(lengths.tolist())) > 1:
        bad = np.flatnonzero(lengths != lengths[0])
    if len(bad):
        i = int(bad[0])
        raise Siren3dError(
            f"rows of unequal width in {what}: line {first_line + i} has {lengths[i]} values, "
            f"expected {' or '.join(map(str, expect))}", path)
    width = int(lengths[0])
    if width == 0:
        raise Siren3dError(f"line {first_line} of {what} holds no values", path)
    try:
        flat = np.array([t for s in split for t in s], dtype=np.float64)
    except ValueError:
        values = []
        for i, s in enumerate(split):
            for t in s:
                try:
                    values.append(float(t))
                except ValueError:
                    raise Siren3dError(
                        f"non-numeric value '{t[:20]}' on line {first_line + i} of {what}", path) from None
        flat = np.array(values, dtype=np.float64)  # every token is a number Python reads
    return flat.reshape(-1, width)


def _declared(elements: list[_PlyElement]) -> str:
    return ", ".join(f"{el.count} {el.name}" for el in elements) or "no elements"


def _load_ply(path: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
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
    return points, normals, faces


# --------------------------------------------------------------------------------------------
# Text (XYZ / XYZN / PTS / TXT)


def _fast_text(path: str) -> np.ndarray | None:
    """Well-formed text parsed by numpy's C reader: memory ~ the result, about 10x faster.

    Returns None for anything it does not read cleanly; the careful parser then reads the file
    again and says exactly what is wrong with it.
    """
    skip, comma = 0, False
    try:
        with open(path, encoding="utf-8-sig") as f:
            for i, line in enumerate(f):
                s = line.strip()
                if not s or s.startswith(("#", "//")):
                    if i > 10_000:
                        return None
                    continue
                if re.fullmatch(r"[0-9]+", s) and skip == 0:  # a Leica .pts count line
                    skip = i + 1
                    continue
                comma = "," in s
                break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": handled below
            arr = np.loadtxt(path, dtype=np.float64, comments=("#", "//"), delimiter="," if comma else None,
                             skiprows=skip, ndmin=2, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, IndexError):
        return None
    return arr if arr.ndim == 2 and arr.size and arr.shape[1] > 0 else None


def _careful_text(path: str) -> np.ndarray:
    """Line by line, with the line number and token of the first problem."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Siren3dError("is not a text point file (it holds binary bytes)", path) from None
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s.replace(",", " ").strip() or s.startswith("#") or s.startswith("//"):
            continue  # blank, separators only, or a comment
        rows.append((i, s))
    if not rows:
        raise Siren3dError("holds no points", path)
    # A Leica .pts file starts with the point count alone on its line.
    if re.fullmatch(r"\d+", rows[0][1]) and len(rows) > 1:
        rows = rows[1:]
    lines = [s for _, s in rows]
    return _parse_numeric_rows(lines, path, what="the point list", widths=None, first_line=rows[0][0])


def _load_text(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    arr = _fast_text(path)
    if arr is None:
        arr = _careful_text(path)
    w = arr.shape[1]
    if w == 3:
        return arr, None
    if w == 6:
        return arr[:, :3], arr[:, 3:6]
    if w in (4, 7):  # x y z intensity [r g b]
        return arr[:, :3], None
    if w == 9:  # x y z nx ny nz r g b  or  x y z r g b nx ny nz: take the unit-length triple
        a, b = arr[:, 3:6], arr[:, 6:9]
        na, nb = np.abs(np.linalg.norm(a, axis=1) - 1).mean(), np.abs(np.linalg.norm(b, axis=1) - 1).mean()
        return arr[:, :3], a if na <= nb else b
    raise Siren3dError(f"rows have {w} values; expected 3 (x y z) or 6 (x y z nx ny nz)", path)


# --------------------------------------------------------------------------------------------
# PCD (Point Cloud Library)

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
              ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def _load_pcd(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    data = Path(path).read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0 or pos > _MAX_HEADER:
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
        types = header["TYPE"]
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
        arr = _parse_numeric_rows(lines[:npts], path, what="PCD data", widths=(sum(counts),))
        names = [f if c == 1 else f"{f}_{k}" for f, c in zip(fields, counts) for k in range(c)]
        cols = {n: arr[:, i] for i, n in enumerate(names)}
    elif mode == "binary":
        try:
            dt = np.dtype([(f, "<" + _PCD_TYPES[(t.upper(), s)], (c,)) for f, s, t, c in zip(fields, sizes, types, counts)])
        except (KeyError, ValueError, TypeError):
            raise Siren3dError("PCD header has an unsupported field type or duplicate field names", path) from None
        if dt.itemsize * npts > len(data) - pos:
            raise Siren3dError(
                f"PCD file is truncated: header declares {npts} points, the file holds {(len(data) - pos) // dt.itemsize}", path)
        arr = np.frombuffer(data, dtype=dt, count=npts, offset=pos)
        cols = {f: arr[f][:, 0].astype(np.float64) for f in fields}
    else:
        raise Siren3dError(f"PCD data mode '{mode}' is not supported; save it as ascii or binary", path)
    if not all(c in cols for c in "xyz"):
        raise Siren3dError("PCD file has no x y z fields", path)
    points = np.stack([cols[c] for c in "xyz"], axis=1)
    normals = None
    if all(c in cols for c in ("normal_x", "normal_y", "normal_z")):
        normals = np.stack([cols[c] for c in ("normal_x", "normal_y", "normal_z")], axis=1)
    return points, normals


# --------------------------------------------------------------------------------------------
# NumPy


def _load_numpy(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, "rb") as fh:  # our own handle: closed even when numpy gives up half-way
        return _read_numpy(fh, path)


def _read_numpy(fh, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        obj = np.load(fh, allow_pickle=False)
    except ValueError as e:
        raise Siren3dError(f"cannot read as NumPy without unpickling ({e}); save plain arrays", path) from None
    except (OSError, EOFError, Exception) as e:  # zipfile.BadZipFile, truncated headers, ...
        raise Siren3dError(f"cannot read as a NumPy file: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}", path) from None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.keys())
            key = next((k for k in ("points", "xyz", "positions", "vertices", "coords") if k in keys), None)
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None:
                raise Siren3dError(f"NPZ has no 'points' array (it holds: {', '.join(keys) or 'nothing'})", path)
            try:
                arr = np.asarray(obj[key])
                nkey = next((k for k in ("normals", "normal", "nrm") if k in keys), None)
                normals = None if nkey is None else np.asarray(obj[nkey], dtype=np.float64)
            except Exception as e:
                first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
                raise Siren3dError(f"cannot read NPZ array: {first}", path) from None
    else:
        arr, normals = np.asarray(obj), None
    if arr.dtype.kind not in "fiu":
        raise Siren3dError(f"array has non-numeric dtype {arr.dtype}", path)
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise Siren3dError(f"array has shape {arr.shape}; expected (N, 3) points or (N, 6) points and normals", path)
    arr = arr.astype(np.float64)
    if arr.shape[1] == 6:
        arr, normals = arr[:, :3], arr[:, 3:]
    if normals is not None and normals.shape != arr.shape:
        raise Siren3dError(f"normals have shape {normals.shape}, points {arr.shape}", path)
    return arr, normals


# --------------------------------------------------------------------------------------------
# Meshes


def _load_mesh_file(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (vertices, faces) for OBJ / OFF / STL via trimesh, without processing."""
    import trimesh

    try:
        loaded = trimesh.load(path, force="mesh", process=False)
        if len(getattr(loaded, "faces", ())) == 0 and len(getattr(loaded, "vertices", ())) == 0:
            # A vertex-only OBJ/PLY: force="mesh" drops its vertices, the plain load keeps them.
            loaded = trimesh.load(path, process=False)
    except Exception as e:  # trimesh raises many types on bad input
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise Siren3dError(f"cannot read as a mesh: {msg}", path) from None
    try:
        vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64)
        faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise Siren3dError("cannot read as a mesh: vertices or faces are not numeric", path) from None
    if len(vertices) == 0:
        vertices = vertices.reshape(0, 3)
    if len(faces) == 0:
        faces = faces.reshape(0, 3)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise Siren3dError(f"cannot read as a mesh: vertices {vertices.shape}, faces {faces.shape}", path)
    return vertices, (faces if len(faces) else None)


def sample_mesh_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0,
                        path: str = "") -> tuple[np.ndarray, np.ndarray, int]:
    """Area-weighted samples on a triangle mesh, with the face normals.

    Returns (points (count, 3) float64, normals (count, 3) float64, number of degenerate faces).
    """
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise Siren3dError(f"mesh faces index vertices out of range (0..{len(vertices) - 1})", path)
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    good = np.isfinite(area2) & (area2 > 1e-12 * max(float(np.nanmax(area2, initial=0.0)), 1e-300))
    degenerate = int((~good).sum())
    if not good.any():
        raise Siren3dError(f"all {len(faces)} mesh faces are degenerate (zero area)", path)
    tri, cross, area2 = tri[good], cross[good], area2[good]
    rng = np.random.default_rng(seed)
    weight = area2 / area2.max()  # scaled first: the sum of huge areas must not overflow
    idx = rng.choice(len(tri), size=count, p=weight / weight.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[idx]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[idx] / area2[idx, None]
    return points, normals, degenerate


# --------------------------------------------------------------------------------------------
# Normals


def estimate_normals(points: np.ndarray, k: int = 20) -> np.ndarray:
    """Unit normals by kNN PCA (Open3D), oriented consistently and outward.

    points: (N, 3) float64. Returns (N, 3) float64.
    """
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    k = int(min(k, len(points) - 1))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=k))
    try:
        pcd.orient_normals_consistent_tangent_plane(k)
    except RuntimeError:  # degenerate neighbourhoods (e.g. coplanar): fall back to a viewpoint
        pcd.orient_normals_towards_camera_location(points.mean(0) + 10 * (points.max(0) - points.min(0) + 1))
    normals = np.asarray(pcd.normals).copy()
    # Consistent is not yet outward: most normals of a closed scan point away from the centroid.
    if np.sum(np.einsum("ij,ij->i", normals, points - points.mean(0))) < 0:
        normals = -normals
    return normals


# --------------------------------------------------------------------------------------------
# The entry point


def load_scan(path: str | os.PathLike, config: LoadConfig | None = None, *, seed: int = 0, **settings) -> Scan:
    """Load a point cloud or mesh file into a :class:`Scan`; ``config`` (default LoadConfig()) with any of
    its fields overridden by keyword, e.g. ``load_scan(path, max_points=100_000)``.

    Point clouds: PLY (ascii / binary, with or without normals), XYZ / XYZN / PTS / TXT text,
    PCD (ascii / binary), NPY / NPZ. Meshes: OBJ, OFF, STL and PLY with faces, whose surface is
    sampled (area-weighted, ``mesh_samples`` points, face normals). Missing normals are estimated.
    Points with non-finite coordinates or unusable normals are dropped with a warning; scans with
    more than ``max_points`` points are subsampled (seeded).
    """
    cfg = replace(config or LoadConfig(), **settings)
    cfg.validate()
    spath = os.fspath(path)
    p = Path(spath)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise Siren3dError("no such file", spath) from None
    except PermissionError:
        raise Siren3dError("cannot be read (permission denied on its folder)", spath) from None
    except OSError as e:
        raise Siren3dError(f"cannot be read: {e.strerror or e}", spath) from None
    if stat.S_ISDIR(st.st_mode):
        raise Siren3dError("is a directory, not a scan file", spath)
    if not stat.S_ISREG(st.st_mode):
        # A FIFO would block forever, a device would never end: only plain files are read.
        raise Siren3dError("is not a regular file (a pipe, socket or device); save the scan to a file", spath)
    if not os.access(spath, os.R_OK):
        raise Siren3dError("cannot be read (permission denied)", spath)
    if st.st_size == 0:
        raise Siren3dError("is empty", spath)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED:
        raise Siren3dError(
            f"unknown scan format '{suffix or '(no extension)'}'; supported: {' '.join(SUPPORTED)}", spath)

    _check_content_matches_suffix(spath, suffix)
    # Garbage bytes read as floats (signalling NaNs, 1e38 * 1e38) are cleaned below, not warned about.
    with np.errstate(invalid="ignore", over="ignore"):
        return _load_and_clean(spath, suffix, max_points=cfg.max_points, mesh_samples=cfg.mesh_samples, seed=seed)


def _load_and_clean(spath: str, suffix: str, *, max_points: int, mesh_samples: int, seed: int) -> Scan:
    notes: list[str] = []
    faces = None
    try:
        if suffix == ".ply":
            points, normals, faces = _load_ply(spath)
        elif suffix in (".xyz", ".xyzn", ".pts", ".txt"):
            points, normals = _load_text(spath)
        elif suffix == ".pcd":
            points, normals = _load_pcd(spath)
        elif suffix in (".npy", ".npz"):
            points, normals = _load_numpy(spath)
        else:
            points, faces = _load_mesh_file(spath)
            normals = None
            if faces is None:
                _note(notes, f"{spath}: mesh has no faces; using its {len(points)} vertices as a point cloud")
    except MemoryError:
        raise Siren3dError("is too large to load into memory", spath) from None
    except OSError as e:
        raise Siren3dError(f"cannot be read: {e.strerror or e}", spath) from None

    from_mesh = faces is not None
    if from_mesh:
        finite_v = np.isfinite(points).all(1)
        if not finite_v.all():
            bad_faces = ~finite_v[faces].all(1)
            faces = faces[~bad_faces]
            _note(notes, f"{spath}: {int((~finite_v).sum())} mesh vertices are NaN/Inf; "
                         f"dropped the {int(bad_faces.sum())} faces that use them")
            if len(faces) == 0:
                raise Siren3dError("every mesh face uses a NaN/Inf vertex", spath)
        points, normals, degenerate = sample_mesh_surface(points, faces, mesh_samples, seed=seed, path=spath)
        if degenerate:
            _note(notes, f"{spath}: ignored {degenerate} degenerate (zero-area) faces of {len(faces)}")

    return _clean(points, normals, spath, notes, from_mesh=from_mesh, max_points=max_points, seed=seed)


#: Unmistakable leading bytes of formats we read, and the suffix that format must have.
_MAGIC = ((re.compile(rb"ply\r?\n"), "PLY", (".ply",)),
          (re.compile(rb"\x93NUMPY"), "NumPy .npy", (".npy",)),
          (re.compile(rb"PK\x03\x04"), "NumPy .npz (zip)", (".npz",)),
          (re.compile(rb"(#[^\n]*\n)*VERSION 0\.\d"), "PCD", (".pcd",)))


def _check_content_matches_suffix(path: str, suffix: str) -> None:
    """A file whose bytes plainly say it is another format than its name: say so, don't misparse it."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as e:
        raise Siren3dError(f"cannot be read: {e.strerror or e}", path) from None
    for pattern, name, suffixes in _MAGIC:
        if pattern.match(head) and suffix not in suffixes:
            raise Siren3dError(f"is a {name} file, but its name ends in '{suffix}'; "
                               f"rename it to '{suffixes[0]}'", path)


def _clean(points: np.ndarray, normals: np.ndarray | None, path: str, notes: list[str], *,
           from_mesh: bool, max_points: int, seed: int) -> Scan:
    n0 = len(points)
    if n0 == 0:
        raise Siren3dError("holds no points", path)
    finite = np.isfinite(points).all(1)
    if not finite.all():
        nbad = int((~finite).sum())
        if nbad == n0:
            raise Siren3dError(f"all {n0} points have NaN/Inf coordinates", path)
        _note(notes, f"{path}: dropped {nbad} of {n0} points with NaN/Inf coordinates")
        points = points[finite]
        normals = None if normals is None else normals[finite]
    if max_points and len(points) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
        _note(notes, f"{path}: {len(points):,} points; using a random subset of {max_points:,} "
                     f"(raise --max-points to keep more)")
        points = points[keep]
        normals = None if normals is None else normals[keep]

    if normals is not None:
        length = np.linalg.norm(normals, axis=1)
        usable = np.isfinite(length) & (length > 1e-8)
        if not usable.any():
            _note(notes, f"{path}: none of the normals is usable (zero or NaN); estimating normals instead")
            normals = None
        else:
            if not usable.all():
                _note(notes, f"{path}: dropped {int((~usable).sum())} points with zero-length or NaN/Inf normals")
                points, normals, length = points[usable], normals[usable], length[usable]
            if not from_mesh and np.abs(length - 1).max() > 1e-3:
                _note(notes, f"{path}: normals were not unit length; normalized them")
            normals = normals / length[:, None]

    _check_geometry(points, path, notes)

    estimated = False
    if normals is None:
        _note(notes, f"{path}: no normals in the file; estimating them from the points "
                     f"(kNN PCA, consistently oriented). Scans with normals give better results.")
        normals = estimate_normals(points)
        estimated = True

    return Scan(points=np.ascontiguousarray(points, dtype=np.float64),
                normals=np.ascontiguousarray(normals, dtype=np.float32),
                path=path, normals_estimated=estimated, from_mesh=from_mesh, notes=notes)


def _check_geometry(points: np.ndarray, path: str, notes: list[str]) -> None:
    n = len(points)
    if n < MIN_POINTS:
        raise Siren3dError(f"has only {n} usable point{'s' if n != 1 else ''}; at least {MIN_POINTS} are needed", path)
    biggest = float(np.abs(points).max())
    if biggest > MAX_COORDINATE:
        raise Siren3dError(f"coordinates reach {biggest:.3g}, implausibly large for a scan (the limit is "
                           f"{MAX_COORDINATE:.0e}): the file is corrupt or not in the format its name says", path)
    sub = points if n <= 100_000 else points[np.random.default_rng(0).choice(n, 100_000, replace=False)]
    centred = sub - sub.mean(0)
    s = np.linalg.svd(centred / max(np.abs(centred).max(), 1e-300), compute_uv=False)
    if s[0] <= 1e-9 * np.sqrt(len(sub)):
        raise Siren3dError(f"all {n} points are at the same position: there is no surface to reconstruct", path)
    if s[1] <= 1e-6 * s[0]:
        raise Siren3dError(f"all {n} points lie on one line: there is no surface to reconstruct", path)
    if s[2] <= 1e-6 * s[0]:
        _note(notes, f"{path}: all points lie in one plane; the result will be an open sheet, not a closed surface")


def save_points_ply(path: str | os.PathLike, points: np.ndarray, normals: np.ndarray | None = None) -> None:
    """Write a binary little-endian PLY point cloud (float32 x y z [nx ny nz]) atomically."""
    points = np.asarray(points, dtype=np.float32)
    cols = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        cols += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    arr = np.empty(len(points), dtype=cols)
    for i, c in enumerate("xyz"):
        arr[c] = points[:, i]
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32)
        for i, c in enumerate(("nx", "ny", "nz")):
            arr[c] = normals[:, i]
    header = "ply\nformat binary_little_endian 1.0\ncomment written by siren3d\n"
    header += f"element vertex {len(points)}\n" + "".join(f"property float {c}\n" for c, _ in cols)
    header += "end_header\n"
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(arr.tobytes())
