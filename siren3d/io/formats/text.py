"""Text point lists: XYZ / XYZN / XYZRGB / PTS / TXT, one point per line, spaces or commas.

Columns by count: 3 ``x y z``; 4 ``x y z intensity``; 6 ``x y z nx ny nz`` (the SIREN layout; always
in ``.xyzn``) or ``x y z r g b`` (always in ``.xyzrgb``), elsewhere told apart by the values (normals
are unit length, colours are 0-255 or 0-1 and never negative); 7 ``x y z intensity r g b`` (Leica PTS, whose count line is skipped); 9 normals and
colour in either order. Lines starting with ``#`` or ``//`` are comments.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ...errors import Siren3dError
from ..parse import colors_to_uint8, parse_numeric_rows
from ..registry import Format
from ..scan import RawScan, ReadOptions


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
    return parse_numeric_rows(lines, path, what="the point list", widths=None, first_line=rows[0][0])


def load_text(path: str, options: ReadOptions | None = None) -> RawScan:
    arr = _fast_text(path)
    if arr is None:
        arr = _careful_text(path)
    w = arr.shape[1]
    points = arr[:, :3]
    if w == 3:
        return RawScan(points)
    if w == 4:
        return RawScan(points, intensity=arr[:, 3].astype(np.float32))
    if w == 6:
        triple = arr[:, 3:6]
        suffix = Path(path).suffix.lower()
        if suffix == ".xyzrgb" or (suffix != ".xyzn" and _colour_like(triple)):
            return RawScan(points, colors=colors_to_uint8(triple))
        return RawScan(points, normals=triple)
    if w == 7:
        triple = arr[:, 4:7]
        return RawScan(points, intensity=arr[:, 3].astype(np.float32),
                       colors=colors_to_uint8(triple) if _colour_like(triple) else None)
    if w == 9:  # x y z nx ny nz r g b  or  x y z r g b nx ny nz: the unit-length triple is the normal
        a, b = arr[:, 3:6], arr[:, 6:9]
        if _unit_error(a) > _unit_error(b):
            a, b = b, a
        return RawScan(points, normals=a, colors=colors_to_uint8(b) if _colour_like(b) else None)
    raise Siren3dError(f"rows have {w} values; expected 3 (x y z), 4 (x y z intensity), 6 (x y z nx ny nz or "
                       f"x y z r g b), 7 (x y z intensity r g b) or 9 (normals and colour)", path)


def _unit_error(triple: np.ndarray) -> float:
    """Median distance of the rows' lengths from 1 (about 0 for normals)."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(np.linalg.norm(triple, axis=1) - 1.0)
    err = err[np.isfinite(err)]
    return float(np.median(err)) if len(err) else np.inf


def _colour_like(triple: np.ndarray) -> bool:
    """Colour channels (0-255 or 0-1, never negative) rather than normals (unit length, signed)."""
    finite = triple[np.isfinite(triple).all(1)]
    if len(finite) == 0:
        return False
    # All zeros reads as (unusable) normals, as it always did, not as a black scan.
    return bool(finite.min() >= 0 and 0 < finite.max() <= 255 and _unit_error(finite) > 0.05)


FORMATS = (Format("text point list", (".xyz", ".xyzn", ".xyzrgb", ".pts", ".txt"), load_text),)
