"""Smoothing a noisy scan's positions along its normals, before the fit.

Each pass moves every point along its own normal to the weighted mean offset of its DENOISE_K
nearest neighbours (their positions projected on that normal). A neighbour's weight is a Gaussian
of its distance across the normal (scale: half the median distance to the k-th neighbour) times how
far its normal agrees with the point's (max(0, cos)): a neighbour on the other sheet of a thin part,
or across a sharp edge, gets little or no weight. Points only move along their normals, so the
sampling across the surface stays as it was.

The normals carry what the positions lose to noise: on Lucy with Gaussian noise of 0.5 % of its
diagonal (and exact normals), the fit on the smoothed points came 0.875x Poisson's Chamfer distance
against 0.967x on the raw ones, the thin parts 0.836x against 0.957x (``benchmarks/quality.py``; see
the README). The fit still averages what is left.

A noisy scan that came without normals has them estimated at load over too few neighbours for its
noise; :func:`normals_to_smooth_along` estimates them again over NOISY_NORMALS_K, and the fit then
both smooths along them and trains on them.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: Neighbours each point is averaged with.
DENOISE_K = 32
#: Neighbours the normals of a noisy scan that came without them are estimated from again. At load
#: siren3d estimates over 20 (siren3d.io.normals): on the quality benchmark's noisy Lucy (noise 0.5 %
#: of the diagonal, 1.5 point spacings) 37 % of those pointed the wrong way; over 64, 16 % (128: 16 %
#: too, in 19 s instead of 11 s for 100k points).
NOISY_NORMALS_K = 64
#: Points smoothed at a time (the neighbour arrays are CHUNK x k x 3: 77 MB in float64).
CHUNK = 100_000
#: Scans with fewer points are not smoothed: DENOISE_K neighbours are then a large part of the
#: surface (0.6 % of it at 5,000 points), and averaging them flattens real relief. Lucy from 5,000
#: points measures as noisy (its relief at that sampling looks like 0.74 point spacings of noise)
#: and came out 2.23x Poisson's Chamfer distance smoothed; the thin parts from 5,000 points 0.571x
#: against 0.504x. The smoothing was measured on noisy scans of 100,000 points (DENOISE_K of them:
#: 0.03 % of the surface). A point count, not a spacing: the noisy thin parts (100,000 points,
#: 0.0107 of the unit box apart, and smoothing helps them) and that sparse Lucy (0.0117) are
#: spaced almost alike.
MIN_POINTS = 20_000


def denoise_along_normals(points: np.ndarray, normals: np.ndarray, passes: int, k: int = DENOISE_K
                          ) -> tuple[np.ndarray, dict]:
    """Points (N, 3) moved along their unit normals (N, 3), ``passes`` times.

    Returns (float32 points, stats: passes, k and the mean and largest distance moved, in the points'
    units). Fewer than 4 points, or passes 0: the points as they are.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    k = int(min(k, len(p)))
    if passes <= 0 or k < 4:
        return np.asarray(points, dtype=np.float32), {"passes": 0, "k": k, "moved_mean": 0.0, "moved_max": 0.0}
    start = p.copy()
    for _ in range(passes):
        tree = cKDTree(p)
        # One chunk (scans up to CHUNK points): its neighbours give the scale and the weights alike;
        # more: the k-th distances first (one value per point), the neighbours chunk by chunk.
        whole = tree.query(p, k=k, workers=-1) if len(p) <= CHUNK else None
        kth = whole[0][:, -1] if whole is not None else np.concatenate(
            [tree.query(p[a:a + CHUNK], k=[k], workers=-1)[0][:, 0] for a in range(0, len(p), CHUNK)])
        scale = 0.5 * float(np.median(kth))  # the Gaussian's scale, from the k-th neighbour's distance
        if not scale > 0:
            break
        shift = np.empty(len(p))
        for a in range(0, len(p), CHUNK):
            pa, na = p[a:a + CHUNK], n[a:a + CHUNK]
            d, j = whole if whole is not None else tree.query(pa, k=k, workers=-1)
            offset = np.einsum("mkc,mc->mk", p[j] - pa[:, None, :], na)  # along the point's own normal
            across = np.sqrt(np.maximum(d * d - offset * offset, 0.0))
            w = np.exp(-(across / scale) ** 2) * np.maximum(np.einsum("mkc,mc->mk", n[j], na), 0.0)
            shift[a:a + CHUNK] = np.einsum("mk,mk->m", w, offset) / np.maximum(w.sum(1), 1e-12)
        p = p + shift[:, None] * n
    moved = np.linalg.norm(p - start, axis=1)
    return p.astype(np.float32), {"passes": int(passes), "k": k, "moved_mean": float(moved.mean()),
                                  "moved_max": float(moved.max())}


def normals_to_smooth_along(scan) -> tuple[np.ndarray, int | None]:
    """A noisy :class:`~siren3d.io.Scan`'s normals to smooth along: its own where they came with it,
    else estimated again over NOISY_NORMALS_K neighbours (toward its sensor where it is known).
    Returns ((N, 3) float32 unit normals, the neighbours they were estimated over or None)."""
    if not scan.normals_estimated:
        return np.asarray(scan.normals, dtype=np.float32), None
    from .io.normals import estimate_normals

    log.info("noisy scan without normals: estimating them again over %d neighbours", NOISY_NORMALS_K)
    normals = estimate_normals(np.asarray(scan.points, dtype=np.float64), k=NOISY_NORMALS_K, sensor=scan.sensor)
    return normals.astype(np.float32), NOISY_NORMALS_K
