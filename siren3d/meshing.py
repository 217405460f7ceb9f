"""Extracting the zero level set of a fitted field as a triangle mesh in the scan's coordinates.

The field is sampled on a regular grid of ``res`` samples along the longest side of the box (the
unit box [-1, 1]^3 by default, where sample i sits at -1 + 2 i / (res - 1) on every axis).

Two ways to sample it:

* ``dense``: every grid sample, in chunks (res^3 network evaluations: fine up to ~256).
* ``sparse`` (default): coarse to fine. The grid's cells are grouped into cubic regions; a region is
  kept only if the field at its centre is close enough to the level for the surface to enter it,
  |f(c) - level| <= safety * reach, reach being the distance from the centre to the region's corners
  (a true distance field needs safety 1; a fitted field is only roughly 1-Lipschitz). Kept regions
  are split into 8 until they are blocks of ``block`` cells. Marching cubes runs per block on
  exactly the samples the dense grid has, so the surface is the dense one; and wherever the surface
  leaves a block through a face into a block that was not kept, that block is added too (repeated
  until nothing is added), so a surface is never cut open where the coarse test was wrong. Vertices
  on shared block faces are merged: no cracks, no duplicates.

Afterwards: small disconnected pieces are dropped (``min_component``), then closed shells inside
the main surface that the scan does not support (``keep_inner``); with the scan's support
(:mod:`siren3d.support`) the surface the scan does not support is trimmed away (``trim``) and
vertices get colours from the scan's; optionally Newton steps move each vertex onto the level set
along grad f (``refine``), and vertex normals come from grad f. Faces are oriented outward (the
field is negative inside).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .config import MeshConfig, parse_trim
from .errors import Siren3dError
from .field import DEFAULT_CHUNK, Grid, ScanField, field_values, field_values_and_grads, grid_values
from .files import atomic_output
from .model import Siren
from .normalization import Normalization
from .support import ScanSupport, cut_mesh, face_areas, plan_trim, shell_supported
from .system import available_memory
from .topology import Pieces, face_components, is_watertight, keep_faces, mesh_pieces

log = logging.getLogger(__name__)

EXPORT_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb")
#: After trimming, a small piece (min_component) is kept if its area is that of this many scan points
#: (their spacing squared): scanned surface seen apart from the rest, not a stray bit.
TRIM_PIECE_POINTS = 20
#: Field values this close to the level (in cells) count as just outside it (see marching_cubes).
SNAP = 1e-4
_DEFAULTS = MeshConfig()


@dataclass
class MeshStats:
    """What an extraction did and what it made (the numbers ``siren3d mesh`` prints)."""

    res: int
    method: str
    backend: str
    seconds: float
    evaluations: int        # network evaluations, coarse tests included
    dense_evaluations: int  # what a dense grid would have needed
    vertices: int
    faces: int
    components: int         # pieces (faces joined through shared edges), after clean-up
    dropped_components: int  # small pieces dropped (min_component)
    inner_shells_dropped: int
    watertight: bool
    touches_box: bool
    blocks: int | None = None        # sparse: blocks meshed, of which grown from a neighbour
    grown_blocks: int | None = None
    level_error: dict | None = None  # |f - level| at the vertices, scan units: before (and after refine)
    trim: str = "off"                # what was trimmed: 'auto', 'off' or the distance in spacings
    trimmed_area: float = 0.0        # area trimmed away, scan units squared
    trimmed_fraction: float = 0.0    # of the area before trimming
    trimmed_regions: int = 0         # unsupported regions removed
    unsupported_regions: int = 0     # unsupported regions found (auto keeps the small ones closed)
    inner_shells_kept: int = 0       # closed shells inside the main surface kept: the scan supports them
    colored: bool = False            # vertex colours from the scan's

    def to_dict(self) -> dict:
        return asdict(self)


#: PLY vertex property holding the support distance: MeshLab reads it as vertex quality (Filters >
#: Selection > Select by Vertex Quality), CloudCompare as a scalar field.
SUPPORT_PROPERTY = "quality"


@dataclass
class MeshResult:
    vertices: np.ndarray  # (V, 3) float64, scan coordinates
    faces: np.ndarray     # (F, 3) int64, outward
    normals: np.ndarray | None  # (V, 3) float64 unit vertex normals from grad f
    stats: MeshStats
    support_distance: np.ndarray | None = None  # (V,) float32: to the nearest scan point, in its spacings
    colors: np.ndarray | None = None  # (V, 3|4) uint8 RGB(A) from the scan's colours

    def to_trimesh(self, support_property: bool = False):
        """As a trimesh (with vertex colours; with ``support_property``, the support distance as the
        vertex attribute SUPPORT_PROPERTY, which its PLY writer writes)."""
        import trimesh

        tm = trimesh.Trimesh(self.vertices, self.faces, vertex_normals=self.normals, vertex_colors=self.colors,
                             process=False)
        if support_property and self.support_distance is not None:
            tm.vertex_attributes[SUPPORT_PROPERTY] = np.asarray(self.support_distance, dtype=np.float32)
        return tm


def grid_axis(res: int) -> np.ndarray:
    """The sample positions along one axis of the unit box: (res,) float64, exact endpoints."""
    return Grid.cube(res).axes()[0]


def _snap(values: np.ndarray, level: float, snap: float) -> np.ndarray:
    """Values within ``snap`` of the level, moved to level + snap (just outside)."""
    if snap <= 0:
        return values
    return np.where(np.abs(values - level) < snap, np.float32(level + snap), values)


def marching_cubes(volume: np.ndarray, level: float = 0.0, backend: str = "mcubes", snap: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of the ``level`` set in index coordinates, oriented so normals point to larger values.

    volume: (X, Y, Z) float32. Samples within ``snap`` of the level are moved to level + snap, so
    no vertex lands (almost) on a grid corner, where the vertices of several edges would coincide
    and merging them would pinch the surface. Returns (vertices (V, 3) float64, faces (F, 3) int64).
    """
    volume = _snap(volume, level, snap)
    if backend == "mcubes":
        import mcubes

        v, f = mcubes.marching_cubes(np.ascontiguousarray(volume, dtype=np.float64), float(level))
        f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
        f = f[:, ::-1]  # PyMCubes winds faces toward smaller values
    elif backend == "skimage":
        from skimage.measure import marching_cubes as sk_mc

        try:
            v, f, _, _ = sk_mc(volume, level=float(level), allow_degenerate=False)
        except (ValueError, RuntimeError):  # no crossing in this volume
            return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
        f = np.asarray(f, dtype=np.int64)  # skimage already winds toward larger values
    else:
        raise Siren3dError(f"unknown marching cubes backend '{backend}'")
    return np.asarray(v, dtype=np.float64).reshape(-1, 3), f


