"""Helpers the format modules share: numeric text rows, colour scaling, exception messages."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from ..errors import Siren3dError

#: A header longer than this is not a header (PLY, PCD): the file is corrupt or not that format.
MAX_HEADER_BYTES = 1 << 20


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (third-party readers write long ones), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


@contextlib.contextmanager
def reader_errors(what: str, path: str):
    """Turn what a third-party reader raises on damaged data into one line, '<what> data cannot be
    read (truncated or corrupt): <its first line>'; siren3d's own errors and MemoryError pass."""
    try:
        yield
    except (Siren3dError, MemoryError):
        raise
    except Exception as e:  # such readers raise many types of their own on damaged files
        raise Siren3dError(f"{what} data cannot be read (truncated or corrupt): {first_line(e)}", path) from None


def parse_numeric_rows(rows: list[str], path: str, what: str, widths: tuple[int, ...] | None = None,
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


def colors_to_uint8(channels: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Colour channels (N, 3|4) of any numeric type as uint8, the way viewers read them.

    With ``limits`` (the format's declared range, e.g. E57's colorLimits) values are mapped from
    that range. Otherwise by what the values are: floats within [0, 1] are fractions; anything
    within [0, 255] is already 8-bit (many LAS writers store 8-bit colour in the 16-bit fields);
    larger values are 16-bit (LAS, PLY ushort) and keep their high byte. Non-finite values read as 0.
    """
    c = np.asarray(channels)
    if limits is not None:
        lo, hi = float(limits[0]), float(limits[1])
        scaled = (c.astype(np.float64) - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros(c.shape)
        return _round_clip(scaled)
    if c.dtype == np.uint8:
        return np.ascontiguousarray(c)
    if c.dtype.kind in "iu":
        top = int(c.max(initial=0))
        return (c >> 8 if top > 255 else c).clip(0, 255).astype(np.uint8)
    c = np.where(np.isfinite(c), c, 0.0).astype(np.float64)
    top = float(c.max(initial=0.0))
    if top <= 1.0:
        return _round_clip(c * 255.0)
    return _round_clip(c / 257.0 if top > 255.0 else c)


def _round_clip(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
