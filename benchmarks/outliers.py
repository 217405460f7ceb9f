"""The stray-point test (siren3d.io.outliers) on clean and noisy scans, and on stray points it must catch.

One JSON line per case: points, points dropped, seconds. A clean or noisy scan should lose no point;
``strays`` cases add uniform stray points in the bounding box (grown by 10 % a side) of a sampled
sphere and report how many were caught, overall and among those farther than 3 and 5 point spacings
from the surface (nearer ones are as far out as a noisy scan's real points).

Scans (``../shared/data``, skipped when absent): ``bunny`` and ``lucy`` are meshes, sampled as
``load_scan`` samples a mesh (200,000 points) and as ``benchmarks/quality.py`` makes its noisy (100,000
points, Gaussian noise of 0.5 % of the diagonal) and sparse (5,000) inputs; ``gargoyle_scan`` and
``bun045`` are raw scans, taken as they are. Always: the project's synthetic shapes.

    python benchmarks/outliers.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from siren3d.io import find_outliers, load_scan, sample_mesh_surface
from siren3d.synthetic import sample_shape, sample_surface, sphere, torus

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _mesh_samples(name: str, count: int, seed: int, noise: float = 0.0) -> np.ndarray:
    import trimesh

    mesh = trimesh.load(DATA / f"{name}.ply", process=False)
    pts, _, _ = sample_mesh_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64), count, seed=seed)
    if noise:
        diag = np.linalg.norm(pts.max(0) - pts.min(0))
        pts = pts + np.random.default_rng(seed + 1).normal(scale=noise * diag, size=pts.shape)
    return pts


def cases(seed: int):
    if DATA.is_dir():
        for name in ("bunny", "lucy"):
            yield f"{name} 200k samples", lambda n=name: _mesh_samples(n, 200_000, seed)
            yield f"{name} noisy 100k", lambda n=name: _mesh_samples(n, 100_000, seed, noise=0.005)
            yield f"{name} sparse 5k", lambda n=name: _mesh_samples(n, 5_000, seed)
        yield "gargoyle_scan", lambda: load_scan(DATA / "gargoyle_scan.ply", outliers="off").points
        yield "bun045", lambda: np.loadtxt(DATA / "bun045.xyz")
    yield "synthetic sample 20k", lambda: sample_surface(sample_shape(), 20_000, seed=seed)[0]
    yield "synthetic sample 20k noisy", lambda: sample_surface(sample_shape(), 20_000, seed=seed, noise=0.01)[0]
    yield "torus 4k", lambda: sample_surface(torus(0.5, 0.18), 4_000, res=64, seed=seed)[0]


def strays(count: int, fraction: float, seed: int) -> dict:
    pts, _ = sample_surface(sphere(0.5), count, res=64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    lo, hi = pts.min(0), pts.max(0)
    extra = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), size=(int(round(fraction * count)), 3))
    height = np.abs(np.linalg.norm(extra, axis=1) - 0.5) / np.sqrt(np.pi / count)  # in point spacings
    t0 = time.perf_counter()
    out = find_outliers(np.vstack([pts, extra]))
    seconds = time.perf_counter() - t0
    caught = out[count:]
    return {"case": f"sphere {count:,} + {fraction:.0%} strays", "points": count + len(extra),
            "real_dropped": int(out[:count].sum()), "strays": len(extra), "strays_dropped": int(caught.sum()),
            "beyond_3_spacings": f"{int(caught[height > 3].sum())}/{int((height > 3).sum())}",
            "beyond_5_spacings": f"{int(caught[height > 5].sum())}/{int((height > 5).sum())}",
            "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name, make in cases(args.seed):
        pts = make()
        t0 = time.perf_counter()
        dropped = int(find_outliers(pts).sum())
        print(json.dumps({"case": name, "points": len(pts), "dropped": dropped,
                          "seconds": round(time.perf_counter() - t0, 2)}), flush=True)
    for count, fraction in ((5_000, 0.03), (20_000, 0.03), (20_000, 0.10)):
        print(json.dumps(strays(count, fraction, args.seed + 7)), flush=True)


if __name__ == "__main__":
    main()
