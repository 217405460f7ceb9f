"""The benchmark's analytic shapes: exact distances, the topology they are meant to have, flat faces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from siren3d.synthetic import cad_part, gradient, mesh_sdf, sample_surface, thin_parts


@pytest.mark.parametrize("make", [cad_part, thin_parts])
def test_outside_the_value_is_the_distance_to_the_surface(make):
    # For an exact distance, stepping d along -grad lands on the surface (d is reached), and no
    # surface point is closer than d (dense surface samples: within their spacing).
    sdf = make()
    q = np.random.default_rng(0).uniform(-1, 1, size=(4000, 3))
    d = sdf(q)
    out = d > 1e-3
    g = gradient(sdf, q[out], eps=1e-6)
    assert np.abs(np.linalg.norm(g, axis=1) - 1).max() < 1e-4
    assert np.abs(sdf(q[out] - d[out, None] * g)).max() < 1e-6
    surface, _ = sample_surface(sdf, 20_000, res=96, seed=0)
    nearest, _ = cKDTree(surface).query(q[out])
    assert np.all(d[out] <= nearest + 1e-9)  # never farther than a real surface point
    assert np.median(nearest - d[out]) < 0.01  # and about as near as the nearest sample


def test_the_cad_part_is_exact_inside_too_and_a_plate_with_three_holes():
    sdf = cad_part()
    q = np.random.default_rng(1).uniform([-0.7, -0.5, -0.25], [0.7, 0.5, 0.25], size=(4000, 3))
    d = sdf(q)
    inside = d < -1e-3
    g = gradient(sdf, q[inside], eps=1e-6)
    assert np.abs(sdf(q[inside] - d[inside, None] * g)).max() < 1e-6
    v, f = mesh_sdf(sdf, res=96)
    import trimesh

    mesh = trimesh.Trimesh(v, f, process=True)
    assert mesh.is_watertight and mesh.body_count == 1
    assert mesh.euler_number == 2 - 2 * 3  # genus 3: two round holes and the slot go through
    assert mesh.volume > 0  # wound outward


def test_the_cad_parts_top_face_is_flat_and_its_edges_sharp():
    sdf = cad_part()
    top = np.array([[0.0, 0.3, 0.25], [-0.5, -0.3, 0.25], [0.1, 0.0, 0.25]])  # away from holes and edges
    assert np.abs(sdf(top)).max() < 1e-12
    n = gradient(sdf, top + [0, 0, 1e-3], eps=1e-6)
    assert np.allclose(n, [0, 0, 1], atol=1e-6)
    # just outside the edge between the top face and the +x wall the normal turns through 90 degrees
    below_edge, above_edge = gradient(sdf, np.array([[0.7005, 0.0, 0.2495], [0.6995, 0.0, 0.2505]]), eps=1e-6)
    assert np.allclose(below_edge, [1, 0, 0], atol=1e-6) and np.allclose(above_edge, [0, 0, 1], atol=1e-6)


def test_thin_parts_keep_their_thickness_and_form_one_closed_piece():
    sdf = thin_parts()
    # across the thinnest fin (x = 0.1, 0.02 thick) the distance dips to -0.01 at its middle plane
    x = np.linspace(0.08, 0.12, 401)
    d = sdf(np.stack([x, np.zeros_like(x), np.zeros_like(x)], axis=1))
    assert np.isclose(d.min(), -0.01, atol=1e-6) and np.isclose(x[np.argmin(d)], 0.1, atol=1e-4)
    assert np.isclose(np.ptp(x[d <= 0]), 0.02, atol=2e-4)
    v, f = mesh_sdf(sdf, res=160)
    import trimesh

    mesh = trimesh.Trimesh(v, f, process=True)
    assert mesh.is_watertight and mesh.body_count == 1 and mesh.euler_number == 2