# --------------------------------------------------------------------------------------------
# Sparse, coarse-to-fine sampling


def _progress(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pt", unit_scale=True, leave=False, disable=not progress,
                dynamic_ncols=True)


def active_blocks(model: Siren, grid: Grid, level: float = 0.0, *, block: int = _DEFAULTS.block,
                  safety: float = _DEFAULTS.safety, chunk: int = DEFAULT_CHUNK, progress: bool = False
                  ) -> tuple[np.ndarray, dict]:
    """Origins (K, 3) int64 of the ``block``-cell blocks that can hold the ``level`` set, coarse to fine.

    Returns the origins and stats: regions tested and kept per level.
    """
    cells = grid.cells
    size = block
    while np.ceil(cells.max() / size) > 16:
        size *= 2
    axes = [np.arange(0, c, size) for c in cells]
    origins = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.int64)
    levels = []
    while True:
        ext = np.minimum(size, cells - origins)  # regions on the far faces are clipped
        centres = grid.points(origins + ext / 2.0)
        reach = grid.h * 0.5 * np.linalg.norm(ext, axis=1)
        with _progress(progress, len(centres), f"mesh: regions of {size} cells") as bar:
            f = field_values(model, centres, chunk).astype(np.float64)
            bar.update(len(centres))
        keep = np.abs(f - level) <= safety * reach
        levels.append({"cells": size, "regions": len(origins), "kept": int(keep.sum())})
        origins = origins[keep]
        if size == block or len(origins) == 0:
            break
        size //= 2
        offsets = np.stack(np.meshgrid(*[[0, size]] * 3, indexing="ij"), -1).reshape(-1, 3)
        children = (origins[:, None, :] + offsets[None]).reshape(-1, 3)
        origins = children[(children < cells).all(1)]
    stats = {"levels": levels, "safety": safety,
             "coarse_evaluations": sum(lv["regions"] for lv in levels)}
    return origins, stats


