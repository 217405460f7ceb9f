"""Training batches: scan points with normals, and off-surface points in the unit box.

Off-surface points come from two sources: uniform in [-1, 1]^3 (they see the whole box, so no
spurious surface survives far from the data) and, optionally, near the surface: a scan point moved
by Gaussian noise whose scale is the local point spacing (they shape the field where it matters).
Optionally uniform off-surface points also get the side of the scan they lie on (``sign``): from
their k nearest scan points, the sign of the distance-weighted sum of (x - p) . n. Points closer to
the scan than a few point spacings get no sign (0): there noise decides the side. Those with a side
also get a *distance*: the distance to their nearest scan point, which away from the scan (where
the point spacing is small against it) is the distance to the surface. These uniform points are
drawn from a fixed pool whose sides and distances are computed once. Losses on the sign and on
the signed distance remove "ghost" surfaces far from the data that the SIREN losses alone leave
behind, and make the field a true distance in the whole box, not only next to the surface.
All randomness comes from one torch.Generator whose state is saved for exact resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    on: torch.Tensor        # (B, 3) scan points, unit box
    normals: torch.Tensor   # (B, 3) unit normals
    uniform: torch.Tensor   # (U, 3) uniform in the box
    near: torch.Tensor      # (M, 3) near-surface points (M may be 0)
    off_sign: torch.Tensor | None = None  # (U + M,) +1 outside, -1 inside, 0 unknown; None: not computed
    off_distance: torch.Tensor | None = None  # (U + M,) unsigned distance to the scan where the side is known, else 0


def local_spacing(points: np.ndarray, k: int = 8) -> np.ndarray:
    """Distance to the k-th nearest neighbour of each point. points: (N, 3) -> (N,) float32."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    k = int(min(k, len(points) - 1))
    d, _ = tree.query(points, k=k + 1, workers=-1)
    return d[:, -1].astype(np.float32)


