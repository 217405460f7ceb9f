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

Afterwards, optionally: Newton steps move each vertex onto the level set along grad f (``refine``),
vertex normals come from grad f, and small disconnected pieces are dropped (``min_component``).
Faces are oriented outward (the field is negative inside).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import Siren3dError
from .io import atomic_output
from .model import Siren
from .training import available_memory
from .normalization import Normalization

log = logging.getLogger(__name__)

BACKENDS = ("mcubes", "skimage")
METHODS = ("sparse", "dense")
EXPORT_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb")
#: Points per network call when evaluating a grid.
DEFAULT_CHUNK = 65536
#: Cells per side of the finest sparse blocks (marching cubes runs per block).
DEFAULT_BLOCK = 4
#: Keep a region if |f(centre) - level| <= safety * reach. The surface-following growth repairs what a
#: small factor misses: on the sample at res 256 (benchmarks/mesh.py) factors 0.25-1.0 all gave the
#: dense faces exactly. 0.5 evaluates ~7% fewer points but its extra growth rounds measured slower
#: (res 512: 18.2 s vs 15.1 s), so 1.0.
DEFAULT_SAFETY = 1.0
#: Pieces with fewer faces than this fraction of the largest piece are dropped.
DEFAULT_MIN_COMPONENT = 0.02
#: Newton steps per vertex onto the level set. Off: on fitted scans they did not change the Chamfer
#: distance (bunny, res 128 and 512: 0.001410 vs 0.001409 of the diagonal), and cost 1-2 s per step at 512.
DEFAULT_REFINE = 0
#: Field values this close to the level (in cells) count as just outside it (see marching_cubes).
SNAP = 1e-4
#: The finest grid the vertex-merging keys can address.
MAX_RES = 2048


@dataclass
class MeshResult:
    vertices: np.ndarray  # (V, 3) float64, scan coordinates
    faces: np.ndarray     # (F, 3) int64, outward
    normals: np.ndarray | None = None  # (V, 3) float64 unit vertex normals from grad f
    stats: dict = field(default_factory=dict)

    def to_trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, vertex_normals=self.normals, process=False)