def _block_mesh(model: Siren, grid: Grid, seeds: np.ndarray, level: float, block: int, backend: str,
                chunk: int, progress: bool, snap: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Marching cubes over the blocks at ``seeds`` (origins), growing into every neighbouring block
    the surface crosses into, so a surface that the coarse test missed in part is still found whole.

    Returns vertices in index coordinates (merged across blocks), faces, and stats.
    """
    cells = grid.cells
    shape = np.asarray(grid.shape, dtype=np.int64)
    nblocks = -(-cells // block)
    seen = np.zeros(int(np.prod(nblocks)), dtype=bool)
    local = np.stack(np.meshgrid(*[np.arange(block + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    steps = np.concatenate([np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)])  # +x +y +z -x -y -z
    per_batch = max(1, 2 ** 20 // len(local))
    verts, faces, nverts, evaluations, blocks = [], [], 0, 0, 0
    queue = np.unique(seeds // block, axis=0) if len(seeds) else np.zeros((0, 3), dtype=np.int64)
    n_seeds = len(queue)
    with _progress(progress, len(queue) * len(local), "mesh: blocks") as bar:
        while len(queue):
            seen[np.ravel_multi_index(queue.T, nblocks)] = True
            queue = queue[np.lexsort(queue.T[::-1])]  # neighbours together: shared samples evaluated once
            crossing = []
            for b0 in range(0, len(queue), per_batch):
                batch = queue[b0:b0 + per_batch] * block  # origins
                idx = np.minimum(batch[:, None, :] + local[None], shape - 1).reshape(-1, 3)  # clip at the far faces
                lin = np.ravel_multi_index(idx.T, tuple(shape))
                uniq, inverse = np.unique(lin, return_inverse=True)
                values = field_values(model, grid.points(np.stack(np.unravel_index(uniq, tuple(shape)), -1)), chunk)
                values = values[inverse.reshape(-1)].reshape(len(batch), block + 1, block + 1, block + 1)
                values = _snap(values, level, snap)  # here already: the crossing test below must agree
                evaluations += len(uniq)
                for origin, vol in zip(batch, values):
                    ext = np.minimum(block, cells - origin) + 1
                    v, f = marching_cubes(vol[:ext[0], :ext[1], :ext[2]], level, backend)
                    if len(f):
                        verts.append(v + origin)
                        faces.append(f + nverts)
                        nverts += len(v)
                # Which faces of each block does the level set cross? (clipped samples repeat the far face)
                faces_v = [values[:, -1], values[:, :, -1], values[:, :, :, -1],
                           values[:, 0], values[:, :, 0], values[:, :, :, 0]]
                crossing.append(np.stack([(fv.min((1, 2)) < level) & (fv.max((1, 2)) > level)
                                          for fv in faces_v], 1))
                bar.update(len(batch) * len(local))
            blocks += len(queue)
            crossing = np.concatenate(crossing)
            nb = (queue[:, None, :] + steps[None])[crossing]
            nb = nb[((nb >= 0) & (nb < nblocks)).all(1)]
            if len(nb):
                nb = np.unique(nb, axis=0)
                nb = nb[~seen[np.ravel_multi_index(nb.T, nblocks)]]
            queue = nb
            bar.total = bar.n + len(queue) * len(local)
    stats = {"blocks": blocks, "grown_blocks": blocks - n_seeds, "block_evaluations": evaluations}
    if not faces:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), stats
    v = np.concatenate(verts)
    f = np.concatenate(faces)
    # Merge the copies of vertices on shared block faces: a vertex lies on one grid edge (two
    # integer coordinates), and both blocks interpolate it from the same two samples.
    base = np.floor(v).astype(np.int64)
    axis = np.argmax(v - base, axis=1)
    span = int(shape.max()) + 1
    key = ((base[:, 0] * span + base[:, 1]) * span + base[:, 2]) * 3 + axis
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    v = v[first]
    f = inverse.reshape(-1)[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    return v, f, stats


# --------------------------------------------------------------------------------------------
# Clean-up: Newton refinement, normals, components


def refine_vertices(model: Siren, unit_vertices: np.ndarray, level: float, steps: int, max_step: float,
                    chunk: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray, dict]:
    """Newton steps x <- x - (f - level) grad f / |grad f|^2, each at most ``max_step`` long.

    Returns (vertices, unit normals from grad f at the final positions, stats of |f - level|
    before and after, in unit-box units).
    """
    x = np.asarray(unit_vertices, dtype=np.float64).copy()
    f, g = field_values_and_grads(model, x, chunk)
    before = np.abs(f - level)
    for _ in range(steps):
        gg = np.maximum((g * g).sum(1), 1e-12)
        step = ((f - level) / gg)[:, None] * g
        length = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, max_step / np.maximum(length, 1e-30))
        x -= step
        f, g = field_values_and_grads(model, x, chunk)
    after = np.abs(f - level)
    normals = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    stats = {"before_mean": float(before.mean()), "before_max": float(before.max()),
             "after_mean": float(after.mean()), "after_max": float(after.max())}
    return x, normals, stats


def drop_small_components(vertices: np.ndarray, faces: np.ndarray, min_fraction: float, *extra,
                          pieces: Pieces | None = None):
    """Keep the pieces with at least ``min_fraction`` of the largest piece's faces.

    ``extra``: per-vertex arrays (or None) reindexed alike; ``pieces``: the mesh's pieces, if known.
    Returns (vertices, faces, *extra, pieces kept, pieces dropped).
    """
    n, labels = (pieces.count, pieces.labels) if pieces is not None else face_components(faces)
    if n <= 1 or min_fraction <= 0:
        return (vertices, faces, *extra, n, 0)
    counts = np.bincount(labels, minlength=n)
    keep_label = counts >= min_fraction * counts.max()
    kept = int(keep_label.sum())
    if kept == n:  # the same arrays: what is known of them (their pieces, closedness) still holds
        return (vertices, faces, *extra, n, 0)
    return (*keep_faces(vertices, faces, keep_label[labels], *extra), kept, n - kept)


def _ray_crossings(origin: np.ndarray, direction: np.ndarray, tri: np.ndarray) -> int:
    """How many triangles (M, 3, 3) the ray origin + t * direction (t > 0) passes through."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    pvec = np.cross(direction, e2)
    det = np.einsum("ij,ij->i", e1, pvec)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = origin - tri[:, 0]
    u = np.einsum("ij,ij->i", tvec, pvec) * inv
    qvec = np.cross(tvec, e1)
    v = (qvec @ direction) * inv
    t = np.einsum("ij,ij->i", e2, qvec) * inv
    return int((ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)).sum())


