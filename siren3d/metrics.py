"""Scoring a reconstructed mesh against a reference surface: distances, normals, F-score, topology.

Both surfaces are turned into point samples with normals and compared by nearest neighbours
(``scipy.spatial.cKDTree``):

- the predicted mesh: ``n_samples`` area-weighted points on its faces, with face normals;
- a reference mesh: the same, from its own faces (never from a re-sampled point cloud);
- a reference point cloud (a :class:`~siren3d.io.Scan`): its points and normals, a seeded random
  subset of ``n_samples`` when it holds more.

The two samples are drawn with different seeds (``seed`` and ``seed + 1``), so a mesh scored
against itself shows the floor of the measurement rather than an exact zero: two independent
200,000-point samples of one surface differ by a Chamfer-L1 of about 0.001 of the bounding-box
diagonal. All results are deterministic for a fixed seed.

That floor is as large as the differences worth measuring: Lucy's mesh scored against itself gives
0.000929 of its diagonal, Open3D's Poisson 0.00095. Against a reference *mesh* the same samples are
therefore also measured to the other surface itself (Open3D's ``RaycastingScene``: the exact
distance to the nearest triangle), the ``surface_`` scores, whose floor is zero.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from . import topology
from .config import ScoreConfig
from .errors import Siren3dError
from .io import MESH_SUFFIXES, Scan, load_scan, sample_mesh_surface

#: Points sampled on each surface by default.
DEFAULT_SAMPLES = ScoreConfig().samples
#: F-score thresholds as fractions of the reference bounding-box diagonal, and their key suffixes.
FSCORE_THRESHOLDS = {"0.5pct": 0.005, "1pct": 0.01}
#: Suffixes read as meshes (a PLY may be either; it is a mesh when it has faces).
_MESH_FILE_SUFFIXES = (".ply", ".glb", *MESH_SUFFIXES)

log = logging.getLogger(__name__)


def score_mesh(mesh, reference, n_samples: int = DEFAULT_SAMPLES, seed: int = 0, surface: bool = True) -> dict:
    """Compare a predicted mesh with a reference surface; returns a flat, JSON-ready dict.

    mesh: a ``trimesh.Trimesh``, a :class:`~siren3d.meshing.MeshResult`, anything with
    ``vertices`` (V, 3) and ``faces`` (F, 3), or a mesh file path.
    reference: the same kinds of mesh, or a point cloud with normals: a :class:`~siren3d.io.Scan`
    or anything with ``points`` (N, 3) and ``normals`` (N, 3), or a file path (a file with faces
    is a mesh, anything else is read with :func:`~siren3d.io.load_scan`).

    With P the samples on the predicted mesh, R those of the reference and d(x, S) the Euclidean
    distance from x to its nearest neighbour in S:

    - ``accuracy`` = mean over p in P of d(p, R) (is what was built really there?);
      ``completeness`` = mean over r in R of d(r, P) (is everything there built?);
      ``chamfer_l1`` = (accuracy + completeness) / 2, in the convention of Occupancy Networks
      (mean unsquared distances, halved sum);
    - ``hausdorff`` = max(max d(p, R), max d(r, P));
    - ``normal_consistency`` = the average of the two directions' mean |cos| between a sample's
      normal and the normal of its nearest neighbour in the other set (``normal_accuracy``:
      from P, ``normal_completeness``: from R). Absolute values, so it does not depend on which
      way either surface's faces are wound; 1 is perfect, about 0.5 is unrelated directions;
    - ``fscore_<t>``: the harmonic mean of ``precision_<t>`` (the fraction of P within t of R)
      and ``recall_<t>`` (the fraction of R within t of P), at t = 0.5 % and 1 % of the
      reference's bounding-box diagonal (``threshold_<t>`` holds t in scan units);
    - ``accuracy_beyond_<t>``: the part of ``accuracy`` that comes from samples of P farther than
      t from R, mean over P of d(p, R) [d(p, R) >= t]. Against a raw scan this is mostly surface
      where the scanner saw nothing (holes, unseen crevices), which the scan cannot score fairly;
    - ``surface_accuracy``, ``surface_completeness``, ``surface_chamfer_l1``, ``surface_hausdorff``
      (reference meshes only): the same with d(x, S) the distance from x to the other *surface*
      (its nearest triangle) instead of to its nearest sample: no sampling floor, so a mesh scored
      against itself gives 0 (``surface=False`` leaves them out: the sampling floor of a reference,
      scored against itself, needs only the sampled ones);
    - ``components``: connected pieces of the predicted mesh (faces sharing an edge, after
      vertices at the same position are merged); ``watertight``: every edge is shared by exactly
      two faces (trimesh's ``is_watertight``; winding is not checked).

    Every distance is in the units of the inputs and again, with the suffix ``_rel``, as a
    fraction of ``reference_diagonal``.
    """
    from scipy.spatial import cKDTree

    if n_samples < 1:
        raise Siren3dError(f"n_samples must be at least 1, got {n_samples}")
    pred = _as_trimesh(mesh, "mesh")
    pred_pts, pred_nrm = _sample_mesh(pred, n_samples, seed, "mesh")
    ref_kind, ref_pts, ref_nrm, ref_lo, ref_hi, ref_mesh = _reference_samples(reference, n_samples, seed + 1)
    diag = float(np.linalg.norm(ref_hi - ref_lo))
    if not diag > 0:
        raise Siren3dError("the reference has no extent (all its points coincide)")
    if np.any(pred_pts.max(0) < ref_lo) or np.any(pred_pts.min(0) > ref_hi):
        # Also the slow case for nearest neighbours: every point is about as far as every other.
        log.warning("the mesh and the reference do not overlap at all: are they in the same coordinates?")

    d_pr, i_pr = cKDTree(ref_pts).query(pred_pts, k=1, workers=-1)
    d_rp, i_rp = cKDTree(pred_pts).query(ref_pts, k=1, workers=-1)
    normal_acc = float(np.abs(np.einsum("ij,ij->i", pred_nrm, ref_nrm[i_pr])).mean())
    normal_comp = float(np.abs(np.einsum("ij,ij->i", ref_nrm, pred_nrm[i_rp])).mean())

    out: dict = {
        "reference_kind": ref_kind,
        "reference_diagonal": diag,
        "samples_mesh": len(pred_pts),
        "samples_reference": len(ref_pts),
        "seed": seed,
    }
    distances = _distance_scores(d_pr, d_rp)
    if ref_mesh is not None and surface:
        origin = 0.5 * (ref_lo + ref_hi)  # distances in float32 about the centre, not far-off coordinates
        distances.update(_distance_scores(surface_distances(ref_mesh.vertices, ref_mesh.faces, pred_pts, origin),
                                          surface_distances(pred.vertices, pred.faces, ref_pts, origin), "surface_"))
    for key, value in distances.items():
        out[key] = value
        out[f"{key}_rel"] = value / diag
    out["normal_consistency"] = 0.5 * (normal_acc + normal_comp)
    out["normal_accuracy"] = normal_acc
    out["normal_completeness"] = normal_comp
    for name, frac in FSCORE_THRESHOLDS.items():
        t = frac * diag
        precision = float((d_pr < t).mean())
        recall = float((d_rp < t).mean())
        out[f"fscore_{name}"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        out[f"precision_{name}"] = precision
        out[f"recall_{name}"] = recall
        out[f"threshold_{name}"] = t
        beyond = float(np.where(d_pr >= t, d_pr, 0.0).mean())
        out[f"accuracy_beyond_{name}"] = beyond
        out[f"accuracy_beyond_{name}_rel"] = beyond / diag
    out["components"] = count_components(pred)
    out["watertight"] = bool(pred.is_watertight)
    out["vertices"] = len(pred.vertices)
    out["faces"] = len(pred.faces)
    return out


#: The scores made of the two directions' distances (see :func:`score_mesh`), in table order.
DISTANCE_SCORES = ("chamfer_l1", "accuracy", "completeness", "hausdorff")


def _distance_scores(d_pr: np.ndarray, d_rp: np.ndarray, prefix: str = "") -> dict[str, float]:
    """DISTANCE_SCORES from the distances mesh -> reference (d_pr) and reference -> mesh (d_rp)."""
    accuracy, completeness = float(d_pr.mean()), float(d_rp.mean())
    return {f"{prefix}chamfer_l1": 0.5 * (accuracy + completeness), f"{prefix}accuracy": accuracy,
            f"{prefix}completeness": completeness, f"{prefix}hausdorff": max(float(d_pr.max()), float(d_rp.max()))}


def format_table(scores: dict) -> str:
    """The scores of :func:`score_mesh` as a readable table (absolute, and relative to the diagonal)."""
    rows = [("metric", "value", "/ diagonal")]
    surface = tuple(f"surface_{k}" for k in DISTANCE_SCORES if f"surface_{k}" in scores)  # reference meshes only
    for key in DISTANCE_SCORES + surface:
        rows.append((key.replace("_", "-"), f"{scores[key]:.6g}", f"{scores[key + '_rel']:.6f}"))
    rows.append(("normal consistency", f"{scores['normal_consistency']:.4f}", ""))
    for name, frac in FSCORE_THRESHOLDS.items():
        rows.append((f"F-score @ {frac:.1%}", f"{scores[f'fscore_{name}']:.4f}",
                     f"(precision {scores[f'precision_{name}']:.4f}, recall {scores[f'recall_{name}']:.4f})"))
    for name, frac in FSCORE_THRESHOLDS.items():
        key = f"accuracy_beyond_{name}"
        rows.append((f"accuracy beyond {frac:.1%}", f"{scores[key]:.6g}", f"{scores[key + '_rel']:.6f}"))
    rows.append(("components", str(scores["components"]), ""))
    rows.append(("watertight", "yes" if scores["watertight"] else "no", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"reference: {scores['reference_kind']}, diagonal {scores['reference_diagonal']:.6g}; "
                 f"{scores['samples_mesh']:,} / {scores['samples_reference']:,} samples, seed {scores['seed']}; "
                 f"mesh {scores['vertices']:,} vertices, {scores['faces']:,} faces")
    return "\n".join(lines)


def bounds(reference) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (low (3,), high (3,)) of a mesh's face vertices or a point cloud's points.

    Its diagonal is the unit of the ``_rel`` scores and the F-score thresholds of :func:`score_mesh`.
    """
    if hasattr(reference, "faces"):
        used = np.asarray(reference.vertices)[np.unique(np.asarray(reference.faces))]
    else:
        used = np.asarray(reference.points)
    return used.min(0), used.max(0)


def surface_distances(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                      origin: np.ndarray | None = None) -> np.ndarray:
    """Distance (M,) from each point (M, 3) to the nearest point of a mesh's triangles (vertices
    (V, 3), faces (F, 3); Open3D's RaycastingScene, float32: coordinates are taken relative to
    ``origin``, default the mesh's bounding-box centre, so that far-off coordinates keep their
    precision)."""
    import open3d as o3d

    vertices = np.asarray(vertices, dtype=np.float64)
    if origin is None:
        origin = 0.5 * (vertices.min(0) + vertices.max(0))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor((vertices - origin).astype(np.float32)),
                        o3d.core.Tensor(np.asarray(faces).astype(np.uint32)))
    query = o3d.core.Tensor(np.ascontiguousarray(np.asarray(points, dtype=np.float64) - origin, dtype=np.float32))
    return scene.compute_distance(query).numpy().astype(np.float64)


