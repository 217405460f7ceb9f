"""Meshes beside their reference, rendered offscreen with one camera: what a user looks at first.

:func:`render_case` writes two PNGs: the whole shape (reference and each mesh side by side, the same
camera in every panel), and a close-up of the region where the first mesh is farthest from the
reference (the mean distance from reference samples to it, over patches ``closeup`` of the
diagonal wide, outlined in red on the whole view; when there is no such mesh, the region of the
reference that bends most), and a third, ``-detail.png``, of the region of the reference that bends
most (its most varied normals: the finest detail, whatever the meshes did there). A close-up looks halfway between the whole view's direction and the
patch's mean normal, or along another nearby direction from which nothing stands between the
camera and the patch. ``benchmarks/quality.py --render`` calls it for every
case; on its own it renders meshes already on disk:

    python benchmarks/side_by_side.py REFERENCE MESH [MESH ...] -o out.png [--labels ref siren poisson]
        [--size 400] [--closeup 0.12]

References may be meshes or point clouds (drawn as points). PyVista draws offscreen with the
system's Mesa (see siren3d.viewer.render and .ci/bootstrap).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

#: Views by reference name: (direction from the shape's centre to the camera, up). Others: DEFAULT_VIEW.
VIEWS = {
    "bunny": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "bun045": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "lucy": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "gargoyle_scan": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "dragon": ((0.0, 0.3, 1.0), (0.0, 1.0, 0.0)),
}
DEFAULT_VIEW = ((1.0, -1.6, 0.9), (0.0, 0.0, 1.0))
VIEW_ANGLE = 30.0  # degrees, vertical
COLOR = "#d8d8d8"
SAMPLES = 60_000


def _surface(obj):
    """A pyvista.PolyData from a mesh file, a trimesh, or a point cloud (anything with ``points``)."""
    import pyvista as pv

    if isinstance(obj, (str, Path)):
        return pv.read(str(obj))
    if hasattr(obj, "faces") and len(obj.faces):
        faces = np.asarray(obj.faces, dtype=np.int64)
        return pv.PolyData(np.asarray(obj.vertices, dtype=np.float64),
                           np.hstack([np.full((len(faces), 1), 3), faces]).ravel())
    return pv.PolyData(np.asarray(obj.points, dtype=np.float64))


def _samples(obj, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, 3) and unit normals (n, 3) on a mesh (area-weighted) or of a point cloud."""
    from siren3d.io import sample_mesh_surface

    if isinstance(obj, (str, Path)):
        from siren3d.metrics import load_mesh

        obj = load_mesh(obj)
    if hasattr(obj, "faces") and len(obj.faces):
        p, n, _ = sample_mesh_surface(np.asarray(obj.vertices, dtype=np.float64),
                                      np.asarray(obj.faces, dtype=np.int64), count, seed=seed)
        return p, n
    pts, nrm = np.asarray(obj.points, dtype=np.float64), np.asarray(obj.normals, dtype=np.float64)
    keep = np.random.default_rng(seed).choice(len(pts), min(count, len(pts)), replace=False)
    return pts[keep], nrm[keep]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _camera(focus, direction, up, distance) -> list:
    """A pyvista camera position [(position), (focal point), (view up)] with ``up`` made orthogonal."""
    d = _unit(direction)
    up = np.asarray(up, dtype=np.float64)
    up = up - d * (up @ d)
    if np.linalg.norm(up) < 1e-6:  # looking along the up axis: any perpendicular will do
        up = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
    focus = np.asarray(focus, dtype=np.float64)
    return [tuple(focus + d * distance), tuple(focus), tuple(_unit(up))]


def whole_view(ref_points: np.ndarray, name: str) -> list:
    """The camera that frames the whole reference, from its named or the default direction: the
    points' extent across the view fills about 90 % of the panel."""
    direction, up = VIEWS.get(name, DEFAULT_VIEW)
    lo, hi = ref_points.min(0), ref_points.max(0)
    centre = (lo + hi) / 2
    position, _, up = _camera(centre, direction, up, 1.0)
    d = np.subtract(position, centre)
    right = np.cross(d, up)
    rel = ref_points - centre
    half = max(np.abs(rel @ right).max(), np.abs(rel @ np.asarray(up)).max())
    depth = np.abs(rel @ d).max()  # the nearest points are that much closer: they look larger
    return _camera(centre, direction, up, 0.5 * depth + 1.1 * half / math.tan(math.radians(VIEW_ANGLE / 2)))


