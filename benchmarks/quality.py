"""Reconstruction quality: siren3d's defaults against Open3D screened Poisson, on the same inputs, in one run.

For every scan and regime it makes an input point cloud with normals (seeded; ``noisy-raw``: without),
reconstructs it

- with siren3d as a user would: ``siren3d fit INPUT`` then ``siren3d mesh --res 512`` (subprocesses,
  wall-clock timed, so interpreter start-up is included; ``train_seconds`` is the training loop alone);
- with screened Poisson as a user would: ``o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd,
  depth=9)``, with Open3D's other defaults and no density-based trimming (in-process, timed);

scores both with :func:`siren3d.metrics.score_mesh` against the reference, and prints one JSON line per
case: seconds and every metric for both, plus ``chamfer_ratio`` (siren / poisson, < 1: siren is
closer) and ``normal_consistency_diff`` (siren - poisson, > 0: siren's normals agree better).

Against a reference mesh the line also gives ``floor_chamfer_l1_rel``, the sampled Chamfer-L1 of the
reference scored against itself (the same sample sizes and seeds): no method can be expected to score below it, and
on these shapes it is 90 % or more of what both methods score on clean inputs. So it also gives
``surface_chamfer_ratio``, the same ratio of the ``surface_`` scores (distances to the other surface
itself, not to its samples; see siren3d.metrics), whose floor is zero.

Scans (``../shared/data``, see its README): ``bunny`` and ``lucy`` are meshes and are the reference
themselves: inputs are area-weighted samples on their faces with face normals, and scores sample the
mesh again with another seed. ``gargoyle_scan`` is a raw scan with no ground truth: the reference is the
whole scan (its points and normals), inputs are seeded subsets of it, so its scores say how faithfully a
method reproduces its input (for the clean regime, the input is the reference). A path (a mesh, such
as a fetched statue kept outside the project, or a scan) is used the same way.

Analytic shapes (siren3d.synthetic, exact signed distances), meshed by marching cubes of that distance
and placed in the millimetre-like frame of data/make_sample.py (x 60, away from the origin):
``synthetic`` the project's sample shape (a ring, a thin post, a dented ball; res 256), ``cad`` a machined
plate (flat faces, sharp edges, chamfers, rounded corners, two through-holes and a slot: "orange peel"
and sharp edges; res 512) and ``thin`` thin and sharp parts (fins 3.6 down to 1.2 mm thick on a 3.6 mm
base, a knife edge, a spike; res 512). Without ``../shared/data`` the default scan is ``synthetic``.

Regimes: ``clean`` 100,000 points; ``noisy`` the same with isotropic Gaussian noise of standard deviation
0.5 % of the reference's bounding-box diagonal on the positions (normals stay exact, as a scanner's
would be roughly); ``sparse`` 5,000 points; ``medium`` (only when asked for) 20,000 points, between
the two densities that the learning rate tells apart (siren3d.training.DENSE_SPACING); ``noisy-raw``
(only when asked for) the noisy points in a file without normals, as many scanners give them:
siren3d estimates its own, Poisson gets those siren3d's loader estimates (``normals_wrong_way``: the
share of them pointing into the surface).

    python benchmarks/quality.py [--scans bunny lucy gargoyle_scan cad thin PATH] [--regimes clean noisy sparse]
        [--steps N] [--fit-args "--init sphere --lr 2e-4"] [--res 512] [--depth 9] [--samples 200000]
        [--seed 0] [--keep DIR] [--quick] [--no-poisson] [--render [DIR]]

``--no-poisson`` scores siren3d alone (for a machine without Open3D, such as a GPU box): no ratios.

``--render [DIR]`` also draws each case (PyVista offscreen, benchmarks/side_by_side.py): reference,
siren3d and Poisson side by side with one camera (``SCAN-REGIME.png``, 3 panels of 400x400), and the
same three close up where siren3d is farthest from the reference (``SCAN-REGIME-closeup.png``) and
where the reference bends most, its finest detail (``SCAN-REGIME-detail.png``); the
JSON line names the files.

``--quick`` shrinks everything (2,000/2,000/500 points, 60 steps of a small network, res 64, depth 6,
20,000 score samples) to smoke-test the script in a few minutes; its numbers mean nothing.
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

from siren3d.config import ScoreConfig
from siren3d.io import sample_mesh_surface, save_points_ply
from siren3d.io.normals import estimate_normals
from siren3d.metrics import bounds, load_mesh, load_reference, score_mesh

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SCANS = ("bunny", "lucy", "gargoyle_scan")
REGIMES = {  # name: (input points, noise as a fraction of the reference diagonal)
    "clean": (100_000, 0.0),
    "noisy": (100_000, 0.005),
    "sparse": (5_000, 0.0),
    "medium": (20_000, 0.0),
    "noisy-raw": (100_000, 0.005),
}
#: Regimes whose input file has no normals: siren3d estimates them on loading; Poisson gets normals
#: estimated as siren3d's loader does (siren3d.io.normals.estimate_normals, Open3D, 20 neighbours), on
#: the points before the loader's stray-point removal: close to the loader's, not exactly them.
WITHOUT_NORMALS = {"noisy-raw"}
QUICK_POINTS = {"clean": 2_000, "noisy": 2_000, "sparse": 500, "medium": 1_000, "noisy-raw": 2_000}
DEFAULT_REGIMES = ("clean", "noisy", "sparse")
QUICK_FIT = ["--steps", "60", "--batch", "1024", "--width", "32", "--hidden-layers", "2", "--init", "sphere"]
#: Where --render writes its PNGs when given no folder (runs/ is ignored by git).
RENDER_DIR = Path("runs") / "quality-renders"
#: Keys of score_mesh() that describe the reference, not the method: reported once per case.
REFERENCE_KEYS = ("reference_kind", "reference_diagonal", "samples_reference")


#: Analytic shapes (siren3d.synthetic): name -> (sdf factory name, marching-cubes resolution of the reference).
ANALYTIC = {"synthetic": ("sample_shape", 256), "cad": ("cad_part", 512), "thin": ("thin_parts", 512)}


def analytic_reference(name: str):
    """An analytic shape as a trimesh: marching cubes of its exact signed distance over the unit box,
    mapped into the millimetre-like frame data/make_sample.py uses (x 60 mm, offset)."""
    import trimesh

    from siren3d import synthetic

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from make_sample import OFFSET, SCALE

    factory, res = ANALYTIC[name]
    v, f = synthetic.mesh_sdf(getattr(synthetic, factory)(), res=res, scale=SCALE, offset=OFFSET)
    return trimesh.Trimesh(v, f, process=True)


def load_case_reference(name: str, data: Path, seed: int):
    """(reference, label): a trimesh or a Scan."""
    if name in ANALYTIC:
        return analytic_reference(name), name
    path = Path(name)
    if not path.exists():
        path = data / f"{name}.ply"
    return load_reference(path, seed=seed), path.stem


def make_input(reference, count: int, noise: float, diag: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded input points (count, 3) and unit normals (count, 3) from a reference mesh or scan."""
    rng = np.random.default_rng(seed)
    if hasattr(reference, "faces"):
        points, normals, _ = sample_mesh_surface(np.asarray(reference.vertices), np.asarray(reference.faces),
                                                 count, seed=seed)
    else:
        keep = np.sort(rng.choice(len(reference.points), min(count, len(reference.points)), replace=False))
        points, normals = reference.points[keep], reference.normals[keep].astype(np.float64)
    if noise > 0:
        points = points + rng.normal(scale=noise * diag, size=points.shape)
    return points, normals