#: Directions of the parity rays (irrational-ish, so no ray runs along a grid plane or edge).
_RAYS = np.array([[0.5773, 0.5812, 0.5736], [-0.7071, 0.3090, 0.6358], [0.2113, -0.9012, 0.3785]])


class _RayTarget:
    """The triangles (M, 3, 3) of a surface, ready for many parity rays along the _RAYS: per ray,
    each triangle's extent across the ray's direction, so a ray is tested only against the few
    triangles whose extent holds its origin."""

    def __init__(self, tri: np.ndarray):
        self.tri = tri
        self.frames, self.lo, self.hi = [], [], []
        for d in _RAYS / np.linalg.norm(_RAYS, axis=1, keepdims=True):
            a = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
            a /= np.linalg.norm(a)
            frame = np.stack([a, np.cross(d, a)], 1)  # (3, 2): two directions across the ray
            p = tri @ frame                            # (M, 3, 2)
            pad = 1e-9 * max(float(np.abs(p).max()), 1.0)  # rounding here must not drop a hit the full test counts
            self.frames.append((d, frame))
            self.lo.append(p.min(1) - pad)
            self.hi.append(p.max(1) + pad)

    def odd_rays(self, origin: np.ndarray) -> int:
        """How many of the rays from ``origin`` cross the surface an odd number of times."""
        odd = 0
        for (d, frame), lo, hi in zip(self.frames, self.lo, self.hi):
            q = origin @ frame
            near = (lo[:, 0] <= q[0]) & (hi[:, 0] >= q[0]) & (lo[:, 1] <= q[1]) & (hi[:, 1] >= q[1])
            odd += _ray_crossings(origin, d, self.tri[near]) % 2
        return odd