@dataclass(frozen=True)
class Grid:
    """A regular grid in unit-box coordinates: sample (i, j, k) sits at lo + h * (i, j, k)."""

    lo: tuple[float, float, float]
    h: float
    shape: tuple[int, int, int]  # samples per axis

    @classmethod
    def cube(cls, res: int, pad: float = 0.0) -> "Grid":
        """``res`` samples per axis over [-1 - pad, 1 + pad]^3."""
        a = 1.0 + pad
        return cls((-a, -a, -a), 2 * a / (res - 1), (res, res, res))

    @classmethod
    def box(cls, lo, hi, res: int) -> "Grid":
        """``res`` samples along the longest side of the box [lo, hi] (unit coordinates)."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        ext = hi - lo
        h = float(ext.max()) / (res - 1)
        shape = tuple(int(max(2, math.ceil(e / h - 1e-9) + 1)) for e in ext)
        return cls(tuple(float(v) for v in lo), h, shape)

    @property
    def cells(self) -> np.ndarray:
        return np.asarray(self.shape, dtype=np.int64) - 1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def points(self, index: np.ndarray) -> np.ndarray:
        """(M, 3) integer sample indices (or fractional index coordinates) -> unit coordinates."""
        return np.asarray(self.lo) + self.h * np.asarray(index, dtype=np.float64)


def grid_axis(res: int) -> np.ndarray:
    """The sample positions along one axis of the unit box: (res,) float64, exact endpoints."""
    return -1.0 + 2.0 * np.arange(res, dtype=np.float64) / (res - 1)


@torch.no_grad()
def evaluate(model: Siren, points: np.ndarray | torch.Tensor, chunk: int = DEFAULT_CHUNK,
             device: str | torch.device | None = None) -> np.ndarray:
    """f at unit-box points, in chunks. points: (N, 3) -> (N,) float32."""
    device = device or next(model.parameters()).device
    f = model.evaluator()
    pts = torch.as_tensor(points, dtype=torch.float32)
    out = np.empty(len(pts), dtype=np.float32)
    for i in range(0, len(pts), chunk):
        out[i:i + chunk] = f(pts[i:i + chunk].to(device)).float().cpu().numpy()
    return out


def evaluate_with_grad(model: Siren, points: np.ndarray, chunk: int = DEFAULT_CHUNK
                       ) -> tuple[np.ndarray, np.ndarray]:
    """f and grad f at unit-box points: (N, 3) -> ((N,) float64, (N, 3) float64)."""
    device = next(model.parameters()).device
    fg = model.grad_evaluator()
    f_out = np.empty(len(points), dtype=np.float64)
    g_out = np.empty((len(points), 3), dtype=np.float64)
    with torch.no_grad():
        for i in range(0, len(points), chunk):
            x = torch.as_tensor(points[i:i + chunk], dtype=torch.float32, device=device)
            f, g = fg(x)
            f_out[i:i + chunk] = f.double().cpu().numpy()
            g_out[i:i + chunk] = g.double().cpu().numpy()
    return f_out, g_out


@torch.no_grad()
def dense_grid(model: Siren, res: int, chunk: int = DEFAULT_CHUNK, grid: Grid | None = None) -> np.ndarray:
    """f on every sample of ``grid`` (default: res^3 over the unit box), float32 indexed [ix, iy, iz]."""
    grid = grid or Grid.cube(res)
    nx, ny, nz = grid.shape
    axes = [torch.as_tensor(grid.lo[a] + grid.h * np.arange(n), dtype=torch.float32)
            for a, n in enumerate(grid.shape)]
    vol = np.empty(grid.shape, dtype=np.float32)
    yy, zz = torch.meshgrid(axes[1], axes[2], indexing="ij")
    plane = torch.stack([torch.zeros_like(yy), yy, zz], dim=-1).reshape(-1, 3)
    for ix in range(nx):
        plane[:, 0] = axes[0][ix]
        vol[ix] = evaluate(model, plane, chunk).reshape(ny, nz)
    return vol


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
        raise Siren3dError(f"unknown marching cubes backend '{backend}'; choose from {', '.join(BACKENDS)}")
    return np.asarray(v, dtype=np.float64).reshape(-1, 3), f


# --------------------------------------------------------------------------------------------
# Sparse, coarse-to-fine sampling


def _progress(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pt", unit_scale=True, leave=False, disable=not progress,
                dynamic_ncols=True)


def active_blocks(model: Siren, grid: Grid, level: float = 0.0, *, block: int = DEFAULT_BLOCK,
                  safety: float = DEFAULT_SAFETY, chunk: int = DEFAULT_CHUNK, progress: bool = False
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
            f = evaluate(model, centres, chunk).astype(np.float64)
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
                values = evaluate(model, grid.points(np.stack(np.unravel_index(uniq, tuple(shape)), -1)), chunk)
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
    f, g = evaluate_with_grad(model, x, chunk)
    before = np.abs(f - level)
    for _ in range(steps):
        gg = np.maximum((g * g).sum(1), 1e-12)
        step = ((f - level) / gg)[:, None] * g
        length = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, max_step / np.maximum(length, 1e-30))
        x -= step
        f, g = evaluate_with_grad(model, x, chunk)
    after = np.abs(f - level)
    normals = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    stats = {"before_mean": float(before.mean()), "before_max": float(before.max()),
             "after_mean": float(after.mean()), "after_max": float(after.max())}
    return x, normals, stats


def connected_components(faces: np.ndarray, n_vertices: int) -> tuple[int, np.ndarray]:
    """(count, label per vertex) of the pieces connected through faces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    if len(faces) == 0:
        return 0, np.zeros(n_vertices, dtype=np.int64)
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n_vertices, n_vertices))
    return cc(graph, directed=False)


def drop_small_components(vertices: np.ndarray, faces: np.ndarray, min_fraction: float,
                          normals: np.ndarray | None = None):
    """Keep the pieces with at least ``min_fraction`` of the largest piece's faces.

    Returns (vertices, faces, normals, pieces kept, pieces dropped).
    """
    n, labels = connected_components(faces, len(vertices))
    if n <= 1 or min_fraction <= 0:
        return vertices, faces, normals, n, 0
    face_label = labels[faces[:, 0]]
    counts = np.bincount(face_label, minlength=n)
    keep_label = counts >= min_fraction * counts.max()
    keep_face = keep_label[face_label]
    faces = faces[keep_face]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    normals = normals[used] if normals is not None else None
    kept = int(keep_label[np.unique(labels[used])].sum()) if used.any() else 0
    return vertices[used], remap[faces], normals, kept, int(n - kept - (counts == 0).sum())


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


