"""Writing point clouds: binary PLY, atomically."""

from __future__ import annotations

import os

import numpy as np

from ..files import atomic_output


def save_points_ply(path: str | os.PathLike, points: np.ndarray, normals: np.ndarray | None = None,
                    colors: np.ndarray | None = None) -> None:
    """Write a binary little-endian PLY point cloud atomically: float32 x y z [nx ny nz] and, with
    ``colors`` ((N, 3) or (N, 4) uint8), uchar red green blue [alpha]."""
    points = np.asarray(points, dtype=np.float32)
    cols = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        cols += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        cols += [(c, "u1") for c in ("red", "green", "blue", "alpha")[:colors.shape[1]]]
    arr = np.empty(len(points), dtype=cols)
    for i, c in enumerate("xyz"):
        arr[c] = points[:, i]
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32)
        for i, c in enumerate(("nx", "ny", "nz")):
            arr[c] = normals[:, i]
    if colors is not None:
        for i, c in enumerate(("red", "green", "blue", "alpha")[:colors.shape[1]]):
            arr[c] = colors[:, i]
    header = "ply\nformat binary_little_endian 1.0\ncomment written by siren3d\n"
    header += f"element vertex {len(points)}\n"
    header += "".join(f"property {'float' if t == '<f4' else 'uchar'} {c}\n" for c, t in cols)
    header += "end_header\n"
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(arr.tobytes())
