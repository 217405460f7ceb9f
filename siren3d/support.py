"""Where the scan has points: the support of a fitted field, and trimming what it does not support.

A fitted field closes every surface, also where the scanner saw nothing (the far side of a single
view). :class:`ScanSupport` keeps the scan points (a seeded subsample, in the unit box), their local
point spacing and their colours, and is stored in ``model.pt``; with it each mesh vertex gets its
*support distance*: how far it is from the nearest scan point, in that point's local spacings.

Trimming (``MeshConfig.trim``) cuts the mesh along the line where the support distance crosses a
threshold, splitting the triangles it passes through (the border follows the line, not the
triangles' staircase), and then drops the bits of surface the cut leaves isolated:

* ``DISTANCE``: every part of the surface farther than DISTANCE spacings from the scan goes.
* ``auto``: only where the scan is *open*. The surface farther than :data:`AUTO_SPACINGS` spacings
  from the scan falls into connected regions. A region that reaches the edge of the meshing box,
  or somewhere goes farther than :data:`AUTO_DEPTH` of the scan's diagonal from every point, is an
  open side: the far side of a single view. Without one, the scan is complete and nothing is
  removed: its holes (the Stanford bunny's open base, the gaps between the points of a sparse
  sample) are smaller and stay closed, and the mesh stays one watertight piece. With one, the
  scan is partial and its mesh open anyway: the open sides go, and so does every other region
  deeper than :data:`AUTO_HOLE_SPACINGS` that bridges a gap in the view (an occlusion shadow: the
  scan points nearest to it lie on the surface elsewhere) or is a piece of its own (a ghost), while
  the gaps between neighbouring points stay closed, and so does surface that is far from its
  points only because the fit did not reach them (in a deep fold: the points nearest to it are not
  on the surface at all).
* ``off``: nothing is removed.

The same support decides which closed shells inside the main surface are fitting artefacts
(:func:`shell_supported`), and gives each vertex a colour from the nearest coloured scan points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Scan points kept in a support (a seeded subsample of larger scans).
MAX_SUPPORT_POINTS = 200_000
#: Neighbours that measure a point's spacing (see :func:`point_spacing`).
SPACING_K = 8
#: auto: surface farther than this many spacings from the scan is unsupported (and where it is cut).
#: On single views (bun045 and a virtual view of the bunny, res 256) 2 left a band along the border
#: that put 0.7 % / 2.1 % of the area farther than 1 % of the diagonal from every point (where the
#: view grazes the surface its points are sparse: spacings 2-3x the median); 1.5 left 0.09 % / 0.3 %,
#: 1 left 0.02 % / 0.01 % but cuts into random-like samples, where exp(-pi) = 4 % of the surface is
#: farther than a spacing from every point (exp(-2.25 pi) = 0.09 % at 1.5).
AUTO_SPACINGS = 1.5
#: auto, where a region goes: its border vertices count as AUTO_SPACINGS farther than this fraction of
#: the scan's diagonal from the nearest point would put them, so the cut moves in toward the scan
#: (within the border's edges: vertices the region does not hold stay). Where a view grazes the
#: surface its points are 2-3x the median spacing apart, and 1.5 of those spacings left a band along
#: the border farther than 1 % of the diagonal from every point: unsupported area 0.10 % / 0.34 % /
#: 0.41 % on bun045 and virtual views of the bunny and Lucy, 0.078 / 0.23 / 0.28 % with this
#: (benchmarks/partial.py). Moving the cut farther in would need growing the region, which eats
#: into sparse scans (4 % of a random sample's surface is farther than a spacing from every point).
AUTO_CUT_DIAGONAL = 0.005
#: auto: an unsupported region that goes farther than this fraction of the scan's bounding-box
#: diagonal from every scan point is an open side of the scan, not a hole in it. The Stanford
#: bunny's largest base hole spans about 7 % of its diagonal, so its cap is 3.7 % deep at most.
AUTO_DEPTH = 0.10
#: auto, on a partial scan: unsupported regions deeper than this many spacings are holes in the view.
AUTO_HOLE_SPACINGS = 4.0
#: auto: a deep region bridges a gap when at least this fraction of the scan points nearest to its
#: deep part lie on the surface (|f| within AUTO_SPACINGS of their spacing).
AUTO_BRIDGE = 0.5
#: A closed shell inside the main surface is kept when at least this fraction of its area is supported.
SHELL_SUPPORTED = 0.5
#: Cut points closer than this fraction of an edge to one of its ends are moved onto that end.
SNAP = 0.2
#: Scan points whose colours are blended into a vertex colour.
COLOR_K = 6


def point_spacing(points: np.ndarray, k: int = SPACING_K) -> np.ndarray:
    """Local point spacing: 1 / sqrt(local density), the spacing of a square grid as dense.

    The density at a point is k / (pi r_k^2), r_k the distance to its k-th nearest other point;
    each point then takes the median over itself and its k neighbours, so a stray point far from
    the others gets the spacing of the surface near it, not a huge one. points: (N, 3) -> (N,) float32.
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    k = int(min(k, len(pts) - 1))
    if k < 1:
        return np.ones(len(pts), dtype=np.float32)
    d, j = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    raw = d[:, -1] * math.sqrt(math.pi / k)
    spacing = np.median(raw[j], axis=1)
    positive = spacing[spacing > 0]
    floor = 1e-3 * float(np.median(positive)) if len(positive) else 1e-9
    return np.maximum(spacing, max(floor, 1e-12)).astype(np.float32)


