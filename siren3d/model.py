"""SIREN: a multilayer perceptron with sine activations (Sitzmann et al., NeurIPS 2020).

Each layer computes ``sin(w0 * (W x + b))``. The first layer's weights are U(-1/n, 1/n) and the
hidden layers' U(-sqrt(6/n)/w0, sqrt(6/n)/w0), so that pre-activations stay ~N(0, 1) and activations
arcsine-distributed through depth. The last layer is linear.

The module holds the parameters and their initialization; the arithmetic is in
:mod:`siren3d.kernels`, in one place. ``sdf_and_grad`` returns the field and its spatial gradient
together, three ways with the same numbers: ``"autograd"`` (torch.autograd.grad through ``forward``,
the textbook way), ``"analytic"`` (the chain rule written out, reusing the cosines of the forward
pass) and ``"fused"`` (the same chains with a hand-written backward pass for training);
``benchmarks/train_step.py`` measures them side by side.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from . import kernels
from .config import ModelConfig


class SineLayer(nn.Module):
    """The parameters of y = sin(w0 * (W x + b)), with the SIREN initialization next to the layer it
    initializes (the arithmetic is in :mod:`siren3d.kernels`)."""

    def __init__(self, in_features: int, out_features: int, w0: float, is_first: bool):
        super().__init__()
        self.w0 = float(w0)
        self.linear = nn.Linear(in_features, out_features)
        with torch.no_grad():
            bound = 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / self.w0
            self.linear.weight.uniform_(-bound, bound)
            # Bias keeps PyTorch's default U(-1/sqrt(n), 1/sqrt(n)), as in the reference code.


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
    def prior_radius(self) -> float | None:
        """The sphere prior's radius for init 'sphere', else None."""
        return self.config.sphere_radius if self.config.init == "sphere" else None

    def folded(self) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(W'_l, b'_l per sine layer, w_out, b_out) with w0 folded in; differentiable."""
        ws, bs = kernels.fold([layer.linear.weight for layer in self.layers],
                              [layer.linear.bias for layer in self.layers], [layer.w0 for layer in self.layers])
        return ws, bs, self.out.weight, self.out.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) -> f: (N,)"""
        f, _, _ = kernels.chains(*self.folded(), x, grad=False)
        return kernels.add_sphere_prior(x, f, None, self.prior_radius)[0]

    @torch.no_grad()
    def _snapshot(self):
        ws, bs, w_out, b_out = self.folded()
        return [w.detach() for w in ws], [b.detach() for b in bs], w_out.detach(), b_out.detach()

    def evaluator(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A fast f for inference: x (N, 3) float32 -> f (N,), no autograd graph, sines in place.

        A snapshot of the current weights (make a new one after training further).
        """
        params, radius = self._snapshot(), self.prior_radius

        @torch.no_grad()
        def f(x: torch.Tensor) -> torch.Tensor:
            return kernels.add_sphere_prior(x, kernels.chains(*params, x, grad=False)[0], None, radius)[0]

        return f

    def grad_evaluator(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Like :meth:`evaluator`, for f and grad f together: x (N, 3) -> (f (N,), grad f (N, 3))."""
        params, radius = self._snapshot(), self.prior_radius

        @torch.no_grad()
        def fg(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f, g, _ = kernels.chains(*params, x)
            return kernels.add_sphere_prior(x, f, g, radius)

        return fg

    def sdf_and_grad(self, x: torch.Tensor, method: str = "analytic", create_graph: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3) -> (f: (N,), grad f: (N, 3)).

        With ``create_graph`` the result can be differentiated again (training losses on the
        gradient). ``method`` is 'fused' / 'fused-bf16' (hand-written backward, fastest to train, see
        kernels.py), 'analytic' or 'autograd'; all give the same values.
        """
        if method not in ("fused", "fused-bf16", "analytic", "autograd"):
            raise ValueError(f"unknown gradient method {method!r}")
        if not create_graph:
            return self.grad_evaluator()(x) if method != "autograd" else self._autograd(x, False)
        if method in ("fused", "fused-bf16"):
            return kernels.siren_value_and_grad(self, x, bf16_backward=method == "fused-bf16")
        if method == "autograd":
            return self._autograd(x, True)
        with torch.enable_grad():
            f, g, _ = kernels.chains(*self.folded(), x)
            return kernels.add_sphere_prior(x, f, g, self.prior_radius)

    def _autograd(self, x: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            f = self.forward(x)
            (g,) = torch.autograd.grad(f.sum(), x, create_graph=create_graph)
        return (f, g) if create_graph else (f.detach(), g.detach())

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