def count_components(mesh) -> int:
    """Pieces of a mesh (faces connected through shared edges; see siren3d.topology)."""
    return topology.count_components(np.asarray(mesh.faces))


def load_mesh(path: str | os.PathLike):
    """Read a mesh file (PLY, OBJ, OFF, STL, GLB) as a ``trimesh.Trimesh``; Siren3dError if it has no faces."""
    mesh = _read_trimesh(path)
    if len(mesh.faces) == 0:
        raise Siren3dError("has no faces: expected a mesh (a point cloud can only be the reference)", path)
    return mesh


def load_reference(path: str | os.PathLike, seed: int = 0):
    """A reference from a file: a ``trimesh.Trimesh`` when the file has faces, else a :class:`Scan`.

    Point clouds go through :func:`~siren3d.io.load_scan` (normals read, or estimated with a warning).
    """
    spath = os.fspath(path)
    if Path(spath).suffix.lower() in _MESH_FILE_SUFFIXES and Path(spath).is_file():
        try:
            mesh = _read_trimesh(spath)
        except Siren3dError:
            mesh = None  # load_scan reads what trimesh cannot, and words its errors better
        if mesh is not None and len(mesh.faces):
            return mesh
    return load_scan(spath, seed=seed, outliers="off")  # a reference is taken as it is


