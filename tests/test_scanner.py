"""The virtual scanner: what it sees of known shapes from known places."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from siren3d.scanner import scan_mesh, viewpoint


@pytest.fixture(scope="module")
def ball():
    return trimesh.creation.icosphere(subdivisions=5, radius=1.0)


def test_one_view_sees_the_near_side_with_normals_towards_the_sensor(ball):
    eye = viewpoint((0, 0, 0), 5.0, azimuth=0, elevation=0)
    assert np.allclose(eye, [5, 0, 0])
    scan = scan_mesh(ball.vertices, ball.faces, eye, resolution=96, max_incidence=80)
    assert len(scan) > 3000
    assert np.abs(np.linalg.norm(scan.points, axis=1) - 1).max() < 2e-3  # on the (faceted) sphere
    # The near side only, and not at grazing angles: cos(incidence) >= cos(80 deg) (the faceted
    # sphere's normals differ a little from the point's direction).
    to_sensor = scan.sensors - scan.points
    cos = np.einsum("ij,ij->i", scan.normals, to_sensor / np.linalg.norm(to_sensor, axis=1, keepdims=True))
    assert cos.min() >= np.cos(np.radians(80)) - 1e-6
    assert scan.points[:, 0].min() > 0.1
    assert np.allclose(scan.sensors, eye) and (scan.view == 0).all()
    assert np.einsum("ij,ij->i", scan.normals, scan.points).min() > 0.99  # outward is towards it here
    assert np.allclose(np.linalg.norm(scan.normals, axis=1), 1, atol=1e-6)


def test_views_add_up_and_range_noise_runs_along_the_rays(ball):
    eyes = [viewpoint((0, 0, 0), 4.0, azimuth=a, elevation=10) for a in (0, 120, 240)]
    clean = scan_mesh(ball.vertices, ball.faces, eyes, resolution=64)
    noisy = scan_mesh(ball.vertices, ball.faces, eyes, resolution=64, noise=0.02, seed=3)
    assert sorted(np.unique(clean.view)) == [0, 1, 2] and len(clean) == len(noisy)
    for i, eye in enumerate(eyes):
        assert np.allclose(clean.sensors[clean.view == i], eye)
    # Every side of the ball is seen by some view.
    directions = clean.points / np.linalg.norm(clean.points, axis=1, keepdims=True)
    for az in (60, 180, 300):
        d = viewpoint((0, 0, 0), 1.0, azimuth=az, elevation=10)
        assert (directions @ d).max() > 0.95
    # Noise moves each point along its ray: the offset is parallel to (point - sensor).
    offset = noisy.points - clean.points
    ray = clean.points - clean.sensors
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    assert np.allclose(np.cross(offset, ray), 0, atol=1e-9)
    assert np.std(np.einsum("ij,ij->i", offset, ray)) == pytest.approx(0.02, rel=0.05)
    scan = noisy.to_scan()
    assert np.array_equal(scan.points, noisy.points) and scan.normals.dtype == np.float32
    assert np.array_equal(scan.sensor, noisy.sensors)
