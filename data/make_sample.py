"""Make data/sample.ply, the bundled demo scan (run: python data/make_sample.py).

A ring with a hole through it, a thin post and a dented ball, sampled from its exact signed distance:
20,000 points with unit normals and mild Gaussian noise (0.1 % of the bounding-box diagonal), placed
in millimetre-like coordinates away from the origin so that normalization is exercised.
"""

from pathlib import Path

import numpy as np

from siren3d.io import save_points_ply
from siren3d.synthetic import sample_shape, sample_surface

SCALE = 60.0                      # unit box -> "millimetres"
OFFSET = np.array([120.0, -35.0, 410.0])


def main(out: Path = Path(__file__).with_name("sample.ply"), count: int = 20_000, seed: int = 7) -> Path:
    pts, normals = sample_surface(sample_shape(), count, res=160, seed=seed)
    diag = np.linalg.norm(pts.max(0) - pts.min(0))
    pts = pts + np.random.default_rng(seed).normal(scale=0.001 * diag, size=pts.shape)
    save_points_ply(out, pts * SCALE + OFFSET, normals)
    return out


if __name__ == "__main__":
    path = main()
    print(f"wrote {path}")