def drop_inner_shells(vertices: np.ndarray, faces: np.ndarray, max_tested: int = 20, supported=None, extra=(),
                      pieces: Pieces | None = None):
    """Drop closed pieces that lie inside the largest piece and that the scan does not support: a
    pocket of the wrong sign left by the fit. A hollow object's measured inner wall is supported
    and stays.

    A piece is inside when rays from one of its vertices cross the largest piece an odd number of
    times (majority of three rays). Only the ``max_tested`` largest other pieces are tested.
    ``supported(vertices, faces) -> bool`` says whether the scan supports an inside piece (None:
    no scan to ask, every inside piece goes). ``extra``: per-vertex arrays (or None) reindexed
    alike; ``pieces``: the mesh's pieces, if known. Returns (vertices, faces, pieces dropped, inside
    pieces kept as supported, *extra).
    """
    n, labels = (pieces.count, pieces.labels) if pieces is not None else face_components(faces)
    if n <= 1:
        return (vertices, faces, 0, 0, *extra)
    counts = np.bincount(labels, minlength=n)
    order = np.argsort(-counts)
    target = _RayTarget(np.asarray(vertices, dtype=np.float64)[faces[labels == order[0]]])
    inner, kept = [], 0
    for c in order[1:1 + max_tested]:
        origin = np.asarray(vertices[faces[np.argmax(labels == c), 0]], dtype=np.float64)
        if target.odd_rays(origin) >= 2:
            if supported is not None and supported(vertices, faces[labels == c]):
                kept += 1
            else:
                inner.append(c)
    if not inner:
        return (vertices, faces, 0, kept, *extra)
    v, f, *rest = keep_faces(vertices, faces, ~np.isin(labels, inner), *extra)
    return (v, f, len(inner), kept, *rest)


# --------------------------------------------------------------------------------------------