# --------------------------------------------------------------------------------------------


def _read_trimesh(path: str | os.PathLike):
    import trimesh

    spath = os.fspath(path)
    p = Path(spath)
    if not p.exists():
        raise Siren3dError("no such file", spath)
    if p.is_dir():
        raise Siren3dError("is a directory, not a mesh file", spath)
    if p.stat().st_size == 0:
        raise Siren3dError("is empty", spath)
    try:
        # process=True merges vertices at the same position, so a mesh stored as separate
        # triangles (STL) is judged by its surface, not by its file layout.
        loaded = trimesh.load(spath, force="mesh", process=True)
    except Exception as e:  # trimesh raises many types on bad input
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise Siren3dError(f"cannot read as a mesh: {msg}", spath) from None
    if not isinstance(loaded, trimesh.Trimesh):
        raise Siren3dError("cannot read as a mesh", spath)
    return loaded


def _as_trimesh(obj, what: str):
    import trimesh

    if isinstance(obj, (str, os.PathLike)):
        return load_mesh(obj)
    if isinstance(obj, trimesh.Trimesh):
        if len(obj.faces) == 0:
            raise Siren3dError(f"the {what} has no faces")
        mesh = obj.copy()
        mesh.merge_vertices()
        return mesh
    if hasattr(obj, "vertices") and hasattr(obj, "faces"):
        faces = np.asarray(obj.faces, dtype=np.int64).reshape(-1, 3)
        if len(faces) == 0:
            raise Siren3dError(f"the {what} has no faces")
        return trimesh.Trimesh(np.asarray(obj.vertices, dtype=np.float64), faces, process=True)
    raise Siren3dError(f"the {what} must be a mesh (vertices and faces), not {type(obj).__name__}")


