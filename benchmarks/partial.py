"""Partial scans: siren3d with trimming against Open3D screened Poisson with density trimming, in one run.

Single views are what scanners give: one side of the object, positions only, nothing behind it. For
each case this makes (or reads) such a scan, then reconstructs it

- with siren3d as a user runs it: ``siren3d fit INPUT.xyz`` then ``siren3d mesh --res 512`` (defaults:
  ``--trim auto``), and the same model meshed with ``--trim off`` (what siren3d gave before trimming);
- with screened Poisson as an Open3D user runs it: normals estimated by Open3D (siren3d.io.estimate_normals:
  kNN PCA, consistent tangent-plane orientation, outward: the normals ``siren3d fit`` gets too), then
  ``create_from_point_cloud_poisson(depth=9)``, untrimmed and with the vertices of the 10 % lowest
  densities removed (the usual trim);

and prints one JSON line per case with, for every mesh (distances as fractions of the scan's
bounding-box diagonal):

- ``unsupported_1`` / ``unsupported_5``: the fraction of the mesh's area farther than 1 % / 5 % from
  every scan point (area-weighted samples on the mesh); the goal is at most 1 %;
- ``coverage``: the fraction of scan points within 0.5 % of the mesh (goal: at least 99 %);
- ``pieces``, ``boundary_loops`` (1 for an open single view without holes), ``watertight``, ``seconds``.

Cases: ``bun045`` (``../shared/data/bun045.xyz``, a real single range scan of the Stanford bunny) and
virtual views of ``../shared/data`` meshes made with siren3d.scanner (``bunny`` and ``lucy``: one view
from 45 degrees around the up axis, 20 degrees above, range noise 0.05 % of the diagonal).

    python benchmarks/partial.py [--cases bun045 bunny lucy] [--res 512] [--depth 9] [--keep DIR]
        [--fit-args "..."] [--samples 200000] [--seed 0] [--quick]

``--quick`` (60 steps of a small network, res 96, depth 6) smoke-tests the script; its numbers mean nothing.
``--reuse`` (with ``--keep``) takes siren3d's meshes and timings from an earlier run in the same folder.
Poisson runs in a child process (Open3D 0.20 crashed once here, with a general protection fault, in
the normal estimation or Poisson of a run that had worked before); a crash is retried once and
counted in ``poisson_crashes``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import run_timed, siren3d_command  # noqa: E402  (the same subprocess runner)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
#: virtual views: mesh file, up axis, azimuth, elevation (degrees), rays per side
VIEWS = {
    "bunny": ("bunny.ply", (0.0, 1.0, 0.0), 45.0, 20.0, 400),
    "lucy": ("lucy.ply", (0.0, 0.0, 1.0), 45.0, 20.0, 600),
}
CASES = ("bun045", *VIEWS)
QUICK_FIT = ["--steps", "60", "--batch", "1024", "--width", "32", "--hidden-layers", "2", "--init", "sphere"]
#: range noise of the virtual views, as a fraction of the mesh's diagonal
VIEW_NOISE = 0.0005


def make_case(name: str, data: Path, seed: int) -> np.ndarray:
    """The scan's points (N, 3)."""
    if name == "bun045":
        return np.loadtxt(data / "bun045.xyz", dtype=np.float64)[:, :3]
    import trimesh

    from siren3d.scanner import scan_mesh, viewpoint

    file, up, azimuth, elevation, rays = VIEWS[name]
    mesh = trimesh.load(data / file, process=False)
    lo, hi = mesh.bounds
    diag = float(np.linalg.norm(hi - lo))
    eye = viewpoint((lo + hi) / 2, 2.0 * diag, azimuth, elevation, up=up)
    return scan_mesh(mesh.vertices, mesh.faces, eye, resolution=rays, up=up, noise=VIEW_NOISE * diag,
                     seed=seed).points


def boundary_loops(faces: np.ndarray) -> int:
    """How many loops of border edges (edges of one face) the mesh has."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return 0
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    border = edges[counts == 1]
    if not len(border):
        return 0
    verts, local = np.unique(border, return_inverse=True)
    local = local.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(local)), (local[:, 0], local[:, 1])), shape=(len(verts), len(verts)))
    return int(connected_components(graph, directed=False)[0])


def measure(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, samples: int, seed: int) -> dict:
    """The partial-scan scores of a mesh against the scan's points (see the module docstring)."""
    from scipy.spatial import cKDTree

    from siren3d.io import sample_mesh_surface
    from siren3d.metrics import surface_distances
    from siren3d.topology import count_components, is_watertight

    diag = float(np.linalg.norm(points.max(0) - points.min(0)))
    if len(faces) == 0:
        return {"faces": 0}
    on_mesh, _, _ = sample_mesh_surface(vertices, faces, samples, seed=seed)
    d, _ = cKDTree(points).query(on_mesh, workers=-1)
    to_mesh = surface_distances(vertices, faces, points)
    return {"faces": int(len(faces)), "unsupported_1": round(float((d > 0.01 * diag).mean()), 5),
            "unsupported_5": round(float((d > 0.05 * diag).mean()), 5),
            "coverage": round(float((to_mesh <= 0.005 * diag).mean()), 5),
            "pieces": count_components(faces), "boundary_loops": boundary_loops(faces),
            "watertight": is_watertight(faces)}