def scan_sampling(points: np.ndarray, k: int = 16, samples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """(median nearest-neighbour distance, noise ratio) of a scan, from one neighbour search.

    The spacing is in the points' units. The noise ratio is the median distance of a point's k
    nearest neighbours from their best-fitting plane, over that spacing: scale-free, and about
    0.1-0.3 on clean scans (what is left is curvature: 0.09 on points sampled from the bunny mesh,
    0.23-0.27 on Lucy, the raw gargoyle scan and the bundled sample) and 0.8 on the bunny with
    Gaussian noise of 0.5 % of its diagonal (measured with the defaults here). Neighbours are looked
    up for a seeded subset of ``samples`` points: 0.08 s on 100k points. Too few points to say: (0, 0).
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    k = int(min(k, len(pts)))
    if k < 4:
        return 0.0, 0.0
    tree = cKDTree(pts)
    idx = np.random.default_rng(seed).choice(len(pts), min(samples, len(pts)), replace=False)
    d, j = tree.query(pts[idx], k=k, workers=-1)
    nb = pts[j] - pts[j].mean(1, keepdims=True)
    smallest = np.linalg.eigvalsh(np.einsum("mki,mkj->mij", nb, nb) / k)[:, 0]
    # the nearest *other* position: exact duplicates (vertices repeated along a mesh's seams) are not a spacing
    nearest = np.where(d[:, 1:] > 0, d[:, 1:], np.inf).min(1)
    spacing = float(np.median(nearest[np.isfinite(nearest)])) if np.isfinite(nearest).any() else 0.0
    return spacing, (float(np.median(np.sqrt(np.maximum(smallest, 0.0))) / spacing) if spacing > 0 else 0.0)


#: Scan points (a seeded subset) that vote on the side of off-surface points.
SIDE_TREE_POINTS = 50_000
#: Uniform points whose side is found once, at the start; each step draws from them.
SIDE_POOL = 200_000


class Sampler:
    """Draws batches of ``batch`` scan points plus off-surface points.

    points, normals: (N, 3) float32 in the unit box.
    """

    def __init__(self, points: np.ndarray, normals: np.ndarray, batch: int, uniform_ratio: float,
                 near_ratio: float = 0.0, near_scale: float = 1.0, seed: int = 0,
                 device: str | torch.device = "cpu", sign_k: int = 0, sign_margin: float = 3.0):
        self.points = torch.as_tensor(points, dtype=torch.float32).to(device)
        self.normals = torch.as_tensor(normals, dtype=torch.float32).to(device)
        self.batch = int(batch)
        self.uniform_ratio, self.near_ratio = float(uniform_ratio), float(near_ratio)
        _, self.n_uniform, self.n_near = self.counts(self.batch)
        self.device = torch.device(device)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.sigma = None
        self.sign_k = int(min(sign_k, len(points)))
        spacing = local_spacing(np.asarray(points, dtype=np.float32)) if (self.n_near or self.sign_k) else None
        if self.n_near:
            # Clamp: isolated outliers must not throw samples across the box.
            sp = np.clip(spacing * near_scale, 1e-4, 0.05)
            self.sigma = torch.as_tensor(sp).to(device)
        if self.sign_k:
            from scipy.spatial import cKDTree

            pts = np.asarray(points, dtype=np.float32)
            if len(pts) > SIDE_TREE_POINTS:  # far queries cost about linearly in the tree's size
                keep = np.random.default_rng(seed).choice(len(pts), SIDE_TREE_POINTS, replace=False)
                pts, spacing_tree = pts[keep], local_spacing(pts[keep])
            else:
                keep, spacing_tree = slice(None), spacing
            self._np_points = pts
            self._np_normals = np.asarray(normals, dtype=np.float32)[keep]
            self._tree = cKDTree(self._np_points)
            self.sign_min_distance = float(sign_margin * np.median(spacing_tree))
            # Uniform points come from a fixed pool whose sides are found once: querying the tree
            # for points far from the scan every step would cost more than the step itself.
            pool_gen = torch.Generator(device="cpu").manual_seed(seed + 7919)
            pool = torch.rand(max(SIDE_POOL, self.n_uniform), 3, generator=pool_gen) * 2 - 1
            self._pool = pool.to(device)
            side, distance = self.side_and_distance(pool.numpy())
            self._pool_side = torch.as_tensor(side).to(device)
            self._pool_distance = torch.as_tensor(distance).to(device)

    def side_and_distance(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The side (+1 outside, -1 inside, 0 too close to the scan to tell) and the distance to the
        nearest scan point (0 where the side is 0) of unit-box points x (M, 3): two (M,) float32."""
        d, j = self._tree.query(x, k=self.sign_k, workers=-1)
        d, j = d.reshape(len(x), -1), j.reshape(len(x), -1)
        offset = x[:, None, :] - self._np_points[j]
        vote = (np.einsum("mkc,mkc->mk", offset, self._np_normals[j]) / np.maximum(d, 1e-9)).sum(1)
        far = d[:, 0] > self.sign_min_distance
        return (np.sign(vote) * far).astype(np.float32), (d[:, 0] * far).astype(np.float32)

    def counts(self, on: int) -> tuple[int, int, int]:
        """(scan, uniform, near-surface) points of a batch of ``on`` scan points (the ratios of the sampler)."""
        return on, int(round(on * self.uniform_ratio)), int(round(on * self.near_ratio))

    def sample(self, on: int | None = None) -> Batch:
        """A batch of ``on`` scan points (default: ``batch``) and the off-surface points in proportion."""
        g = self.generator
        n = len(self.points)
        n_on, n_uniform, n_near = self.counts(self.batch if on is None else int(on))
        idx = torch.randint(n, (n_on,), generator=g).to(self.device)
        if self.sign_k:
            pick = torch.randint(len(self._pool), (n_uniform,), generator=g).to(self.device)
            uniform = self._pool[pick]
        else:
            uniform = (torch.rand(n_uniform, 3, generator=g) * 2 - 1).to(self.device)
        if n_near:
            j = torch.randint(n, (n_near,), generator=g).to(self.device)
            noise = torch.randn(n_near, 3, generator=g).to(self.device)
            near = (self.points[j] + noise * self.sigma[j, None]).clamp(-1, 1)
        else:
            near = torch.empty(0, 3, device=self.device)
        off_sign = off_distance = None
        if self.sign_k:  # near-surface points are within a few spacings: too close to tell
            unknown = torch.zeros(len(near), device=self.device)
            off_sign = torch.cat([self._pool_side[pick], unknown])
            off_distance = torch.cat([self._pool_distance[pick], unknown])
        return Batch(self.points[idx], self.normals[idx], uniform, near, off_sign, off_distance)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
