"""``load_scan``: any supported file -> a clean :class:`Scan`.

The steps, in order: check the file (exists, regular, readable, not empty, content matching its
name); read it with its format's loader; sample the surface of a mesh; drop points with NaN/Inf
coordinates; subsample to ``max_points``; drop unusable normals; check the geometry (enough points,
not all on a line); drop stray points (:mod:`.outliers`); estimate missing normals (:mod:`.normals`).
Colours, intensity and per-point sensor positions stay aligned with the points through every step.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import LoadConfig
from ..errors import Siren3dError
from .normals import estimate_normals
from .outliers import find_outliers
from .registry import MAGIC_BYTES, format_for
from .scan import RawScan, ReadOptions, Scan, note, subsample_indices, take_per_point
from .surface import sample_mesh_surface

#: Fewest points a scan may have: normal estimation and a meaningful fit need a neighbourhood.
MIN_POINTS = 16
#: Largest coordinate magnitude accepted; beyond it the file is corrupt, not a scan.
MAX_COORDINATE = 1e30
_PER_POINT = ("points", "normals", "colors", "intensity", "sensor")


def load_scan(path: str | os.PathLike, config: LoadConfig | None = None, *, seed: int = 0, **settings) -> Scan:
    """Load a point cloud or mesh file into a :class:`Scan`; ``config`` (default LoadConfig()) with any of
    its fields overridden by keyword, e.g. ``load_scan(path, max_points=100_000, outliers="off")``.

    Point clouds: PLY, XYZ / XYZN / XYZRGB / PTS / TXT text, PCD, NPY / NPZ, LAS / LAZ, E57, with
    their normals, colours, intensity and sensor positions where the file has them. Meshes: OBJ, OFF,
    STL and PLY with faces, whose surface is sampled (area-weighted, ``mesh_samples`` points, face
    normals). Points with non-finite coordinates or unusable normals are dropped with a warning;
    scans with more than ``max_points`` points are subsampled (seeded); stray points are dropped
    (``outliers``); missing normals are estimated, toward the sensor when its position is known.
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
    try:
        with open(spath, "rb") as f:
            head = f.read(MAGIC_BYTES)
    except OSError as e:
        raise Siren3dError(f"cannot be read: {e.strerror or e}", spath) from None
    fmt = format_for(spath, p.suffix.lower(), head)

    # Garbage bytes read as floats (signalling NaNs, 1e38 * 1e38) are cleaned below, not warned about.
    with np.errstate(invalid="ignore", over="ignore"):
        try:
            raw = fmt.load(spath, ReadOptions(max_points=cfg.max_points, seed=seed))
        except MemoryError:
            raise Siren3dError("is too large to load into memory", spath) from None
        except OSError as e:
            raise Siren3dError(f"cannot be read: {e.strerror or e}", spath) from None
        return _clean(raw, spath, cfg, seed)


def _take(raw: RawScan, index) -> RawScan:
    return replace(raw, **take_per_point(raw, index, _PER_POINT))