def estimate_memory(res: int, method: str, active_blocks: int | None = None, block: int = _DEFAULTS.block) -> int:
    """Bytes the extraction needs at its peak (a conservative estimate)."""
    if method == "dense":
        faces = 6 * res ** 2 * 4  # a busy surface: a few times the box's area in cells
        return res ** 3 * 4 * 3 + faces * 150
    blocks = active_blocks if active_blocks is not None else 6 * (res // block + 1) ** 2 * 4
    faces = blocks * 3 * block ** 2  # about 3 faces per surface cell, a block's face of cells
    # per face: vertices/normals/faces in float64 and int64, the merge keys, trimesh's copies
    return int(faces * 150 + 2 ** 20 * 100)


def extract_mesh(model, normalization: Normalization, config: MeshConfig | None = None, *,
                 support: ScanSupport | None = None, progress: bool = False, **settings) -> MeshResult:
    """The ``level`` set (scan units; 0: the surface) of ``model`` as a mesh in scan coordinates.

    model: a :class:`Siren`, or any field as :mod:`siren3d.field` takes it (a callable unit-box points
    (N, 3) -> signed distances (N,) in unit-box units, such as an analytic shape).
    ``config`` (default: MeshConfig(), exactly what ``siren3d mesh`` uses) with any of its fields
    overridden by keyword, e.g. ``extract_mesh(model, normalization, res=512)``. The network is
    evaluated where its weights are (``config.device`` is for loading a model, see the CLI). A level
    L is the offset surface at distance L outside the surface (inside for L < 0): with the scan's
    support the field is the :class:`~siren3d.field.ScanField`, a distance in the whole box.
    ``support``: the scan's support (``FitResult.support``, ``Checkpoint.support``; what ``siren3d
    mesh`` passes): it trims the surface the scan does not support (``trim``), keeps supported inner
    shells, and gives the vertices the scan's colours and their support distance. Without it nothing
    is trimmed (``trim`` set to a distance is then an error).
    """
    cfg = replace(config or MeshConfig(), **settings)
    cfg.validate()
    trim = parse_trim(cfg.trim)
    if support is None and trim not in ("auto", "off"):
        raise Siren3dError(f"trim {trim:g} needs the scan's support, and this model has none (a model file "
                           f"written before siren3d stored it: refit, or use trim 'off')")
    res = cfg.res
    if cfg.bbox is not None:
        b = np.asarray(cfg.bbox, dtype=np.float64).reshape(2, 3)
        grid = Grid.box(normalization.to_unit(b[:1])[0], normalization.to_unit(b[1:])[0], res)
    else:
        grid = Grid.cube(res, cfg.pad)
    _check_memory(estimate_memory(res, cfg.method, block=cfg.block), res)
    t0 = time.perf_counter()
    if isinstance(model, Siren):
        model.eval()
        if support is not None and cfg.level != 0:  # an offset lies away from the surface: the field as a distance
            model = ScanField(model, support)
    unit_level = normalization.distance_to_unit(cfg.level)
    snap = SNAP * grid.h
    extra = {}

    if cfg.method == "dense":
        vol = grid_values(model, grid, cfg.chunk)
        v, f = marching_cubes(vol, unit_level, cfg.backend, snap)  # empty where there is no crossing
        field_range = (float(vol.min()), float(vol.max()))
        evaluations = grid.size
    else:
        origins, sstats = active_blocks(model, grid, unit_level, block=cfg.block, safety=cfg.safety, chunk=cfg.chunk,
                                        progress=progress)
        _check_memory(estimate_memory(res, cfg.method, len(origins), cfg.block), res)
        v, f, bstats = _block_mesh(model, grid, origins, unit_level, cfg.block, cfg.backend, cfg.chunk, progress, snap)
        evaluations = bstats["block_evaluations"] + sstats["coarse_evaluations"]
        extra = dict(blocks=bstats["blocks"], grown_blocks=bstats["grown_blocks"])
    if len(f) == 0:
        lo, hi = field_range if cfg.method == "dense" else _field_range(model, grid, cfg.chunk)
        _no_crossing(normalization, cfg.level, unit_level, lo, hi)
    at_edge = ((v <= 1e-9) | (v >= grid.cells - 1e-9)).any(1)
    unit = grid.points(v)
    offset = abs(unit_level)  # an offset surface's distance to the scan counts from the offset
    # a closed piece inside the main surface is kept when scan points support it (a hollow part's wall)
    supported = None if support is None else functools.partial(shell_supported, support=support, offset=offset)

    # What would be trimmed is decided on the whole surface, before anything is dropped: on a
    # partial scan the field's far side can be split by the box into pieces, some of them holding
    # scanned surface, and none of those may go for being small next to the far side.
    distance, plan, trimmed = None, None, {}
    # One pass over the edges for the trim, the small pieces, the inner shells and closedness, as
    # long as no face has gone (every step that removes faces hands back new arrays).
    pieces, faces_of_pieces = mesh_pieces(f), f

    def known(faces):
        return pieces if faces is faces_of_pieces else None

    if support is not None:
        if trim == "off":
            distance = support.distance(unit, offset=offset)
        else:  # exact only as far as it matters to the trim (inf beyond): far searches are slow
            absolute, distance = support.nearest(unit, offset=offset, bound=support.bound(trim))
            plan = plan_trim(unit, f, distance, trim, support, at_edge, offset=offset, absolute=absolute,
                             field=lambda x: field_values(model, x, cfg.chunk), pieces=pieces)
            trimmed = {"unsupported_regions": plan.regions, "trimmed_regions": plan.trimmed_regions}
    inner = inner_kept = 0
    if plan is None or not (plan.value > 0).any():
        # Nothing to trim (a complete scan): small pieces, then closed pieces inside the main one.
        # Small pieces go first (a question of faces alone), so that neither the box-edge warning
        # nor the gradient pass below is spent on vertices that will not be written.
        unit, f, distance, at_edge, kept, dropped = drop_small_components(unit, f, cfg.min_component, distance,
                                                                          at_edge, pieces=pieces)
        if not cfg.keep_inner and kept > 1:
            unit, f, inner, inner_kept, distance, at_edge = drop_inner_shells(unit, f, supported=supported,
                                                                               extra=(distance, at_edge),
                                                                               pieces=known(f))
            kept -= inner
    else:
        # Trimming: pieces the cut removes whole go first (no inner-shell test spent on them), then
        # inner shells, the cut, and the pieces left small next to the largest kept one.
        area_before = float(face_areas(unit, f).sum())
        n, labels = pieces.count, pieces.labels
        stays = np.zeros(n, dtype=bool)
        stays[labels[(plan.value[f] <= 0).any(1)]] = True
        if not stays.all():
            unit, f, distance, at_edge, plan.value = keep_faces(unit, f, stays[labels], distance, at_edge, plan.value)
        if not cfg.keep_inner and int(stays.sum()) > 1:
            unit, f, inner, inner_kept, distance, at_edge, value = drop_inner_shells(
                unit, f, supported=supported, extra=(distance, at_edge, plan.value), pieces=known(f))
            plan.value = value
        unit, f, distance, at_edge, kept, dropped, trimmed = _trim(unit, f, distance, at_edge, plan, support, cfg,
                                                                   offset, trimmed, area_before)
    if distance is not None and not np.isfinite(distance).all():  # beyond the bound, kept: now exactly
        far = ~np.isfinite(distance)
        distance[far] = support.distance(unit[far], offset=offset)
    touches = bool(at_edge.any())

    vnormals, level_error = None, None
    if cfg.refine or cfg.normals:
        unit, vnormals, rstats = refine_vertices(model, unit, unit_level, cfg.refine, max_step=grid.h, chunk=cfg.chunk)
        level_error = {k: normalization.distance_to_scan(val) for k, val in rstats.items()
                       if cfg.refine or k.startswith("before")}
        if distance is not None and cfg.refine:
            distance = support.distance(unit, offset=offset)
    colors = support.colors_at(unit) if support is not None else None
    vertices = normalization.to_scan(unit)
    stats = MeshStats(res=res, method=cfg.method, backend=cfg.backend, seconds=time.perf_counter() - t0,
                      evaluations=int(evaluations), dense_evaluations=grid.size, vertices=len(vertices), faces=len(f),
                      components=kept, dropped_components=dropped, inner_shells_dropped=inner,
                      watertight=known(f).watertight if known(f) is not None else is_watertight(f),
                      touches_box=touches, level_error=level_error,
                      trim=trim if isinstance(trim, str) else f"{trim:g}", inner_shells_kept=inner_kept,
                      colored=colors is not None, **trimmed, **extra)
    stats.trimmed_area *= normalization.scale ** 2  # unit box -> scan units squared
    if touches:
        log.warning("the surface reaches the edge of the box, so the mesh is open there; "
                    "mesh a larger box with pad=0.2 (siren3d mesh --pad 0.2) or a bbox")
    return MeshResult(vertices, f, vnormals, stats, distance, colors)


def _trim(unit, faces, distance, at_edge, plan, support: ScanSupport, cfg: MeshConfig, offset: float, stats: dict,
          before: float):
    """Cut along ``plan`` (see siren3d.support), then drop the pieces left small (min_component).
    ``before``: the area before trimming (unit box). Returns (unit vertices, faces, support
    distances, box-edge mask, pieces, small pieces dropped, stats for MeshStats).
    """
    unit, faces, distance, edge, new = cut_mesh(unit, faces, plan.value, distance, at_edge.astype(np.float64))
    at_edge = edge >= 1.0  # a cut point lies on the box's face only where both ends of its edge do
    if len(faces) == 0:
        raise Siren3dError(f"trimming removed the whole surface: nowhere is it within {plan.threshold:g} point "
                           f"spacings of the scan; the fit probably failed (check loss.png), or use trim 'off'")
    # The cut may leave bits of surface on their own (near a few points in the middle of an
    # unsupported region): small pieces go, unless they hold scanned surface (a foot seen apart
    # from the body), here: the area of TRIM_PIECE_POINTS scan points or more.
    n, labels = face_components(faces)
    counts = np.bincount(labels, minlength=n)
    small_piece = counts < cfg.min_component * counts.max()
    if small_piece.any():
        sel = small_piece[labels]
        _, j = support.tree.query(unit[faces[sel]].mean(1), workers=-1)
        worth = np.bincount(labels[sel], weights=face_areas(unit, faces[sel]) / support.spacing[j] ** 2.0,
                            minlength=n)
        small_piece &= worth < TRIM_PIECE_POINTS
    small = int(small_piece.sum())
    if small:
        unit, faces, distance, at_edge, new = keep_faces(unit, faces, ~small_piece[labels], distance, at_edge, new)
        n -= small
    distance[new] = support.distance(unit[new], offset=offset)  # their own, not interpolated
    after = float(face_areas(unit, faces).sum())
    stats = {**stats, "trimmed_area": before - after, "trimmed_fraction": (before - after) / before if before else 0.0}
    return unit, faces, distance, at_edge, n, small, stats


def _no_crossing(normalization: Normalization, level: float, unit_level: float, lo: float, hi: float):
    """Raise the error for a field that never reaches the level in the box (lo, hi: its unit-box range)."""
    span = f"min {normalization.distance_to_scan(lo):.4g}, max {normalization.distance_to_scan(hi):.4g} scan units"
    if level == 0:
        where = "positive (outside)" if lo >= 0 else "negative (inside)" if hi <= 0 else "near zero"
        raise Siren3dError(f"the field has no zero crossing in the box: it is everywhere {where} ({span}); "
                           f"the fit probably failed: check loss.png and refit with more steps")
    where = "above" if lo >= unit_level else "below" if hi <= unit_level else "away from"
    raise Siren3dError(f"the field never reaches the level {level:g} in the box: it is everywhere {where} it "
                       f"({span}); use a level between those")


def _field_range(model: Siren, grid: Grid, chunk: int) -> tuple[float, float]:
    """min and max of f on a coarse (at most 64^3) version of ``grid``."""
    step = max(1, int(np.ceil(grid.shape[0] / 64)))
    idx = np.stack(np.meshgrid(*[np.arange(0, n, step) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    f = field_values(model, grid.points(idx), chunk)
    return float(f.min()), float(f.max())


def _check_memory(need_bytes: int, res: int) -> None:
    avail = available_memory()
    if avail is not None and need_bytes > 0.8 * avail:
        raise Siren3dError(
            f"res {res} needs about {need_bytes / 2**30:.1f} GiB but only {avail / 2**30:.1f} GiB is available; "
            f"use a lower res")


def export_mesh(mesh: MeshResult, path: str | Path, *, support_property: bool = False) -> Path:
    """Write the mesh by suffix (PLY, OBJ, STL, OFF, GLB), atomically, with vertex colours where the
    mesh has them (PLY, OBJ, GLB; OFF too) and, with ``support_property``, each vertex's support
    distance as the PLY vertex property SUPPORT_PROPERTY."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise Siren3dError(f"cannot write '{suffix or '(no extension)'}' meshes; use one of "
                           f"{' '.join(EXPORT_SUFFIXES)}", path)
    tm = mesh.to_trimesh(support_property=support_property and suffix == ".ply")
    try:
        with atomic_output(path) as tmp:
            tm.export(tmp, file_type=suffix[1:])
    except OSError as e:
        raise Siren3dError(f"cannot write the mesh ({e.strerror or e})", path) from None
    return path