def closeup_region(ref_pts: np.ndarray, ref_nrm: np.ndarray, mesh_pts: np.ndarray | None,
                   width: float) -> tuple[np.ndarray, np.ndarray, str]:
    """(centre (3,), mean outward normal (3,), why) of the patch ``width`` wide to look at closely.

    With a mesh: the patch whose reference samples are farthest from the mesh on average (where the
    mesh lost or moved the surface). Without: the patch whose normals vary most (the most detail).
    Patches are cells of a grid of side ``width``; cells with few samples are skipped.
    """
    from scipy.spatial import cKDTree

    cell = np.floor((ref_pts - ref_pts.min(0)) / width).astype(np.int64)
    _, which, counts = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
    which = which.reshape(-1)
    if mesh_pts is not None and len(mesh_pts):
        score, why = cKDTree(mesh_pts).query(ref_pts)[0], "largest distance from the reference to the mesh"
    else:
        score, why = None, "most varied normals of the reference"
    n_cells = len(counts)
    if score is not None:
        per_cell = np.bincount(which, weights=score, minlength=n_cells) / counts
    else:  # 1 - |mean normal|: 0 on a flat patch, larger where the surface turns
        mean = np.stack([np.bincount(which, weights=ref_nrm[:, k], minlength=n_cells) for k in range(3)], 1)
        per_cell = 1.0 - np.linalg.norm(mean, axis=1) / counts
    per_cell[counts < max(20, 0.2 * np.median(counts))] = -np.inf
    best = int(np.argmax(per_cell))
    inside = which == best
    return ref_pts[inside].mean(0), _unit(ref_nrm[inside].mean(0)), why


def _clear_direction(centre, candidates, occluders: np.ndarray, distance: float, clearance: float):
    """The first direction from which the segment camera -> centre passes no occluder point closer
    than ``clearance`` (except near the centre itself); the first candidate when none is clear."""
    from scipy.spatial import cKDTree

    tree = cKDTree(occluders)
    ts = np.linspace(0.3, 1.0, 40)
    for d in candidates:
        d = _unit(d)
        if not np.all(np.isfinite(d)):
            continue
        along = centre[None] + ts[:, None] * distance * d[None]
        if tree.query(along)[0].min() > clearance:
            return d
    return _unit(candidates[0])


def closeup_view(ref_pts, ref_nrm, mesh_pts, whole: list, width: float) -> tuple[list, np.ndarray, str]:
    """Camera for the close-up (see :func:`closeup_region`), the patch's centre and why it was chosen;
    up follows the whole view's up."""
    centre, normal, why = closeup_region(ref_pts, ref_nrm, mesh_pts, width)
    view_dir = _unit(np.subtract(whole[0], whole[1]))
    distance = 0.75 * width / math.tan(math.radians(VIEW_ANGLE / 2))
    # Halfway between head-on and the whole view's direction first: recognisably the same side of
    # the shape, and the patch not seen edge-on.
    candidates = [normal + view_dir, normal, view_dir, normal + np.asarray(whole[2]), normal - np.asarray(whole[2])]
    direction = _clear_direction(centre, candidates, ref_pts, distance, 0.1 * width)
    return _camera(centre, direction, whole[2], distance), centre, why