def drop_inner_shells(vertices: np.ndarray, faces: np.ndarray, max_tested: int = 20):
    """Drop closed pieces that lie inside the largest piece: a scanner cannot see inside an object,
    so a shell there is a fitting artefact (a pocket of the wrong sign), never scanned surface.

    A piece is inside when rays from one of its vertices cross the largest piece an odd number of
    times (majority of three rays). Only the ``max_tested`` largest other pieces are tested.
    Returns (vertices, faces, pieces dropped).
    """
    n, labels = connected_components(faces, len(vertices))
    if n <= 1:
        return vertices, faces, 0
    face_label = labels[faces[:, 0]]
    counts = np.bincount(face_label, minlength=n)
    order = np.argsort(-counts)
    main = order[0]
    tri = np.asarray(vertices, dtype=np.float64)[faces[face_label == main]]
    inner = []
    for c in order[1:1 + max_tested]:
        if counts[c] == 0:
            break
        origin = np.asarray(vertices[faces[np.argmax(face_label == c), 0]], dtype=np.float64)
        odd = sum(_ray_crossings(origin, d / np.linalg.norm(d), tri) % 2 for d in _RAYS)
        if odd >= 2:
            inner.append(c)
    if not inner:
        return vertices, faces, 0
    faces = faces[~np.isin(face_label, inner)]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces], len(inner)


def is_watertight(faces: np.ndarray) -> bool:
    """Every edge is shared by exactly two faces (and there is at least one face)."""
    if len(faces) == 0:
        return False
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    key = e[:, 0] * (int(faces.max()) + 1) + e[:, 1]
    _, counts = np.unique(key, return_counts=True)
    return bool((counts == 2).all())


# --------------------------------------------------------------------------------------------


