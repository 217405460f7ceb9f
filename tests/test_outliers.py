"""Stray points are dropped before fitting; real points of clean and noisy scans are not."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from siren3d.io import find_outliers, load_scan, save_points_ply
from siren3d.synthetic import sample_shape, sample_surface, sphere, torus

N_SPHERE = 5000
RADIUS = 0.5


@pytest.fixture(scope="module")
def sphere_with_strays():
    """5,000 points on a sphere plus 3 % uniform stray points in its bounding box grown by 10 % a side."""
    pts, nrm = sample_surface(sphere(RADIUS), N_SPHERE, res=64, seed=7)
    rng = np.random.default_rng(8)
    lo, hi = pts.min(0), pts.max(0)
    strays = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), size=(int(0.03 * N_SPHERE), 3))
    spacing = np.sqrt(4 * np.pi * RADIUS ** 2 / N_SPHERE)
    height = np.abs(np.linalg.norm(strays, axis=1) - RADIUS) / spacing  # in point spacings
    return pts, nrm, strays, height


def test_three_percent_uniform_strays_around_a_sphere_are_dropped(tmp_path, sphere_with_strays, caplog):
    pts, nrm, strays, height = sphere_with_strays
    rng = np.random.default_rng(9)
    stray_normals = rng.normal(size=strays.shape)
    path = tmp_path / "ball_with_strays.ply"
    # in scan units far from the unit box: the test is scale-free
    save_points_ply(path, np.vstack([pts, strays]) * 250.0 + 1e3, np.vstack([nrm, stray_normals]))
    with caplog.at_level(logging.WARNING, logger="siren3d"):
        scan = load_scan(path)
    kept = (scan.points - 1e3) / 250.0
    real_kept = np.abs(np.linalg.norm(kept, axis=1) - RADIUS) < 1e-4
    assert real_kept.sum() == N_SPHERE  # no real point dropped
    stray_kept = ~real_kept
    assert scan.outliers == len(pts) + len(strays) - len(scan)
    # every stray farther than 5 point spacings from the surface is gone, and most of the rest
    from scipy.spatial import cKDTree

    d, _ = cKDTree(strays).query(kept[stray_kept])
    assert d.max() < 1e-4
    survivors = np.zeros(len(strays), dtype=bool)
    survivors[cKDTree(strays).query(kept[stray_kept])[1]] = True
    assert not survivors[height > 5].any()
    assert (~survivors[height > 3]).mean() > 0.85
    # nearer than ~3 spacings a stray is as far out as a noisy scan's real points: kept, like noise
    assert scan.outliers > 0.5 * len(strays)
    message = f"dropped {scan.outliers:,} stray points of {len(pts) + len(strays):,}"
    assert any(message in r.message for r in caplog.records)
    assert any(message in n for n in scan.notes)  # fit.json stores the notes

    kept_all = load_scan(path, outliers="off")
    assert len(kept_all) == len(pts) + len(strays) and kept_all.outliers == 0


def test_the_test_is_scale_free(sphere_with_strays):
    pts, _, strays, _ = sphere_with_strays
    cloud = np.vstack([pts, strays])
    a = find_outliers(cloud * 1e-3)
    b = find_outliers(cloud * 1e4 - 5e3)
    np.testing.assert_array_equal(a, b)
    assert a.sum() > 0.5 * len(strays)


@pytest.mark.parametrize("name, points", [
    ("sphere 3k", lambda: sample_surface(sphere(0.5), 3000, res=64, seed=1)[0]),
    ("torus 4k", lambda: sample_surface(torus(0.5, 0.18), 4000, res=64, seed=2)[0]),
    ("sample 20k", lambda: sample_surface(sample_shape(), 20_000, seed=0)[0]),
    ("sample 20k, noise 0.5% of the box", lambda: sample_surface(sample_shape(), 20_000, seed=3, noise=0.01)[0]),
    ("sphere 500, sparse", lambda: sample_surface(sphere(0.5), 500, res=64, seed=4)[0]),
])
def test_clean_and_noisy_shapes_lose_no_point(name, points):
    assert find_outliers(points()).sum() == 0


def test_a_single_sensor_keeps_far_sparse_surfaces(tmp_path):
    """Panels facing a scanner at ranges 1 to 30, sampled at one angular step: the far panel is 30x
    sparser than the near one, yet real. Measured against its range it is as dense as the others."""
    rng = np.random.default_rng(0)
    eye = np.array([0.0, 0.0, 0.0])
    panels = []
    for i, r in enumerate((1.0, 2.0, 4.0, 8.0, 30.0)):
        # a panel at range r, 0.4 rad wide, in its own direction, with the same number of samples
        az = rng.uniform(-0.2, 0.2, 1500) + i * 1.2
        el = rng.uniform(-0.2, 0.2, 1500)
        d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=1)
        centre = np.array([np.cos(i * 1.2), np.sin(i * 1.2), 0.0])
        panels.append(eye + d * (r / (d @ centre))[:, None])  # the plane facing the scanner at distance r
    cloud = np.vstack(panels)
    far = np.arange(len(cloud)) >= 4 * 1500
    assert find_outliers(cloud)[far].all()  # without the sensor, the far panel looks stray
    assert not find_outliers(cloud, sensor=eye).any()
    path = tmp_path / "panels.npz"
    np.savez(path, points=cloud)
    assert len(load_scan(path, viewpoint="0,0,0")) == len(cloud)
