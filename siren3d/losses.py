"""The SDF fitting losses, each a named term with its weight (defaults from the SIREN paper).

- surface:    |f(x)| on scan points                     -> the surface passes through the scan
- normal:     1 - cos(grad f(x), n(x)) on scan points   -> and is oriented like the scan
- eikonal:    | |grad f| - 1 | on all points              -> f is a distance (unit-speed)
- offsurface: exp(-alpha |f(x)|) on off-surface points  -> no spurious zero level away from data
- sign:       max(0, -s(x) f(x)) on off-surface points with a known side s = +-1 (see sampling)
              -> f has the scan's inside/outside everywhere, so no ghost surfaces (0: off, as in the paper)
- distance:   |f(x) - s(x) d(x)| on the same points, d their distance to the scan
              -> f is the signed distance in the whole box, not only near the surface (0: off, as in the paper)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossWeights

TERMS = ("surface", "normal", "eikonal", "offsurface", "sign", "distance")


def loss_terms(f_on: torch.Tensor, g_on: torch.Tensor, normals: torch.Tensor,
               f_off: torch.Tensor, g_off: torch.Tensor, alpha: float,
               f_side: torch.Tensor | None = None, side: torch.Tensor | None = None,
               distance: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Unweighted mean of each term.

    f_on: (N,), g_on: (N, 3), normals: (N, 3) unit; f_off: (M,) uniform points, g_off: (M', 3) all
    off-surface points; f_side, side, distance: (K,) values, known sides (+1, -1, 0) and distances to
    the scan (0 where the side is unknown) of off-surface points.
    """
    grad_norm = torch.cat([g_on, g_off]).norm(dim=-1)
    zero = f_on.new_zeros(())
    return {
        "surface": f_on.abs().mean(),
        "normal": (1.0 - F.cosine_similarity(g_on, normals, dim=-1, eps=1e-8)).mean(),
        "eikonal": (grad_norm - 1.0).abs().mean(),
        "offsurface": torch.exp(-alpha * f_off.abs()).mean(),
        "sign": torch.relu(-side * f_side).mean() if side is not None else zero,
        "distance": ((f_side - side * distance).abs() * side.abs()).mean() if distance is not None else zero,
    }


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    return sum(getattr(weights, k) * v for k, v in terms.items())