def siren3d_command() -> list[str]:
    script = Path(sys.executable).with_name("siren3d")
    return [str(script)] if script.exists() else [sys.executable, "-m", "siren3d.cli"]


def run_timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def run_siren(input_ply: Path, work: Path, fit_args: list[str], res: int, seed: int) -> tuple[dict, Path | None]:
    run_dir, out = work / "siren-run", work / "siren.ply"
    fit_s, proc = run_timed([*siren3d_command(), "fit", str(input_ply), "--out", str(run_dir), "-q",
                             "--seed", str(seed), *fit_args])
    result = {"fit_seconds": round(fit_s, 2)}
    if proc.returncode != 0:
        return {**result, "error": f"fit exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}, None
    fit_json = json.loads((run_dir / "fit.json").read_text())
    result["train_seconds"] = round(fit_json.get("timings", {}).get("train_s", float("nan")), 2)
    result["steps"] = fit_json.get("step")
    if fit_json.get("recoveries"):  # the field collapsed and the fit went back (siren3d.training._CollapseGuard)
        result["recoveries"] = fit_json["recoveries"]
    mesh_s, proc = run_timed([*siren3d_command(), "mesh", "--run", str(run_dir), "--res", str(res), "-o", str(out)])
    result["mesh_seconds"] = round(mesh_s, 2)
    result["seconds"] = round(fit_s + mesh_s, 2)
    if proc.returncode != 0:
        return {**result, "error": f"mesh exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}, None
    return result, out


def run_poisson(points: np.ndarray, normals: np.ndarray, work: Path, depth: int) -> tuple[dict, Path]:
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.normals = o3d.utility.Vector3dVector(normals)
    t0 = time.perf_counter()
    mesh, _densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
    seconds = time.perf_counter() - t0
    out = work / "poisson.ply"
    o3d.io.write_triangle_mesh(str(out), mesh)
    return {"seconds": round(seconds, 2)}, out


def score(mesh_path: Path | None, reference, samples: int, seed: int) -> dict:
    if mesh_path is None:
        return {}
    scores = score_mesh(load_mesh(mesh_path), reference, n_samples=samples, seed=seed)
    return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in scores.items()}


def render(reference, label: str, regime: str, siren_mesh: Path | None, siren_scores: dict,
           poisson_mesh: Path | None, poisson_scores: dict, folder: Path, size: int, seed: int) -> dict:
    """The case's side-by-side renders (benchmarks/side_by_side.py); {"png": [paths], "closeup": why}
    or {"error": ...}: a render that fails never loses the case's scores."""
    from side_by_side import render_case

    def tag(name: str, scores: dict) -> str:
        return f"{name}  CD {scores['chamfer_l1_rel']:.5f}  NC {scores['normal_consistency']:.3f}" if scores else name

    meshes = {tag("siren3d", siren_scores): siren_mesh}
    if poisson_mesh is not None or poisson_scores:
        meshes[tag("Poisson", poisson_scores)] = poisson_mesh
    try:
        paths, why = render_case(reference, meshes, folder / f"{label}-{regime}.png", label, size=size, seed=seed)
    except Exception as e:  # noqa: BLE001 - e.g. no OpenGL here: say so in the JSON line
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    return {"png": [str(p) for p in paths], "closeup": why}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", nargs="+", default=None,
                    help=f"names in --data ({' '.join(SCANS)}), analytic shapes ({' '.join(ANALYTIC)}) or "
                         "paths of meshes / scans [default: the scans found, else synthetic]")
    ap.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(DEFAULT_REGIMES))
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the scans [default: ../shared/data]")
    ap.add_argument("--steps", type=int, default=None, help="passed to siren3d fit")
    ap.add_argument("--fit-args", default="", help="more siren3d fit options, one quoted string")
    ap.add_argument("--res", type=int, default=512, help="siren3d mesh --res")
    ap.add_argument("--depth", type=int, default=9, help="Poisson octree depth")
    ap.add_argument("--samples", type=int, default=ScoreConfig().samples, help="points per surface when scoring")
    ap.add_argument("--seed", type=int, default=0, help="seeds inputs, fits and scoring")
    ap.add_argument("--keep", type=Path, default=None, help="keep inputs and meshes under this folder")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to smoke-test the script")
    ap.add_argument("--no-poisson", action="store_true", help="score siren3d alone (no Open3D needed)")
    ap.add_argument("--render", type=Path, nargs="?", const=RENDER_DIR, default=None, metavar="DIR",
                    help=f"render reference / siren3d / Poisson side by side into DIR [default: {RENDER_DIR}]: "
                         "SCAN-REGIME.png, SCAN-REGIME-closeup.png and SCAN-REGIME-detail.png")
    ap.add_argument("--render-size", type=int, default=400, help="pixels per panel side of the renders")
    args = ap.parse_args()

    fit_args = (QUICK_FIT if args.quick else []) + shlex.split(args.fit_args)
    if args.steps is not None:
        fit_args += ["--steps", str(args.steps)]
    res, depth, samples = (64, 6, 20_000) if args.quick else (args.res, args.depth, args.samples)
    scans = args.scans or ([s for s in SCANS if (args.data / f"{s}.ply").exists()] or ["synthetic"])

    root = args.keep or Path(tempfile.mkdtemp(prefix="siren3d-quality-"))
    try:
        for name in scans:
            reference, label = load_case_reference(name, args.data, args.seed)
            lo, hi = bounds(reference)
            diag = float(np.linalg.norm(hi - lo))
            floor = (score_mesh(reference, reference, n_samples=samples, seed=args.seed + 1000,
                                surface=False)["chamfer_l1_rel"]
                     if hasattr(reference, "faces") else None)
            for regime in args.regimes:
                count, noise = REGIMES[regime]
                count = QUICK_POINTS[regime] if args.quick else count
                work = root / label / regime
                work.mkdir(parents=True, exist_ok=True)
                points, normals = make_input(reference, count, noise, diag, args.seed)
                input_ply = work / "input.ply"
                extra = {}
                if regime in WITHOUT_NORMALS:
                    save_points_ply(input_ply, points)
                    true = normals
                    normals = estimate_normals(points)
                    extra["normals_wrong_way"] = round(float((np.einsum("ij,ij->i", normals, true) < 0).mean()), 4)
                else:
                    save_points_ply(input_ply, points, normals)

                siren, siren_mesh = run_siren(input_ply, work, fit_args, res, args.seed)
                poisson, poisson_mesh = ({}, None) if args.no_poisson else run_poisson(points, normals, work, depth)
                # Scores use other samples than the inputs (seed + 1000): a method is not rewarded
                # for reproducing the very points it was given, except on a raw scan (see above).
                siren_scores = score(siren_mesh, reference, samples, args.seed + 1000)
                poisson_scores = score(poisson_mesh, reference, samples, args.seed + 1000)
                line = {"bench": "quality", "scan": label, "regime": regime, "input_points": len(points),
                        "noise_sigma": round(noise * diag, 7), "seed": args.seed, "quick": args.quick,
                        "fit_args": fit_args, "res": res, "depth": depth, **extra}
                line.update({k: (poisson_scores or siren_scores).get(k) for k in REFERENCE_KEYS})
                if floor is not None:
                    line["floor_chamfer_l1_rel"] = round(floor, 7)
                own = REFERENCE_KEYS + ("seed",)
                line["siren"] = {**siren, **{k: v for k, v in siren_scores.items() if k not in own}}
                if not args.no_poisson:
                    line["poisson"] = {**poisson, **{k: v for k, v in poisson_scores.items() if k not in own}}
                if siren_scores and poisson_scores:
                    line["chamfer_ratio"] = round(siren_scores["chamfer_l1"] / poisson_scores["chamfer_l1"], 4)
                    if "surface_chamfer_l1" in siren_scores:
                        line["surface_chamfer_ratio"] = round(
                            siren_scores["surface_chamfer_l1"] / poisson_scores["surface_chamfer_l1"], 4)
                    line["normal_consistency_diff"] = round(
                        siren_scores["normal_consistency"] - poisson_scores["normal_consistency"], 5)
                if args.render is not None:
                    line["render"] = render(reference, label, regime, siren_mesh, siren_scores, poisson_mesh,
                                            poisson_scores, args.render, args.render_size, args.seed)
                print(json.dumps(line), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
