"""LAS and LAZ (ASPRS LiDAR exchange), read with laspy; LAZ is decompressed by lazrs.

The file is streamed in chunks of :data:`CHUNK` points: when it holds more than ``max_points``, the
points to keep are chosen first (the same seeded rule as every other subsampling) and only they are
kept from each chunk, so memory follows ``max_points``, not the file. Coordinates come scaled and
offset (in the file's units); colour (16-bit in the format, though many writers store 8-bit values
there) becomes 8-bit; intensity is kept; normals are read from extra-bytes dimensions
(NormalX/NormalY/NormalZ or normal_x/... or nx/ny/nz) when a tool wrote them.

The public header is checked here before laspy sees it: a corrupt count of variable-length records
can otherwise keep it reading for minutes, and a truncated uncompressed file is named as such.
"""

from __future__ import annotations

import os
import re
import struct

import numpy as np

from ...errors import Siren3dError
from ..parse import colors_to_uint8, reader_errors
from ..registry import Format
from ..scan import RawScan, ReadOptions, subsample_indices
from ._optional import require

#: Points per chunk read (about 30-70 MB of records and coordinates).
CHUNK = 1_000_000
#: Smallest record of each point format (bytes).
_MIN_RECORD = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}
_NORMAL_DIMS = (("NormalX", "NormalY", "NormalZ"), ("normal_x", "normal_y", "normal_z"), ("nx", "ny", "nz"))
_VLR_HEADER = 54


def _check_header(path: str) -> tuple[int, bool]:
    """(point count, compressed) from the public header block, or a Siren3dError saying what is wrong."""
    with open(path, "rb") as f:
        head = f.read(375)
        size = os.fstat(f.fileno()).st_size
    if not head.startswith(b"LASF"):
        raise Siren3dError("not a LAS/LAZ file (it does not start with 'LASF')", path)
    if len(head) < 227:
        raise Siren3dError(f"LAS file is truncated: its header needs 227 bytes, the file holds {len(head)}", path)
    major, minor = head[24], head[25]
    if major != 1 or minor > 4:
        raise Siren3dError(f"LAS version {major}.{minor} is not one that can be read (1.0 to 1.4)", path)
    header_size, offset, n_vlrs = struct.unpack_from("<HII", head, 94)
    fmt_byte, record, legacy_count = struct.unpack_from("<BHI", head, 104)
    compressed = bool(fmt_byte & 0x80)
    fmt = fmt_byte & 0x3F
    if fmt not in _MIN_RECORD:
        raise Siren3dError(f"LAS point format {fmt} does not exist (0 to 10): the header is corrupt", path)
    if record < _MIN_RECORD[fmt]:
        raise Siren3dError(f"LAS point records of {record} bytes are shorter than point format {fmt} needs "
                           f"({_MIN_RECORD[fmt]}): the header is corrupt", path)
    need = 375 if minor >= 4 else 235 if minor == 3 else 227
    if not need <= header_size <= size:
        raise Siren3dError(f"LAS header size {header_size} is wrong for version 1.{minor} (at least {need}, "
                           f"and within the file's {size} bytes): the header is corrupt", path)
    if not header_size <= offset <= size:
        raise Siren3dError(f"LAS offset to point data ({offset}) lies outside the file ({size} bytes): "
                           f"the file is truncated or its header corrupt", path)
    if n_vlrs * _VLR_HEADER > offset - header_size:
        raise Siren3dError(f"LAS header declares {n_vlrs:,} variable-length records, more than fit before the "
                           f"point data: the header is corrupt", path)
    scales = struct.unpack_from("<3d", head, 131)
    if not all(np.isfinite(s) and s != 0 for s in scales):
        raise Siren3dError(f"LAS scale factors {scales} are not usable (zero or not finite): the header is corrupt",
                           path)
    count = legacy_count
    if minor >= 4:
        count = struct.unpack_from("<Q", head, 247)[0] or legacy_count
    if not compressed and offset + count * record > size:
        raise Siren3dError(f"LAS file is truncated: header declares {count:,} points, the file holds "
                           f"{max(size - offset, 0) // record:,}", path)
    return count, compressed


def load_las(path: str, options: ReadOptions | None = None) -> RawScan:
    options = options or ReadOptions(max_points=0)
    total, compressed = _check_header(path)
    what = "LAZ" if compressed else "LAS"
    laspy = require("laspy", "laspy", "LAS/LAZ", path)
    if compressed and not laspy.LazBackend.detect_available():
        raise Siren3dError("reading LAZ (compressed) files needs a LAZ backend: pip install lazrs", path)
    keep = None
    if options.max_points and total > options.max_points:
        keep = subsample_indices(total, options.max_points, options.seed)
    parts: dict[str, list[np.ndarray]] = {"xyz": [], "rgb": [], "intensity": [], "normals": []}
    read = 0
    with reader_errors(what, path), laspy.open(path) as reader:
        dims = set(reader.header.point_format.dimension_names)
        has_rgb = {"red", "green", "blue"} <= dims
        normal_dims = next((d for d in _NORMAL_DIMS if set(d) <= dims), None)
        for chunk in reader.chunk_iterator(CHUNK):
            m = len(chunk)
            if keep is None:
                rows = slice(None)
            else:
                lo, hi = np.searchsorted(keep, [read, read + m])
                rows = keep[lo:hi] - read
            read += m
            parts["xyz"].append(np.stack([np.asarray(chunk.x)[rows], np.asarray(chunk.y)[rows],
                                          np.asarray(chunk.z)[rows]], axis=1))
            if has_rgb:
                parts["rgb"].append(np.stack([np.asarray(chunk[c])[rows] for c in ("red", "green", "blue")], axis=1))
            if "intensity" in dims:
                parts["intensity"].append(np.asarray(chunk.intensity)[rows].astype(np.float32))
            if normal_dims is not None:
                parts["normals"].append(np.stack([np.asarray(chunk[c], dtype=np.float64)[rows]
                                                  for c in normal_dims], axis=1))
    if read != total:
        raise Siren3dError(f"{what} file is truncated: header declares {total:,} points, the file holds {read:,}", path)

    def joined(name, width):
        if not parts[name]:
            return None
        return np.concatenate(parts[name]) if width == 1 else np.concatenate(parts[name]).reshape(-1, width)

    xyz = joined("xyz", 3)
    rgb = joined("rgb", 3)
    return RawScan(np.zeros((0, 3)) if xyz is None else xyz, normals=joined("normals", 3),
                   colors=None if rgb is None else colors_to_uint8(rgb), intensity=joined("intensity", 1),
                   total=total if keep is not None else None)


FORMATS = (Format("LAS/LAZ", (".las", ".laz"), load_las, magic=re.compile(rb"LASF")),)