@dataclass
class ScanSupport:
    """The scan as the mesher needs it: points, their spacing and colours, in the unit box.

    points: (M, 3) float32, unit-box coordinates. spacing: (M,) float32 > 0, unit-box units.
    colors: (M, 3) or (M, 4) uint8 (RGB or RGBA), or None.
    """

    points: np.ndarray
    spacing: np.ndarray
    colors: np.ndarray | None = None
    _tree: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_scan(cls, scan, normalization, *, max_points: int = MAX_SUPPORT_POINTS, seed: int = 0
                  ) -> "ScanSupport":
        """From a :class:`~siren3d.io.Scan` (its ``colors``, if it has them) and the fit's normalization;
        scans with more than ``max_points`` points keep a seeded random subset."""
        points = np.asarray(scan.points)
        colors = getattr(scan, "colors", None)
        keep = None
        if len(points) > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
            points = points[keep]
        unit = normalization.to_unit(points)
        if colors is not None:
            colors = np.asarray(colors)
            if keep is not None:
                colors = colors[keep]
            colors = np.ascontiguousarray(colors, dtype=np.uint8)
        return cls(np.ascontiguousarray(unit, dtype=np.float32), point_spacing(unit), colors)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def diagonal(self) -> float:
        """The bounding-box diagonal of the points (unit-box units)."""
        return float(np.linalg.norm(self.points.max(0) - self.points.min(0)))

    @property
    def tree(self):
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.points)
        return self._tree

    def distance(self, x: np.ndarray, offset: float = 0.0) -> np.ndarray:
        """Support distance of unit-box points x (N, 3): the distance to the nearest scan point, in
        that point's local spacings. ``offset`` (unit box) is subtracted first: the distance of an
        offset surface from the offset of the scan. Returns (N,) float32."""
        return self.nearest(x, offset)[1]

    def nearest(self, x: np.ndarray, offset: float = 0.0, bound: float | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(distance to the nearest scan point (N,) float64, unit box; the support distance (N,)
        float32) of unit-box points x (N, 3). With ``bound``, points farther than it get inf in both:
        the search for far points is what costs (the far side of a single view: 7 s for 120k vertices
        at res 256, 2 s for all 220k with a bound)."""
        if len(x) == 0:
            return np.zeros(0), np.zeros(0, dtype=np.float32)
        d, j = self.tree.query(np.asarray(x, dtype=np.float64), k=1, workers=-1,
                               distance_upper_bound=np.inf if bound is None else bound + offset)
        far = ~np.isfinite(d)
        d = np.maximum(d - offset, 0.0)
        spacing = self.spacing[np.minimum(j, len(self.points) - 1)]
        return d, np.where(far, np.inf, d / spacing).astype(np.float32)

    def bound(self, trim) -> float:
        """How far (unit box) support distances must be exact for ``trim`` ('auto' or spacings) to
        decide what goes: anything farther goes anyway."""
        far = float(self.spacing.max())
        if trim == "auto":
            return 1.01 * max(AUTO_DEPTH * self.diagonal, max(AUTO_HOLE_SPACINGS, AUTO_SPACINGS) * far)
        return 1.01 * float(trim) * far

    def colors_at(self, x: np.ndarray, k: int = COLOR_K) -> np.ndarray | None:
        """Colours (N, C) uint8 at unit-box points x (N, 3): the colours of the k nearest scan points,
        weighted by inverse distance (a point on a scan point takes its colour). None without colours."""
        if self.colors is None:
            return None
        if len(x) == 0:
            return np.zeros((0, self.colors.shape[1]), dtype=np.uint8)
        k = int(min(k, len(self.points)))
        d, j = self.tree.query(np.asarray(x, dtype=np.float64), k=k, workers=-1)
        d, j = d.reshape(len(x), k), j.reshape(len(x), k)
        w = 1.0 / np.maximum(d, 1e-3 * self.spacing[j])
        w /= w.sum(1, keepdims=True)
        blended = np.einsum("nk,nkc->nc", w, self.colors[j].astype(np.float64))
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8)

    # -- storage in model.pt: plain tensors ------------------------------------------------

    def to_tensors(self) -> dict:
        import torch

        out = {"points": torch.from_numpy(np.ascontiguousarray(self.points, dtype=np.float32)),
               "spacing": torch.from_numpy(np.ascontiguousarray(self.spacing, dtype=np.float32))}
        if self.colors is not None:
            out["colors"] = torch.from_numpy(np.ascontiguousarray(self.colors, dtype=np.uint8))
        return out

    @classmethod
    def from_tensors(cls, data) -> "ScanSupport":
        """From :meth:`to_tensors` output, checked (ValueError says what is wrong)."""
        import torch

        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise ValueError("it is not a set of tensors")
        unknown = sorted(set(data) - {"points", "spacing", "colors"})
        if unknown or "points" not in data or "spacing" not in data:
            raise ValueError("it needs 'points' and 'spacing'" + (f", not {', '.join(unknown)}" if unknown else ""))
        points, spacing, colors = data["points"], data["spacing"], data.get("colors")
        m = points.shape[0] if points.dim() == 2 else -1
        if points.dim() != 2 or points.shape[1] != 3 or m < 1 or points.dtype != torch.float32:
            raise ValueError(f"points must be (M, 3) float32, not {tuple(points.shape)} {points.dtype}")
        if m > 10 * MAX_SUPPORT_POINTS:
            raise ValueError(f"{m:,} points is implausibly many")
        if tuple(spacing.shape) != (m,) or spacing.dtype != torch.float32:
            raise ValueError(f"spacing must be ({m},) float32, not {tuple(spacing.shape)} {spacing.dtype}")
        if not torch.isfinite(points).all() or not (torch.isfinite(spacing) & (spacing > 0)).all():
            raise ValueError("points or spacings are NaN/Inf, or spacings not positive")
        if colors is not None and (colors.dim() != 2 or colors.shape[0] != m or colors.shape[1] not in (3, 4)
                                   or colors.dtype != torch.uint8):
            raise ValueError(f"colors must be ({m}, 3|4) uint8, not {tuple(colors.shape)} {colors.dtype}")
        return cls(points.numpy().copy(), spacing.numpy().copy(), None if colors is None else colors.numpy().copy())


# --------------------------------------------------------------------------------------------
# Trimming


def _edge_index(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique edges (E, 2) sorted per row, face edge -> edge index (F, 3)); face edge i joins
    corners i and i+1."""
    e = np.stack([faces, np.roll(faces, -1, axis=1)], -1).reshape(-1, 2)
    e = np.sort(e, axis=1)
    span = int(faces.max()) + 1 if len(faces) else 1
    keys, first, inverse = np.unique(e[:, 0] * span + e[:, 1], return_index=True, return_inverse=True)
    return e[first], inverse.reshape(len(faces), 3)


def unsupported_regions(faces: np.ndarray, outside: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected regions of the ``outside`` vertices (V,) bool, joined by mesh edges.

    Returns (count, label per vertex (V,), -1 where not outside)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = np.full(len(outside), -1, dtype=np.int64)
    idx = np.flatnonzero(outside)
    if len(idx) == 0:
        return 0, labels
    local = np.full(len(outside), -1, dtype=np.int64)
    local[idx] = np.arange(len(idx))
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = e[outside[e[:, 0]] & outside[e[:, 1]]]
    graph = coo_matrix((np.ones(len(e), dtype=np.int8), (local[e[:, 0]], local[e[:, 1]])),
                       shape=(len(idx), len(idx)))
    count, lab = connected_components(graph, directed=False)
    labels[idx] = lab
    return int(count), labels


@dataclass
class TrimPlan:
    """What to cut: the cut value per vertex (cut where it crosses 0; > 0 goes) and what was decided."""

    value: np.ndarray        # (V,) float64
    regions: int = 0         # unsupported regions found
    trimmed_regions: int = 0  # of which removed
    threshold: float = 0.0   # the cut's support distance, spacings


def plan_trim(vertices: np.ndarray, faces: np.ndarray, distance: np.ndarray, trim, support: ScanSupport,
              at_box_edge: np.ndarray | None = None, offset: float = 0.0, absolute: np.ndarray | None = None,
              field=None, pieces=None) -> TrimPlan:
    """Decide what ``trim`` ('auto' or a distance in spacings) removes from a mesh.

    vertices: (V, 3) unit box; distance: (V,) support distances (inf: beyond support.bound(trim));
    at_box_edge: (V,) bool, vertices on the meshing box's faces (auto removes every unsupported
    region that reaches them); offset: see ScanSupport.distance; absolute: (V,) the distances in
    unit-box units, if known (ScanSupport.nearest); field: f at unit-box points (M, 3) -> (M,), to
    tell a gap in the view from surface the fit did not bring to its points (None: every deep
    region of a partial scan is a gap); pieces: the mesh's :class:`~siren3d.topology.Pieces`, if known.
    """
    distance = np.minimum(np.asarray(distance, dtype=np.float64), 1e9)  # inf: far, as far as it matters
    if trim != "auto":
        t = float(trim)
        outside = distance > t
        n, _ = unsupported_regions(faces, outside)
        return TrimPlan(distance - t, n, n, t)
    t = AUTO_SPACINGS
    outside = distance > t
    n, labels = unsupported_regions(faces, outside)
    value = np.minimum(distance - t, 0.0)  # nothing goes unless its region does
    if n == 0:
        return TrimPlan(value, 0, 0, t)
    # How far each region gets from the scan, in unit-box units (the distance itself, not in spacings).
    inside = labels >= 0
    if absolute is not None:
        far = np.asarray(absolute, dtype=np.float64)
    else:
        far = np.zeros(len(vertices))
        far[inside] = support.nearest(vertices[inside], offset)[0]
    depth = np.zeros(n)
    np.maximum.at(depth, labels[inside], far[inside])
    open_side = depth > AUTO_DEPTH * support.diagonal
    if at_box_edge is not None and at_box_edge.any():
        open_side[np.unique(labels[at_box_edge & inside])] = True
    # Only surface attached to scanned surface makes the scan open: a piece of its own with no
    # scan point near it (a ghost) says nothing about the scan.
    if pieces is None:
        from .topology import mesh_pieces

        pieces = mesh_pieces(faces)
    piece_of_face = pieces.labels
    piece = np.zeros(len(vertices), dtype=np.int64)
    piece[faces.ravel()] = np.repeat(piece_of_face, 3)
    attached = np.zeros(piece_of_face.max() + 1, dtype=bool)
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    attached[piece[~outside & used]] = True
    region_piece = np.zeros(n, dtype=np.int64)
    region_piece[labels[inside]] = piece[inside]
    detached = ~attached[region_piece]
    open_side &= ~detached
    remove = open_side.copy()
    if open_side.any():  # a partial scan: holes in the view go too, gaps between points stay
        spacings = np.zeros(n)
        np.maximum.at(spacings, labels[inside], distance[inside])
        deep = ~open_side & (spacings > AUTO_HOLE_SPACINGS)
        if field is not None and deep.any():
            # a fold the fit did not bring to its points is part of scanned surface; a deep piece
            # of its own is a ghost, whatever the points nearest to it say
            deep &= _bridges(vertices, distance, labels, deep, support, field) | detached
        remove |= deep
    go = inside & remove[np.maximum(labels, 0)]
    # the cut: t spacings, or AUTO_CUT_DIAGONAL of the diagonal where that is nearer (spacings there
    # are far / distance: the nearest point's own), on the region's own vertices
    cap = AUTO_CUT_DIAGONAL * support.diagonal
    with np.errstate(divide="ignore", invalid="ignore"):
        t_here = np.where(far[go] > 0, np.minimum(t, cap * distance[go] / far[go]), t)
    value[go] = distance[go] - t_here
    return TrimPlan(value, n, int(remove.sum()), t)


def _bridges(vertices, distance, labels, candidates, support: ScanSupport, field) -> np.ndarray:
    """Which candidate regions bridge a gap in the view: the scan points nearest to their deep part
    (farther than halfway to AUTO_HOLE_SPACINGS) lie on the surface, so the scan is represented
    elsewhere and this surface stands where nothing was seen. Returns (regions,) bool."""
    halfway = (AUTO_SPACINGS + AUTO_HOLE_SPACINGS) / 2
    sel = (labels >= 0) & candidates[np.maximum(labels, 0)] & (distance > halfway)
    out = np.zeros(len(candidates), dtype=bool)
    if not sel.any():
        return out
    _, j = support.tree.query(np.asarray(vertices[sel], dtype=np.float64), workers=-1)
    region = labels[sel]
    pairs = np.unique(np.stack([region, j], 1), axis=0)  # each region's nearest points, once
    f = np.asarray(field(support.points[pairs[:, 1]].astype(np.float64)), dtype=np.float64).reshape(-1)
    on = np.abs(f) <= AUTO_SPACINGS * support.spacing[pairs[:, 1]]
    share = np.bincount(pairs[:, 0], weights=on, minlength=len(out)) / np.maximum(
        np.bincount(pairs[:, 0], minlength=len(out)), 1)
    out[:] = share >= AUTO_BRIDGE
    return out


def cut_mesh(vertices: np.ndarray, faces: np.ndarray, value: np.ndarray, *extra):
    """Keep the part of the mesh where the vertex-linear ``value`` <= 0, cutting triangles along 0.

    Cut points within SNAP of an edge's end are moved onto that end (the vertex then lies on the
    cut), so no sliver triangles are made; a cut quad is split along its shorter diagonal; faces
    keep their winding. ``extra``: per-vertex float arrays (or None) interpolated to the cut points.
    Returns (vertices, faces, *extra, new vertex mask (V',) bool).
    """
    value = np.asarray(value, dtype=np.float64).copy()
    faces = np.asarray(faces, dtype=np.int64)
    nv = len(vertices)
    edges, fe = _edge_index(faces)
    a, b = value[edges[:, 0]], value[edges[:, 1]]
    cross = (a <= 0) != (b <= 0)
    # Snap: where a crossing lies within SNAP of an end, that end is put on the cut (value 0).
    t = np.where(cross, a / np.where(cross, a - b, 1.0), 0.5)  # position of the crossing from end 0
    near0 = cross & (t < SNAP)
    near1 = cross & (t > 1 - SNAP)
    value[edges[near0, 0]] = 0.0
    value[edges[near1, 1]] = 0.0
    out = value > 0
    a, b = value[edges[:, 0]], value[edges[:, 1]]
    cross = (a < 0) & (b > 0) | (a > 0) & (b < 0)  # strict: a vertex at 0 is on the cut already
    t = np.where(cross, a / np.where(cross, a - b, 1.0), 0.0)
    # The cut point of each crossing edge: a new vertex.
    new_id = np.full(len(edges), -1, dtype=np.int64)
    new_id[cross] = nv + np.arange(int(cross.sum()))
    e0, e1, tc = edges[cross, 0], edges[cross, 1], t[cross][:, None]  # tc: from e0 towards e1

    def interp(arr):
        if arr is None:
            return None
        arr = np.asarray(arr)
        w = tc if arr.ndim > 1 else tc[:, 0]
        mid = arr[e0] * (1 - w) + arr[e1] * w
        return np.concatenate([arr, mid.astype(arr.dtype, copy=False)])

    verts = interp(np.asarray(vertices, dtype=np.float64))
    extra = tuple(interp(x) for x in extra)

    fo = out[faces]
    nout = fo.sum(1)
    keep_whole = faces[nout == 0]
    pieces = [keep_whole]
    # One vertex out: rotate so it is corner 2, keeping the winding (c0, c1, c2).
    for count in (1, 2):
        sel = np.flatnonzero(nout == count)
        if not len(sel):
            continue
        f, fedge = faces[sel], fe[sel]
        odd = fo[sel] if count == 1 else ~fo[sel]  # the corner that differs from the other two
        r = np.argmax(odd, axis=1)  # rotate so the odd corner is corner 2
        shift = (r + 1) % 3
        rows = np.arange(len(sel))[:, None]
        order = (np.arange(3)[None, :] + shift[:, None]) % 3
        f = f[rows, order]
        fedge = fedge[rows, order]  # face edge i joins corners i, i+1 (rotated alike)
        c0, c1, c2 = f[:, 0], f[:, 1], f[:, 2]
        p12 = new_id[fedge[:, 1]]  # cut on edge c1-c2 (-1: none, a corner is on the cut)
        p20 = new_id[fedge[:, 2]]  # cut on edge c2-c0
        if count == 1:  # c2 out: keep c0, c1 and the cut
            both = (p12 >= 0) & (p20 >= 0)
            # quad c0 c1 p12 p20: split along the shorter diagonal
            d1 = np.linalg.norm(verts[c0] - verts[np.maximum(p12, 0)], axis=1)
            d2 = np.linalg.norm(verts[c1] - verts[np.maximum(p20, 0)], axis=1)
            short0 = both & (d1 <= d2)
            short1 = both & (d1 > d2)
            pieces += [np.stack([c0[short0], c1[short0], p12[short0]], 1),
                       np.stack([c0[short0], p12[short0], p20[short0]], 1),
                       np.stack([c0[short1], c1[short1], p20[short1]], 1),
                       np.stack([c1[short1], p12[short1], p20[short1]], 1)]
            only12 = (p12 >= 0) & (p20 < 0)  # c0 on the cut: triangle c0 c1 p12
            only20 = (p20 >= 0) & (p12 < 0)  # c1 on the cut: triangle c0 c1 p20
            pieces += [np.stack([c0[only12], c1[only12], p12[only12]], 1),
                       np.stack([c0[only20], c1[only20], p20[only20]], 1)]
        else:  # c2 in, c0 and c1 out: keep c2 and the two cut points
            both = (p12 >= 0) & (p20 >= 0)
            pieces.append(np.stack([p20[both], p12[both], c2[both]], 1))
    new_faces = np.concatenate([p.reshape(-1, 3) for p in pieces]).astype(np.int64)
    # Drop unused vertices (the cut-away ones).
    used = np.zeros(len(verts), dtype=bool)
    used[new_faces.ravel()] = True
    remap = np.cumsum(used) - 1
    is_new = np.arange(len(verts)) >= nv
    return (verts[used], remap[new_faces], *(None if x is None else x[used] for x in extra), is_new[used])


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def shell_supported(vertices: np.ndarray, faces: np.ndarray, support: ScanSupport,
                    spacings: float = AUTO_SPACINGS, offset: float = 0.0) -> bool:
    """Whether at least SHELL_SUPPORTED of a piece's area lies within ``spacings`` of the scan.
    vertices: unit box; offset: see ScanSupport.distance."""
    area = face_areas(vertices, faces)
    if area.sum() <= 0:
        return False
    # exact only as far as the test needs: a search from deep inside a closed surface is slow
    _, distance = support.nearest(np.asarray(vertices)[faces].mean(1), offset, bound=support.bound(spacings))
    near = distance <= spacings
    return bool(area[near].sum() >= SHELL_SUPPORTED * area.sum())
