"""Mesh extraction speed and memory: sparse coarse-to-fine vs dense, on a fitted default-size network.

Prints one JSON line per case. Each case runs in its own process so its peak RSS is its own.

    .venv/bin/python benchmarks/mesh.py                       # fits data/sample.ply once (cached), then measures
    .venv/bin/python benchmarks/mesh.py --model runs/x/model.pt --res 256 512 1024 --dense-max 512

Cases: sparse at each --res (refine 0 and the default), dense where res <= --dense-max, a comparison of
the sparse and dense surfaces at --compare-res (faces, largest centroid distance), and the safety-factor
study: faces lost against dense for smaller safety factors (how large the factor must be).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_case(model_path: str, res: int, method: str, refine: int, safety: float, out: str | None) -> dict:
    import numpy as np
    import torch

    from siren3d.checkpoint import load_checkpoint
    from siren3d.meshing import DEFAULT_SAFETY, extract_mesh

    ckpt = load_checkpoint(model_path)
    t0 = time.perf_counter()
    m = extract_mesh(ckpt.model, ckpt.normalization, res=res, method=method, refine=refine,
                     safety=safety or DEFAULT_SAFETY, min_component=0.0)
    seconds = time.perf_counter() - t0
    if out:
        np.savez(out, vertices=m.vertices, faces=m.faces)
    s = m.stats
    row = {"bench": "mesh", "res": res, "method": method, "refine": refine, "safety": s.get("safety"),
           "seconds": round(seconds, 2), "evaluations": s["evaluations"], "dense_evaluations": s["dense_evaluations"],
           "fewer_evaluations_x": round(s["dense_evaluations"] / s["evaluations"], 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "vertices": s["vertices"], "faces": s["faces"], "components": s["components"],
           "watertight": s["watertight"], "threads": torch.get_num_threads()}
    if "level_error" in s:
        row["level_error_scan_units"] = {k: float(f"{v:.3g}") for k, v in s["level_error"].items()}
    return row


def run_case(args, res, method, refine=None, safety=0.0, out=None) -> dict:
    refine = args.refine if refine is None else refine
    cmd = [sys.executable, __file__, "--case", args.model, str(res), method, str(refine), str(safety), out or ""]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        return {"bench": "mesh", "res": res, "method": method, "error": r.stderr.strip().splitlines()[-1:]}
    row = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def compare(a_path: str, b_path: str, tol: float = 1e-3) -> dict:
    """Faces of a and b matched by centroid; tol in scan units."""
    import numpy as np
    from scipy.spatial import cKDTree

    a, b = np.load(a_path), np.load(b_path)
    ca = a["vertices"][a["faces"]].mean(1)
    cb = b["vertices"][b["faces"]].mean(1)
    d_ab = cKDTree(cb).query(ca)[0] if len(cb) else np.array([np.inf])
    d_ba = cKDTree(ca).query(cb)[0] if len(ca) else np.array([np.inf])
    return {"faces_a": len(ca), "faces_b": len(cb), "max_centroid_distance": float(max(d_ab.max(), d_ba.max())),
            "faces_of_a_missing_from_b": int((d_ab > tol).sum())}


def ensure_model(path: str | None) -> str:
    if path:
        return path
    run = ROOT / "runs" / "bench-mesh"
    if not (run / "model.pt").exists():
        print(json.dumps({"bench": "mesh", "note": f"fitting data/sample.ply with default settings into {run}"}),
              flush=True)
        subprocess.run([str(Path(sys.executable).parent / "siren3d"), "fit", "data/sample.ply", "--out", str(run),
                        "-q"], check=True, cwd=ROOT)
    return str(run / "model.pt")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        _, _, model, res, method, refine, safety, out = sys.argv
        print(json.dumps(one_case(model, int(res), method, int(refine), float(safety), out or None)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model.pt [default: fit data/sample.ply once, cached in runs/]")
    ap.add_argument("--res", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--dense-max", type=int, default=512, help="largest res measured densely too")
    ap.add_argument("--refine", type=int, default=None, help="Newton steps [default: siren3d's default]")
    ap.add_argument("--compare-res", type=int, default=256)
    ap.add_argument("--safety", type=float, nargs="*", default=[0.25, 0.5, 0.75, 1.0],
                    help="smaller safety factors to test against dense at --compare-res")
    args = ap.parse_args()
    from siren3d.meshing import DEFAULT_REFINE

    args.refine = DEFAULT_REFINE if args.refine is None else args.refine
    args.model = ensure_model(args.model)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        dense_cmp = f"{tmp}/dense.npz"
        run_case(args, args.compare_res, "dense", refine=0, out=dense_cmp)
        sparse_cmp = f"{tmp}/sparse.npz"
        run_case(args, args.compare_res, "sparse", refine=0, out=sparse_cmp)
        print(json.dumps({"bench": "mesh-compare", "res": args.compare_res, "a": "dense", "b": "sparse",
                          **compare(dense_cmp, sparse_cmp)}), flush=True)
        for safety in args.safety:
            out = f"{tmp}/s{safety}.npz"
            row = run_case(args, args.compare_res, "sparse", refine=0, safety=safety, out=out)
            if "error" not in row:
                print(json.dumps({"bench": "mesh-safety", "res": args.compare_res, "safety": safety,
                                  **compare(dense_cmp, out)}), flush=True)
    for res in args.res:
        measured = res == args.compare_res  # sparse and dense at refine 0 were printed above
        if not measured:
            run_case(args, res, "sparse", refine=0)
        if args.refine:
            run_case(args, res, "sparse")
        if res <= args.dense_max and not measured:
            run_case(args, res, "dense", refine=0)


if __name__ == "__main__":
    main()
