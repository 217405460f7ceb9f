"""Normals for scans that come without them: kNN PCA, oriented toward the sensor when its position
is known, else consistently (minimum spanning tree) and outward."""

from __future__ import annotations

import numpy as np


def estimate_normals(points: np.ndarray, k: int = 20, sensor: np.ndarray | None = None) -> np.ndarray:
    """Unit normals by kNN PCA (Open3D).

    points: (N, 3) float64. sensor: None, or the scanner position(s), (3,) or (N, 3): each normal
    then points to the side its sensor saw, which is exact for a single view (the sensor sees the
    outside), where tangent-plane propagation can flip whole regions. Without a sensor, normals are
    oriented consistently along a minimum spanning tree and then outward (most point away from the
    centroid, as on a closed scan). Returns (N, 3) float64.
    """
    import open3d as o3d

    # Centred first: survey coordinates (LiDAR at 5e6 m) otherwise leave Open3D's one-pass covariances
    # and tangent-plane orientation too little precision (half the normals of a sphere came out flipped).
    centre = points.mean(0)
    points = points - centre
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    k = int(min(k, len(points) - 1))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=k))
    if sensor is not None:
        return orient_toward(points, np.asarray(pcd.normals), np.asarray(sensor) - centre)
    # Open3D orients along a graph built by a Delaunay triangulation (qhull), which fails on exactly
    # cospherical points (a sampled sphere): the graph is built on a copy moved by 1e-6 of the extent.
    jittered = points + np.random.default_rng(0).normal(scale=1e-6 * max(np.abs(points).max(), 1e-300),
                                                        size=points.shape)
    graph = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(jittered))
    graph.normals = pcd.normals
    try:
        graph.orient_normals_consistent_tangent_plane(k)
    except RuntimeError:  # degenerate neighbourhoods (e.g. coplanar): fall back to a viewpoint
        graph.orient_normals_towards_camera_location(points.mean(0) + 10 * (points.max(0) - points.min(0) + 1))
    normals = np.asarray(graph.normals).copy()
    # Consistent is not yet outward: most normals of a closed scan point away from the centroid.
    if np.sum(np.einsum("ij,ij->i", normals, points)) < 0:
        normals = -normals
    return normals


def orient_toward(points: np.ndarray, normals: np.ndarray, sensor: np.ndarray) -> np.ndarray:
    """``normals`` flipped where they point away from ``sensor`` ((3,) or (N, 3)). Returns a copy."""
    normals = np.array(normals, dtype=np.float64)
    away = np.einsum("ij,ij->i", normals, np.broadcast_to(sensor, points.shape) - points) < 0
    normals[away] *= -1
    return normals
