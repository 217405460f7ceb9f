"""Is the fitted field a signed distance in the whole box? A default fit against the exact signed distance.

For every closed shape it samples a clean scan (100,000 points with normals, seeded), fits it with
``siren3d.fit`` (the defaults, or ``--fit-args``), and then

- on uniform points in the fitted box (the unit box mapped back to the scan's frame) compares f,
  the field as ``siren3d view`` slices it and ``siren3d mesh --level`` meshes it (a
  ``siren3d.field.ScanField``: the network next to the scan, the scan's distance beyond), with the
  exact signed distance d (``network_bands``: the same for the network alone): per band of |d| (< 1 %, 1-5 %, > 5 % of the reference's
  bounding-box diagonal) the mean |f - d| (fraction of the diagonal), the median f / d and the
  fraction of points whose sign is wrong;
- meshes offset levels (+2 %, +5 % and -1 % of the diagonal) with ``extract_mesh(level=...)`` (with
  the scan's support, as ``siren3d mesh --level`` does) and
  compares each with the exact offset surface (marching cubes of the exact signed distance):
  pieces, watertightness and Chamfer-L1 (fraction of the diagonal).

Shapes: ``sample`` (the bundled sample's analytic shape, in its millimetre frame), ``torus``
(analytic), ``lucy`` (../shared/data/lucy.ply, a closed mesh; exact distances from Open3D's
RaycastingScene), or a path to any closed mesh. One JSON line per shape.

    python benchmarks/field.py [--shapes sample torus lucy] [--fit-args "--steps 600"] [--seed 0]
        [--eval-points 200000] [--offset-res 160]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from siren3d.config import fit_config
from siren3d.field import Grid, ScanField, field_values
from siren3d.io import Scan, sample_mesh_surface
from siren3d.meshing import extract_mesh, marching_cubes
from siren3d.metrics import score_mesh
from siren3d.topology import count_components, is_watertight
from siren3d.training import fit

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
BANDS = (("near", 0.0, 0.01), ("mid", 0.01, 0.05), ("far", 0.05, np.inf))
OFFSETS = (0.02, 0.05, -0.01)


class Shape:
    """A closed reference: sdf(points (N, 3) scan frame) -> (N,) and a clean scan of it."""

    def __init__(self, name: str, sdf, sample):
        self.name, self.sdf, self.sample = name, sdf, sample


def analytic(name: str, unit_sdf, scale: float, offset) -> Shape:
    from siren3d.synthetic import sample_surface

    offset = np.asarray(offset, dtype=np.float64)

    def sdf(p):
        return scale * unit_sdf((np.asarray(p, dtype=np.float64) - offset) / scale)

    def sample(count, seed):
        pts, nrm = sample_surface(unit_sdf, count, res=160, seed=seed)
        return pts * scale + offset, nrm

    return Shape(name, sdf, sample)


def mesh_shape(path: Path) -> Shape:
    import open3d as o3d
    import trimesh

    tm = trimesh.load(path, process=True)
    if not tm.is_watertight:
        raise SystemExit(f"{path}: not a closed mesh; the exact signed distance needs one")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(
        o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(tm.vertices), o3d.utility.Vector3iVector(tm.faces))))

    def sdf(p):
        out = np.empty(len(p))
        for i in range(0, len(p), 1_000_000):
            q = o3d.core.Tensor(np.asarray(p[i:i + 1_000_000], dtype=np.float32))
            out[i:i + 1_000_000] = scene.compute_signed_distance(q).numpy()
        return out

    def sample(count, seed):
        pts, nrm, _ = sample_mesh_surface(np.asarray(tm.vertices), np.asarray(tm.faces), count, seed=seed)
        return pts, nrm

    return Shape(Path(path).stem, sdf, sample)


def make_shape(name: str) -> Shape:
    from siren3d import synthetic

    if name == "sample":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
        from make_sample import OFFSET, SCALE

        return analytic("sample", synthetic.sample_shape(), SCALE, OFFSET)
    if name == "torus":
        return analytic("torus", synthetic.torus(0.5, 0.18), 25.0, (3.0, -4.0, 10.0))
    path = Path(name) if Path(name).exists() else DATA / f"{name}.ply"
    return mesh_shape(path)


def field_errors(f: np.ndarray, d: np.ndarray, diag: float) -> dict:
    """Per band of |d|: mean |f - d| / diag, median f / d, wrong-sign fraction, point count."""
    out = {}
    rel = np.abs(d) / diag
    for name, lo, hi in BANDS:
        m = (rel >= lo) & (rel < hi)
        if not m.any():
            continue
        out[name] = {"points": int(m.sum()), "mean_abs_error": round(float(np.abs(f[m] - d[m]).mean() / diag), 6),
                     "median_ratio": round(float(np.median(f[m] / d[m])), 4),
                     "wrong_sign": round(float((np.sign(f[m]) != np.sign(d[m])).mean()), 5)}
    return out


def true_offset(shape: Shape, normalization, level: float, res: int):
    """The exact level set as a trimesh, by marching cubes of the exact sdf on the fitted box."""
    import trimesh

    grid = Grid.cube(res)
    ax = grid.axes()
    pts = np.stack(np.meshgrid(*ax, indexing="ij"), -1).reshape(-1, 3)
    vol = shape.sdf(normalization.to_scan(pts)).reshape(grid.shape).astype(np.float32)
    v, f = marching_cubes(vol, level)
    return trimesh.Trimesh(normalization.to_scan(grid.points(v)), f, process=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["sample", "torus", "lucy"])
    ap.add_argument("--points", type=int, default=100_000, help="scan points sampled on each shape")
    ap.add_argument("--fit-args", default="", help="fit settings as 'name=value ...' (e.g. 'steps=600 loss.distance=0')")
    ap.add_argument("--eval-points", type=int, default=200_000)
    ap.add_argument("--offset-res", type=int, default=160, help="grid of the exact offset surfaces")
    ap.add_argument("--mesh-res", type=int, default=256, help="extract_mesh res for the offsets")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    overrides = fit_overrides(args.fit_args)
    config = fit_config(None, seed=args.seed, **overrides)

    for name in args.shapes:
        shape = make_shape(name)
        points, normals = shape.sample(args.points, args.seed)
        lo, hi = points.min(0), points.max(0)
        diag = float(np.linalg.norm(hi - lo))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = fit(Scan(points, normals.astype(np.float32), path=f"{shape.name}.ply"), config, Path(tmp),
                         progress=False)
            fit_s = time.perf_counter() - t0
        norm = result.normalization
        rng = np.random.default_rng(args.seed + 1)
        unit = rng.uniform(-1, 1, size=(args.eval_points, 3))
        d = shape.sdf(norm.to_scan(unit))
        net = norm.distance_to_scan(field_values(result.model, unit).astype(np.float64))
        t0 = time.perf_counter()
        f = norm.distance_to_scan(field_values(ScanField(result.model, result.support), unit).astype(np.float64))
        field_s = time.perf_counter() - t0
        line = {"bench": "field", "shape": shape.name, "points": len(points), "diag": round(diag, 4),
                "fit_seconds": round(fit_s, 1), "fit": overrides, "bands": field_errors(f, d, diag),
                "network_bands": field_errors(net, d, diag), "field_seconds": round(field_s, 2), "offsets": {}}
        for rel in OFFSETS:
            level = rel * diag
            key = f"{rel:+.0%}"
            ref = true_offset(shape, norm, level, args.offset_res)
            entry = {"true_pieces": count_components(ref.faces)}
            try:
                mesh = extract_mesh(result.model, norm, res=args.mesh_res, level=level, support=result.support)
            except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not stop
                entry["error"] = str(e)
                line["offsets"][key] = entry
                continue
            scores = score_mesh(mesh, ref, n_samples=100_000, seed=args.seed)
            entry.update(pieces=mesh.stats.components, watertight=bool(is_watertight(mesh.faces)),
                         chamfer=round(scores["chamfer_l1"] / diag, 6),
                         hausdorff=round(scores["hausdorff"] / diag, 5))
            line["offsets"][key] = entry
        print(json.dumps(line), flush=True)


def fit_overrides(text: str) -> dict:
    """'name=value ...' (nested names dotted: 'loss.distance=0') -> fit_config overrides, each value
    of its default's type."""
    overrides = {}
    for item in shlex.split(text):
        key, value = item.split("=", 1)
        overrides[key] = type(_default(key))(value) if _default(key) is not None else value
    return overrides


def _default(key: str):
    from siren3d.config import FitConfig

    cfg = FitConfig()
    for part in key.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


if __name__ == "__main__":
    main()