def render_row(surfaces: list, labels: list[str], camera: list, out: Path, size: int = 400,
               point_size: float = 2.0, mark: tuple | None = None) -> Path:
    """One panel per surface (a pyvista.PolyData, or None for a missing mesh), side by side, all with
    the same camera; written to ``out`` (PNG). Faces are flat-shaded from their own geometry (stored
    vertex normals are ignored), so every method is drawn alike and dents show as they are.
    ``mark`` = (centre, width) outlines that cube in red on the first panel (where the close-up is)."""
    from siren3d.viewer.render import require_offscreen

    require_offscreen()
    import pyvista as pv

    pv.OFF_SCREEN = True
    plotter = pv.Plotter(off_screen=True, shape=(1, len(surfaces)), window_size=(size * len(surfaces), size),
                         border=False)
    for i, (surface, label) in enumerate(zip(surfaces, labels)):
        plotter.subplot(0, i)
        plotter.set_background("white")
        if surface is None:
            label += " (no mesh)"
        elif surface.faces.size == 0:
            plotter.add_mesh(surface, color=COLOR, point_size=point_size, render_points_as_spheres=True)
        else:
            surface = surface.copy()
            surface.point_data.clear()
            plotter.add_mesh(surface, color=COLOR, smooth_shading=False, specular=0.2)
        if mark is not None and i == 0:
            plotter.add_mesh(pv.Cube(center=tuple(mark[0]), x_length=mark[1], y_length=mark[1], z_length=mark[1]),
                             style="wireframe", color="red", line_width=2)
        plotter.add_text(label, font_size=9, color="black")
        plotter.camera_position = camera
        plotter.camera.view_angle = VIEW_ANGLE
        plotter.renderer.reset_camera_clipping_range()
    out.parent.mkdir(parents=True, exist_ok=True)
    plotter.screenshot(str(out))
    plotter.close()
    return out


def render_case(reference, meshes: dict, out: Path, name: str = "", *, size: int = 400, closeup: float = 0.12,
                seed: int = 0) -> tuple[list[Path], str]:
    """Render ``reference`` beside ``meshes`` ({label: mesh file, trimesh or None}) into ``out``,
    ``out``-closeup.png and ``out``-detail.png (see the module docstring); ``name`` picks the view
    (VIEWS). Returns the three paths and why the close-up shows what it shows."""
    out = Path(out)
    ref_pts, ref_nrm = _samples(reference, SAMPLES, seed)
    first = next((m for m in meshes.values() if m is not None), None)
    mesh_pts = _samples(first, SAMPLES, seed + 1)[0] if first is not None else None
    whole = whole_view(ref_pts, name)
    width = closeup * float(np.linalg.norm(ref_pts.max(0) - ref_pts.min(0)))
    close, centre, why = closeup_view(ref_pts, ref_nrm, mesh_pts, whole, width)
    # where the reference bends most: the close-up itself when there is no mesh to compare
    detail = close if mesh_pts is None else closeup_view(ref_pts, ref_nrm, None, whole, width)[0]
    surfaces = [_surface(reference)] + [None if m is None else _surface(m) for m in meshes.values()]
    labels = ["reference"] + [str(k) for k in meshes]
    paths = [render_row(surfaces, labels, whole, out, size, mark=(centre, width)),
             render_row(surfaces, labels, close, out.with_name(out.stem + "-closeup.png"), size),
             render_row(surfaces, labels, detail, out.with_name(out.stem + "-detail.png"), size)]
    return paths, why


def main() -> None:
    from siren3d.metrics import load_reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("meshes", type=Path, nargs="+")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG of the whole view; the close-up goes beside it")
    ap.add_argument("--labels", nargs="+", default=None, help="one per mesh [default: file names]")
    ap.add_argument("--name", default=None, help=f"view by name ({', '.join(VIEWS)}) [default: the reference's stem]")
    ap.add_argument("--size", type=int, default=400, help="pixels per panel side")
    ap.add_argument("--closeup", type=float, default=0.12, help="close-up width, fraction of the diagonal")
    args = ap.parse_args()
    labels = args.labels or [p.stem for p in args.meshes]
    if len(labels) != len(args.meshes):
        ap.error("give one label per mesh")
    paths, why = render_case(load_reference(args.reference), dict(zip(labels, args.meshes)), args.out,
                             args.name or args.reference.stem, size=args.size, closeup=args.closeup)
    print(f"wrote {paths[0]} and {paths[1]} (close-up: {why})")


if __name__ == "__main__":
    main()
