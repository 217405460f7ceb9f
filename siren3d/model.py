"""SIREN: a multilayer perceptron with sine activations (Sitzmann et al., NeurIPS 2020).

Each layer computes ``sin(w0 * (W x + b))``. The first layer's weights are U(-1/n, 1/n) and the
hidden layers' U(-sqrt(6/n)/w0, sqrt(6/n)/w0), so that pre-activations stay ~N(0, 1) and activations
arcsine-distributed through depth. The last layer is linear.

``sdf_and_grad`` returns the field and its spatial gradient together. Two implementations give the
same numbers: ``"autograd"`` (torch.autograd.grad with create_graph, the textbook way),
``"analytic"`` (the chain rule written out through the sine layers, reusing the cosines of the
forward pass) and ``"fused"`` (the same, with a hand-written backward pass for training:
:mod:`siren3d.kernels`; ``benchmarks/train_step.py`` measures them side by side).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Architecture of the SIREN; stored in every checkpoint."""

    width: int = 128
    """Units per hidden layer."""
    hidden_layers: int = 2
    """Number of hidden (width x width) sine layers, after the first one (paper: 3)."""
    w0: float = 30.0
    """Frequency factor of the first layer (paper: 30)."""
    w0_hidden: float = 30.0
    """Frequency factor of the hidden layers (paper: 30)."""
    init: str = "siren"
    """'siren' (paper) or 'sphere': f = SIREN + (|x| - r), the learned part starting small."""
    sphere_radius: float = 0.5
    """Radius (unit box) of the sphere prior for init='sphere'."""

    def __post_init__(self):
        if self.width < 1 or self.hidden_layers < 0:
            raise ValueError("width must be >= 1 and hidden_layers >= 0")
        if not (self.w0 > 0 and self.w0_hidden > 0):
            raise ValueError("w0 and w0_hidden must be positive")
        if self.init not in ("siren", "sphere"):
            raise ValueError(f"unknown init {self.init!r}: use 'siren' or 'sphere'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class SineLayer(nn.Module):
    """y = sin(w0 * (W x + b)), with the SIREN initialization next to the layer it initializes."""

    def __init__(self, in_features: int, out_features: int, w0: float, is_first: bool):
        super().__init__()
        self.w0 = float(w0)
        self.is_first = is_first
        self.linear = nn.Linear(in_features, out_features)
        with torch.no_grad():
            bound = 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / self.w0
            self.linear.weight.uniform_(-bound, bound)
            # Bias keeps PyTorch's default U(-1/sqrt(n), 1/sqrt(n)), as in the reference code.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    """f: R^3 -> R, a signed distance in the unit box (negative inside)."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        layers = [SineLayer(3, c.width, c.w0, is_first=True)]
        layers += [SineLayer(c.width, c.width, c.w0_hidden, is_first=False) for _ in range(c.hidden_layers)]
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(c.width, 1)
        with torch.no_grad():
            bound = math.sqrt(6.0 / c.width) / c.w0_hidden
            self.out.weight.uniform_(-bound, bound)
        if c.init == "sphere":
            self._init_sphere()

    @property
    def sphere_prior(self) -> bool:
        return self.config.init == "sphere"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) -> f: (N,)"""
        h = x
        for layer in self.layers:
            h = layer(h)
        f = self.out(h).squeeze(-1)
        if self.sphere_prior:
            f = f + (x.norm(dim=-1) - self.config.sphere_radius)
        return f

    @torch.no_grad()
    def evaluator(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A fast f for inference: w0 folded into each layer's weights, fused multiply-add, sin in place.

        Returns x (N, 3) float32 -> f (N,). Same values as ``forward`` up to float rounding; a snapshot
        of the current weights (make a new one after training further).
        """
        folded = [(layer.w0 * layer.linear.weight.detach().t().contiguous(), layer.w0 * layer.linear.bias.detach())
                  for layer in self.layers]
        w_out, b_out = self.out.weight.detach().t().contiguous(), self.out.bias.detach()
        prior, radius = self.sphere_prior, self.config.sphere_radius

        @torch.no_grad()
        def f(x: torch.Tensor) -> torch.Tensor:
            h = x
            for w, b in folded:
                h = torch.addmm(b, h, w).sin_()
            out = torch.addmm(b_out, h, w_out).squeeze(-1)
            if prior:
                out += x.norm(dim=-1) - radius
            return out

        return f

    @torch.no_grad()
    def grad_evaluator(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Like :meth:`evaluator`, for f and grad f together: x (N, 3) -> (f (N,), grad f (N, 3)).

        One forward pass keeping cos z, then the gradient chain with w0 folded into the weights
        (d sin(z)/dh = cos(z) w0 W): two matrix products per layer and no autograd graph.
        """
        folded = [(layer.w0 * layer.linear.weight.detach(), layer.w0 * layer.linear.bias.detach())
                  for layer in self.layers]
        w_out, b_out = self.out.weight.detach(), self.out.bias.detach()
        prior, radius = self.sphere_prior, self.config.sphere_radius

        @torch.no_grad()
        def fg(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h, cosines = x, []
            for w, b in folded:
                z = torch.addmm(b, h, w.t())
                cosines.append(torch.cos(z))
                h = z.sin_()
            f = torch.addmm(b_out, h, w_out.t()).squeeze(-1)
            u = cosines[-1].mul_(w_out)
            for (w, _), c in zip(reversed(folded[1:]), reversed(cosines[:-1])):
                u = (u @ w).mul_(c)
            g = u @ folded[0][0]
            if prior:
                r = x.norm(dim=-1, keepdim=True)
                f += r.squeeze(-1) - radius
                g += x / r.clamp_min(1e-12)
            return f, g

        return fg

    def sdf_and_grad(self, x: torch.Tensor, method: str = "analytic", create_graph: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3) -> (f: (N,), grad f: (N, 3)).

        With ``create_graph`` the result can be differentiated again (training losses on the
        gradient). ``method`` is 'fused' (hand-written backward, fastest to train, see kernels.py),
        'analytic' or 'autograd'; all give the same values.
        """
        if method in ("fused", "fused-bf16") and create_graph:
            from .kernels import siren_value_and_grad

            return siren_value_and_grad(self, x, bf16_backward=method == "fused-bf16")
        if method == "autograd":
            with torch.enable_grad():
                if not x.requires_grad:
                    x = x.detach().requires_grad_(True)
                f = self.forward(x)
                (g,) = torch.autograd.grad(f.sum(), x, create_graph=create_graph)
            return (f, g) if create_graph else (f.detach(), g.detach())
        if method not in ("analytic", "fused", "fused-bf16"):
            raise ValueError(f"unknown gradient method {method!r}")
        # Forward pass keeping w0*cos(z) of each layer: d sin(w0 z)/dz = w0 cos(w0 z).
        h, slopes = x, []
        for layer in self.layers:
            z = layer.w0 * layer.linear(h)
            slopes.append(layer.w0 * torch.cos(z))
            h = torch.sin(z)
        f = self.out(h).squeeze(-1)
        # Backward (reverse mode) written out: grad_h = grad_z @ W, grad_z = grad_h * slope.
        g = slopes[-1] * self.out.weight  # (N, width) * (1, width)
        g = g @ self.layers[-1].linear.weight
        for layer, slope in zip(reversed(self.layers[:-1]), reversed(slopes[:-1])):
            g = (g * slope) @ layer.linear.weight
        if self.sphere_prior:
            r = x.norm(dim=-1, keepdim=True)
            f = f + (r.squeeze(-1) - self.config.sphere_radius)
            g = g + x / r.clamp_min(1e-12)
        return f, g

    @torch.no_grad()
    def _init_sphere(self) -> None:
        """Start from a sphere: shrink the output layer so the learned part starts near zero.

        With init='sphere' the field is f(x) = SIREN(x) + (|x| - r): a fixed analytic sphere
        distance plus a learned residual. An untrained SIREN is a random high-frequency field with
        zero crossings everywhere, which short fits leave behind as "ghost" surfaces far from the
        data; starting from a closed surface that is already a distance removes most of them.
        """
        self.out.weight.mul_(0.1)
        self.out.bias.zero_()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
