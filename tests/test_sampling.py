"""Training batches: near-surface noise scale and the inside/outside vote of off-surface points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siren3d.sampling import Sampler


def test_side_vote_matches_the_sphere_and_abstains_near_the_surface(sphere_points):
    pts, nrm = sphere_points  # radius 0.5, outward normals
    s = Sampler(pts, nrm, batch=256, uniform_ratio=1.0, near_ratio=0.5, seed=0, sign_k=8)
    x = np.random.default_rng(0).uniform(-1, 1, (20000, 3)).astype(np.float32)
    side, distance = s.side_and_distance(x)
    r = np.linalg.norm(x, axis=1)
    far = np.abs(r - 0.5) > 1.5 * s.sign_min_distance
    assert far.sum() > 10000
    assert (side[far & (r > 0.5)] == 1).all() and (side[far & (r < 0.5)] == -1).all()
    # too close to tell: no vote, and no distance
    close = np.abs(r - 0.5) < 0.5 * s.sign_min_distance
    assert (side[close] == 0).all() and (distance[close] == 0).all()
    assert 0 < s.sign_min_distance < 0.2
    # away from the scan the distance to the nearest scan point is the distance to the surface
    exact = np.abs(r[far] - 0.5)
    assert np.abs(distance[far] - exact).max() < 0.01 and np.median(distance[far] / exact) == pytest.approx(1, abs=0.01)


def test_batches_carry_sides_for_every_off_surface_point_and_are_reproducible(sphere_points):
    pts, nrm = sphere_points
    a = Sampler(pts, nrm, batch=128, uniform_ratio=1.0, near_ratio=0.5, seed=3, sign_k=8).sample()
    b = Sampler(pts, nrm, batch=128, uniform_ratio=1.0, near_ratio=0.5, seed=3, sign_k=8).sample()
    assert a.uniform.shape == (128, 3) and a.near.shape == (64, 3) and a.off_sign.shape == (192,)
    assert torch.equal(a.uniform, b.uniform) and torch.equal(a.off_sign, b.off_sign)
    assert torch.equal(a.off_distance, b.off_distance) and (a.off_distance[128:] == 0).all()  # near: unknown
    known = a.off_sign[:128] != 0
    assert ((a.off_distance[:128] > 0) == known).all()
    # near-surface points stay near the surface: within a few point spacings of radius 0.5
    assert (a.near.norm(dim=1) - 0.5).abs().max() < 0.2
    assert Sampler(pts, nrm, batch=128, uniform_ratio=1.0, seed=3).sample().off_sign is None  # off: not computed


def test_noise_ratio_tells_noisy_scans_from_clean_ones_at_any_scale():
    """Clean samples of a curved surface score well under NOISY_RATIO, the same with Gaussian noise
    of twice the point spacing well over it; the figure does not depend on units or position."""
    from siren3d.sampling import local_spacing, scan_sampling
    from siren3d.synthetic import sample_surface, torus
    from siren3d.training import NOISY_RATIO

    pts, _ = sample_surface(torus(0.5, 0.18), 20000, res=64, seed=4)
    spacing = float(np.median(local_spacing(pts, k=1)))

    def noise_ratio(points):
        return scan_sampling(points)[1]

    noisy = pts + np.random.default_rng(0).normal(scale=2 * spacing, size=pts.shape)
    clean_r, noisy_r = noise_ratio(pts), noise_ratio(noisy)
    assert clean_r < 0.3 < NOISY_RATIO < 0.6 < noisy_r, (clean_r, noisy_r)
    assert noise_ratio(pts * 1000.0 + 5e4) == pytest.approx(clean_r, rel=1e-3)
    assert noise_ratio(pts[:3]) == 0.0  # too few points to say: treated as clean


def test_the_scan_spacing_ignores_exact_duplicates_and_too_few_points_get_the_cautious_rate():
    """Points repeated exactly (vertices split along a mesh's seams) are not a spacing of 0, which
    would give the sparsest scans the dense learning rate; too few points to measure get lr_sparse."""
    from siren3d.config import FitConfig
    from siren3d.sampling import scan_sampling
    from siren3d.synthetic import sample_surface, torus
    from siren3d.training import lr_for_spacing

    pts, _ = sample_surface(torus(0.5, 0.18), 2000, res=64, seed=4)
    spacing, ratio = scan_sampling(pts)
    repeated, _ = scan_sampling(np.repeat(pts, 3, axis=0))
    assert spacing > 0 and repeated == pytest.approx(spacing, rel=0.1)
    assert scan_sampling(pts[:3]) == (0.0, 0.0)
    cfg = FitConfig()
    assert lr_for_spacing(cfg, 0.0) == cfg.lr_sparse < cfg.lr


def test_a_smaller_batch_keeps_the_off_surface_points_in_proportion(sphere_points):
    """A growing batch (FitConfig.batch_start) draws fewer scan points early on: the uniform and
    near-surface points shrink with them, each with its known side."""
    pts, nrm = sphere_points
    s = Sampler(pts, nrm, batch=1000, uniform_ratio=0.5, near_ratio=0.25, seed=0, sign_k=8)
    full, small = s.sample(), s.sample(400)
    assert (len(full.on), len(full.uniform), len(full.near)) == (1000, 500, 250)
    assert (len(small.on), len(small.uniform), len(small.near)) == (400, 200, 100)
    assert len(small.off_sign) == len(small.off_distance) == 300 and (small.off_sign[200:] == 0).all()
    assert (small.off_sign[:200] != 0).any()