def _clean(raw: RawScan, path: str, cfg: LoadConfig, seed: int) -> Scan:
    notes: list[str] = []
    for message in raw.notes:
        note(notes, message)
    from_mesh = raw.faces is not None
    if from_mesh:
        raw = _sample_mesh(raw, path, cfg.mesh_samples, seed, notes)
    _check_aligned(raw, path)

    n0 = len(raw.points)
    if n0 == 0:
        raise Siren3dError("holds no points", path)
    finite = np.isfinite(raw.points).all(1)
    if not finite.all():
        nbad = int((~finite).sum())
        if nbad == n0:
            raise Siren3dError(f"all {n0} points have NaN/Inf coordinates", path)
        note(notes, f"{path}: dropped {nbad} of {n0} points with NaN/Inf coordinates")
        raw = _take(raw, finite)
    if raw.total is not None and raw.total > len(raw.points):
        note(notes, f"{path}: {raw.total:,} points; using a random subset of {len(raw.points):,} "
                    f"(raise --max-points to keep more)")
    elif cfg.max_points and len(raw.points) > cfg.max_points:
        note(notes, f"{path}: {len(raw.points):,} points; using a random subset of {cfg.max_points:,} "
                    f"(raise --max-points to keep more)")
        raw = _take(raw, subsample_indices(len(raw.points), cfg.max_points, seed))

    normals = raw.normals
    if normals is not None:
        length = np.linalg.norm(normals, axis=1)
        usable = np.isfinite(length) & (length > 1e-8)
        if not usable.any():
            note(notes, f"{path}: none of the normals is usable (zero or NaN); estimating normals instead")
            raw = replace(raw, normals=None)
        else:
            if not usable.all():
                note(notes, f"{path}: dropped {int((~usable).sum())} points with zero-length or NaN/Inf normals")
                raw, length = _take(raw, usable), length[usable]
            if not from_mesh and np.abs(length - 1).max() > 1e-3:
                note(notes, f"{path}: normals were not unit length; normalized them")
            raw = replace(raw, normals=raw.normals / length[:, None])

    _check_geometry(raw.points, path, notes)

    if cfg.viewpoint is not None:
        raw = replace(raw, sensor=np.array(cfg.viewpoint, dtype=np.float64))
    dropped = 0
    if cfg.outliers == "auto" and not from_mesh:  # a mesh's samples all lie on its faces
        stray = find_outliers(raw.points, raw.sensor)
        dropped = int(stray.sum())
        if dropped:
            note(notes, f"{path}: dropped {dropped:,} stray point{'s' if dropped != 1 else ''} of "
                        f"{len(raw.points):,} (isolated, far from the surface; --outliers off keeps them)")
            raw = _take(raw, ~stray)
            if len(raw.points) < MIN_POINTS:
                raise Siren3dError(f"has only {len(raw.points)} points left after dropping stray points; at least "
                                   f"{MIN_POINTS} are needed (--outliers off keeps them)", path)

    estimated = raw.normals is None
    if estimated:
        if raw.sensor is not None:
            where = "per point" if raw.sensor.ndim == 2 else ", ".join(f"{v:.6g}" for v in raw.sensor)
            note(notes, f"{path}: no normals in the file; estimating them from the points (kNN PCA, turned "
                        f"toward the sensor position ({where}))")
        else:
            note(notes, f"{path}: no normals in the file; estimating them from the points "
                        f"(kNN PCA, consistently oriented). Scans with normals give better results; for a "
                        f"single view, --viewpoint X,Y,Z orients them exactly.")
        raw = replace(raw, normals=estimate_normals(raw.points, sensor=raw.sensor))

    return Scan(points=np.ascontiguousarray(raw.points, dtype=np.float64),
                normals=np.ascontiguousarray(raw.normals, dtype=np.float32),
                path=path, normals_estimated=estimated, from_mesh=from_mesh, notes=notes,
                colors=None if raw.colors is None else np.ascontiguousarray(raw.colors, dtype=np.uint8),
                intensity=None if raw.intensity is None else np.ascontiguousarray(raw.intensity, dtype=np.float32),
                sensor=None if raw.sensor is None else np.ascontiguousarray(raw.sensor, dtype=np.float64),
                outliers=dropped)


def _sample_mesh(raw: RawScan, path: str, count: int, seed: int, notes: list[str]) -> RawScan:
    """A mesh's surface as points with face normals (vertex attributes are not carried)."""
    points, faces = raw.points, raw.faces
    finite_v = np.isfinite(points).all(1)
    if not finite_v.all():
        bad_faces = ~finite_v[faces].all(1)
        faces = faces[~bad_faces]
        note(notes, f"{path}: {int((~finite_v).sum())} mesh vertices are NaN/Inf; "
                    f"dropped the {int(bad_faces.sum())} faces that use them")
        if len(faces) == 0:
            raise Siren3dError("every mesh face uses a NaN/Inf vertex", path)
    samples, normals, degenerate = sample_mesh_surface(points, faces, count, seed=seed, path=path)
    if degenerate:
        note(notes, f"{path}: ignored {degenerate} degenerate (zero-area) faces of {len(faces)}")
    return RawScan(samples, normals)


def _check_aligned(raw: RawScan, path: str) -> None:
    """Every per-point array has one row per point (a format module's promise, checked once here)."""
    n = len(raw.points)
    for name in _PER_POINT[1:]:
        value = getattr(raw, name)
        if value is None or (name == "sensor" and value.shape == (3,)):
            continue
        if len(value) != n:
            raise Siren3dError(f"has {len(value)} {name} values for {n} points", path)


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
        note(notes, f"{path}: all points lie in one plane; the result will be an open sheet, not a closed surface")