def estimate_memory(res: int, method: str, active_blocks: int | None = None, block: int = DEFAULT_BLOCK) -> int:
    """Bytes the extraction needs at its peak (a conservative estimate)."""
    if method == "dense":
        faces = 6 * res ** 2 * 4  # a busy surface: a few times the box's area in cells
        return res ** 3 * 4 * 3 + faces * 150
    blocks = active_blocks if active_blocks is not None else 6 * (res // block + 1) ** 2 * 4
    faces = blocks * 3 * block ** 2  # about 3 faces per surface cell, a block's face of cells
    # per face: vertices/normals/faces in float64 and int64, the merge keys, trimesh's copies
    return int(faces * 150 + 2 ** 20 * 100)


def extract_mesh(model: Siren, normalization: Normalization, res: int = 256, *, backend: str = "mcubes",
                 level: float = 0.0, method: str = "sparse", block: int = DEFAULT_BLOCK,
                 safety: float = DEFAULT_SAFETY, refine: int = 0, min_component: float = 0.0,
                 drop_inner: bool = False,
                 pad: float = 0.0, bbox: tuple | None = None, normals: bool = True,
                 chunk: int = DEFAULT_CHUNK, progress: bool = False) -> MeshResult:
    """The ``level`` set (scan units; 0: the surface) of ``model`` as a mesh in scan coordinates.

    ``refine``: Newton steps per vertex onto the level set; ``min_component``: drop pieces smaller
    than this fraction of the largest; ``drop_inner``: drop closed pieces inside the largest one
    (see drop_inner_shells); ``pad``: grow the unit box by this much on every side;
    ``bbox``: (xmin, ymin, zmin, xmax, ymax, zmax) in scan units instead of the unit box.
    """
    if res < 8:
        raise Siren3dError(f"--res {res} is too small; use at least 8")
    if res > MAX_RES:
        raise Siren3dError(f"--res {res} is above the largest supported resolution, {MAX_RES}: a {res}^3 grid "
                           f"is {res ** 3 / 1e9:.0f} billion samples, {res ** 3 * 4 / 2 ** 30:.0f} GiB as float32")
    if backend not in BACKENDS:
        raise Siren3dError(f"unknown marching cubes backend '{backend}'; choose from {', '.join(BACKENDS)}")
    if method not in METHODS:
        raise Siren3dError(f"unknown extraction method '{method}'; choose from {', '.join(METHODS)}")
    if bbox is not None:
        b = np.asarray(bbox, dtype=np.float64).reshape(2, 3)
        if not (np.isfinite(b).all() and (b[1] > b[0]).all()):
            raise Siren3dError(f"--bbox must be xmin,ymin,zmin,xmax,ymax,zmax with max > min, got {tuple(bbox)}")
        grid = Grid.box(normalization.to_unit(b[:1])[0], normalization.to_unit(b[1:])[0], res)
    else:
        if not (0 <= pad <= 10):
            raise Siren3dError(f"--pad must be between 0 and 10 (a fraction of the box), got {pad}")
        grid = Grid.cube(res, pad)
    _check_memory(estimate_memory(res, method, block=block), res)
    t0 = time.perf_counter()
    model.eval()
    unit_level = level / normalization.scale
    snap = SNAP * grid.h
    stats = {"res": res, "backend": backend, "method": method, "dense_evaluations": grid.size}

    if method == "dense":
        vol = dense_grid(model, res, chunk, grid)
        v, f = marching_cubes(vol, unit_level, backend, snap)  # empty where there is no crossing
        field_range = (float(vol.min()), float(vol.max()))
        stats["evaluations"] = grid.size
    else:
        origins, sstats = active_blocks(model, grid, unit_level, block=block, safety=safety, chunk=chunk,
                                        progress=progress)
        _check_memory(estimate_memory(res, method, len(origins), block), res)
        v, f, bstats = _block_mesh(model, grid, origins, unit_level, block, backend, chunk, progress, snap)
        stats.update(evaluations=bstats["block_evaluations"] + sstats["coarse_evaluations"],
                     blocks=bstats["blocks"], grown_blocks=bstats["grown_blocks"], safety=safety)
    if len(f) == 0:
        lo, hi = field_range if method == "dense" else _field_range(model, grid, chunk)
        span = (f"min {normalization.distance_to_scan(lo):.4g}, max {normalization.distance_to_scan(hi):.4g} "
                f"scan units")
        if level == 0:
            where = "positive (outside)" if lo >= 0 else "negative (inside)" if hi <= 0 else "near zero"
            raise Siren3dError(f"the field has no zero crossing in the box: it is everywhere {where} ({span}); "
                               f"the fit probably failed: check loss.png and refit with more --steps")
        where = "above" if lo >= unit_level else "below" if hi <= unit_level else "away from"
        raise Siren3dError(f"the field never reaches the level {level:g} in the box: it is everywhere {where} it "
                           f"({span}); use a --level between those")
    # Small pieces go first (a question of faces alone), so that neither the box-edge warning
    # nor the gradient pass below is spent on vertices that will not be written.
    v, f, _, kept, dropped = drop_small_components(v, f, min_component)
    inner = 0
    if drop_inner and kept > 1:
        v, f, inner = drop_inner_shells(v, f)
        kept -= inner
    touches = bool(((v <= 1e-9) | (v >= grid.cells - 1e-9)).any())
    unit = grid.points(v)

    vnormals = None
    if refine or normals:
        unit, vnormals, rstats = refine_vertices(model, unit, unit_level, refine, max_step=grid.h, chunk=chunk)
        to_scan = normalization.distance_to_scan
        stats["level_error"] = {k: to_scan(val) for k, val in rstats.items()} if refine else {
            "before_mean": to_scan(rstats["before_mean"]), "before_max": to_scan(rstats["before_max"])}
    vertices = normalization.to_scan(unit)
    stats.update(seconds=time.perf_counter() - t0, vertices=len(vertices), faces=len(f), components=kept,
                 dropped_components=dropped, inner_shells_dropped=inner, watertight=is_watertight(f),
                 touches_box=touches)
    if touches:
        log.warning("the surface reaches the edge of the box, so the mesh is open there; "
                    "mesh a larger box with --pad 0.2 (or --bbox)")
    return MeshResult(vertices, f, vnormals, stats)


def _field_range(model: Siren, grid: Grid, chunk: int) -> tuple[float, float]:
    """min and max of f on a coarse (at most 64^3) version of ``grid``."""
    step = max(1, int(np.ceil(grid.shape[0] / 64)))
    idx = np.stack(np.meshgrid(*[np.arange(0, n, step) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    f = evaluate(model, grid.points(idx), chunk)
    return float(f.min()), float(f.max())


def _check_memory(need_bytes: int, res: int) -> None:
    avail = available_memory()
    if avail is not None and need_bytes > 0.8 * avail:
        raise Siren3dError(
            f"--res {res} needs about {need_bytes / 2**30:.1f} GiB but only {avail / 2**30:.1f} GiB is available; "
            f"use a lower --res")


def export_mesh(mesh: MeshResult, path: str | Path) -> Path:
    """Write the mesh by suffix (PLY, OBJ, STL, OFF, GLB), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise Siren3dError(f"cannot write '{suffix or '(no extension)'}' meshes; use one of "
                           f"{' '.join(EXPORT_SUFFIXES)}", path)
    tm = mesh.to_trimesh()
    try:
        with atomic_output(path) as tmp:
            tm.export(tmp, file_type=suffix[1:])
    except OSError as e:
        raise Siren3dError(f"cannot write the mesh ({e.strerror or e})", path) from None
    return path