def run_siren(input_file: Path, work: Path, fit_args: list[str], res: int, seed: int, reuse: bool = False) -> dict:
    """Fit once, mesh with the defaults (trim auto) and with --trim off. {label: (result, mesh path)}"""
    record = work / "siren.json"
    if reuse and record.exists():
        saved = json.loads(record.read_text())
        if all(Path(path).exists() for _, path in saved.values() if path):
            return {label: ({**result, "reused": True}, Path(path) if path else None)
                    for label, (result, path) in saved.items()}
    out = _run_siren(input_file, work, fit_args, res, seed)
    record.write_text(json.dumps({k: (r, str(p) if p else None) for k, (r, p) in out.items()}))
    return out


def _run_siren(input_file: Path, work: Path, fit_args: list[str], res: int, seed: int) -> dict:
    run_dir = work / "siren-run"
    fit_s, proc = run_timed([*siren3d_command(), "fit", str(input_file), "--out", str(run_dir), "-q",
                             "--seed", str(seed), *fit_args])
    if proc.returncode != 0:
        return {"siren": ({"error": f"fit exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}, None)}
    out = {}
    for label, extra in (("siren", []), ("siren_untrimmed", ["--trim", "off"])):
        mesh = work / f"{label}.ply"
        mesh_s, proc = run_timed([*siren3d_command(), "mesh", "--run", str(run_dir), "--res", str(res), "-o",
                                  str(mesh), *extra])
        result = {"fit_seconds": round(fit_s, 2), "mesh_seconds": round(mesh_s, 2), "seconds": round(fit_s + mesh_s, 2)}
        if proc.returncode != 0:
            out[label] = ({**result, "error": f"mesh exited {proc.returncode}: "
                                               f"{proc.stderr.strip().splitlines()[-1:]}"}, None)
            continue
        summary = [ln for ln in proc.stderr.splitlines() if ln.startswith("mesh res")]
        out[label] = ({**result, "summary": summary[-1] if summary else ""}, mesh)
    return out


def run_poisson(input_file: Path, work: Path, depth: int) -> dict:
    """Poisson in a child process (see the module docstring), retried once if it crashes."""
    crashes = 0
    for _ in range(2):
        proc = subprocess.run([sys.executable, __file__, "--poisson-child", str(input_file), str(work), str(depth)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            return {k: ({**r, "poisson_crashes": crashes}, Path(p)) for k, (r, p) in out.items()}
        crashes += 1
    return {"poisson": ({"error": f"crashed twice (exit {proc.returncode}): {proc.stderr.strip()[-200:]}"}, None)}


def _poisson(points: np.ndarray, work: Path, depth: int) -> dict:
    import open3d as o3d

    from siren3d.io import estimate_normals

    t0 = time.perf_counter()
    normals = estimate_normals(points)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.normals = o3d.utility.Vector3dVector(normals)
    mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
    seconds = time.perf_counter() - t0
    out = {}
    path = work / "poisson.ply"
    o3d.io.write_triangle_mesh(str(path), mesh)
    out["poisson"] = ({"seconds": round(seconds, 2)}, path)
    densities = np.asarray(densities)
    t0 = time.perf_counter()
    mesh.remove_vertices_by_mask(densities < np.quantile(densities, 0.1))
    path = work / "poisson_trimmed.ply"
    o3d.io.write_triangle_mesh(str(path), mesh)
    out["poisson_trimmed"] = ({"seconds": round(seconds + time.perf_counter() - t0, 2)}, path)
    return {k: (r, str(p)) for k, (r, p) in out.items()}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--poisson-child":
        points = np.loadtxt(sys.argv[2], dtype=np.float64)[:, :3]
        print(json.dumps(_poisson(points, Path(sys.argv[3]), int(sys.argv[4]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the scans [default: ../shared/data]")
    ap.add_argument("--fit-args", default="", help="more siren3d fit options, one quoted string")
    ap.add_argument("--res", type=int, default=512, help="siren3d mesh --res")
    ap.add_argument("--depth", type=int, default=9, help="Poisson octree depth")
    ap.add_argument("--samples", type=int, default=200_000, help="points sampled on each mesh")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep inputs and meshes under this folder")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to smoke-test the script")
    ap.add_argument("--reuse", action="store_true", help="with --keep: siren3d's meshes from an earlier run there")
    args = ap.parse_args()

    import trimesh

    fit_args = (QUICK_FIT if args.quick else []) + shlex.split(args.fit_args)
    res, depth = (96, 6) if args.quick else (args.res, args.depth)
    root = args.keep or Path(tempfile.mkdtemp(prefix="siren3d-partial-"))
    try:
        for name in args.cases:
            work = root / name
            work.mkdir(parents=True, exist_ok=True)
            points = make_case(name, args.data, args.seed)
            input_file = work / f"{name}.xyz"
            np.savetxt(input_file, points, fmt="%.7g")  # positions only, as the scanner gave them
            meshes = {**run_siren(input_file, work, fit_args, res, args.seed, args.reuse),
                      **run_poisson(input_file, work, depth)}
            line = {"bench": "partial", "case": name, "points": len(points), "res": res, "depth": depth,
                    "fit_args": fit_args, "quick": args.quick,
                    "diagonal": round(float(np.linalg.norm(points.max(0) - points.min(0))), 6)}
            for label, (result, path) in meshes.items():
                if path is not None:
                    m = trimesh.load(path, process=False)
                    result = {**result, **measure(np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64),
                                                  points, args.samples, args.seed)}
                line[label] = result
            print(json.dumps(line), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