def _sample_mesh(mesh, count: int, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    points, normals, _ = sample_mesh_surface(vertices, faces, count, seed=seed, path=what)
    return points, normals


def _reference_samples(reference, count: int, seed: int):
    """(kind, points (n, 3), unit normals (n, 3), bbox low (3,), bbox high (3,), the mesh or None)
    of a reference."""
    if isinstance(reference, (str, os.PathLike)):
        reference = load_reference(reference, seed=seed)
    if hasattr(reference, "faces") and hasattr(reference, "vertices"):
        mesh = _as_trimesh(reference, "reference")
        points, normals = _sample_mesh(mesh, count, seed, "reference")
        return ("mesh", points, normals, *bounds(mesh), mesh)
    if isinstance(reference, Scan) or (hasattr(reference, "points") and hasattr(reference, "normals")):
        points = np.asarray(reference.points, dtype=np.float64).reshape(-1, 3)
        normals = np.asarray(reference.normals, dtype=np.float64).reshape(-1, 3)
        if len(points) == 0 or normals.shape != points.shape:
            raise Siren3dError(f"the reference needs points and one normal per point "
                               f"(points {points.shape}, normals {normals.shape})")
        lo, hi = bounds(reference)
        if len(points) > count:
            keep = np.sort(np.random.default_rng(seed).choice(len(points), count, replace=False))
            points, normals = points[keep], normals[keep]
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        return "points", points, normals / np.maximum(length, 1e-300), lo, hi, None
    raise Siren3dError(f"the reference must be a mesh or a point cloud with normals, not {type(reference).__name__}")
