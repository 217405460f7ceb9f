"""How close the fitted field itself comes to a reference surface: the network's mean |f| there.

For each reference mesh (``../shared/data`` names, or paths) a clean input of 100,000 points with
normals is sampled (seeded, as ``benchmarks/quality.py`` does), fitted through the library
(``siren3d.fit``) with the defaults and with each variant, and f is evaluated at 200,000 points
sampled on the reference surface. Prints one JSON line per (scan, seed, variant): training time,
steps, collapses caught and ``mean_abs_f`` as a fraction of the reference's bounding-box diagonal.
No meshing and no floor: this is the error the mesh inherits (on Lucy the mesh's distance to the
reference was within 3 % of it), measured in a minute per fit. Variants of one scan and seed run
one after another, so their times share the machine's load.

    python benchmarks/surface_fit.py [--scans lucy bunny /path/dragon.ply] [--seeds 0 1]
        [--fit-args "name=value ..."] [--variant NAME "name=value ..." ...]

e.g. ``--variant whole "batch_start=1 steps=1700"`` compares the defaults with the whole batch at
every step (the defaults always run, as ``default``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from field import fit_overrides  # noqa: E402  (the same 'name=value' settings)
from quality import DATA, load_case_reference, make_input  # noqa: E402  (the same inputs)

from siren3d.config import fit_config  # noqa: E402
from siren3d.field import field_values  # noqa: E402
from siren3d.io import Scan, sample_mesh_surface  # noqa: E402
from siren3d.training import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", nargs="+", default=["lucy", "bunny"], help="reference meshes: names in --data, or paths")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="fit seeds (the input is always seed 0's)")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--eval-points", type=int, default=200_000)
    ap.add_argument("--fit-args", default="", help="settings of every fit, 'name=value ...' (variants add theirs)")
    ap.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "SETTINGS"))
    args = ap.parse_args()
    variants = [("default", "")] + [tuple(v) for v in args.variant]
    for name in args.scans:
        reference, label = load_case_reference(name, args.data, 0)
        if not hasattr(reference, "faces"):
            sys.exit(f"{name}: a reference mesh is needed (a scan has no surface to measure f on)")
        vertices, faces = np.asarray(reference.vertices), np.asarray(reference.faces)
        diag = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
        points, normals = make_input(reference, args.points, 0.0, diag, 0)
        at, _, _ = sample_mesh_surface(vertices, faces, args.eval_points, seed=1)
        scan = Scan(points.astype(np.float64), normals.astype(np.float32), path=f"{label}.ply")
        for seed in args.seeds:
            for variant, settings in variants:
                config = fit_config(None, seed=seed, **fit_overrides(f"{args.fit_args} {settings}"))
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    result = fit(scan, config, Path(tmp) / "run", progress=False)
                    fit_s = time.perf_counter() - t0
                    recoveries = json.loads((Path(tmp) / "run" / "fit.json").read_text()).get("recoveries", [])
                f = field_values(result.model, result.normalization.to_unit(at)).astype(np.float64)
                error = float(result.normalization.distance_to_scan(np.abs(f).mean())) / diag
                print(json.dumps({"bench": "surface_fit", "scan": label, "seed": seed, "variant": variant,
                                  "settings": settings, "steps": result.config.steps, "train_s": round(result.seconds, 1),
                                  "fit_s": round(fit_s, 1), "collapses": len(recoveries),
                                  "mean_abs_f": error}), flush=True)


if __name__ == "__main__":
    main()
