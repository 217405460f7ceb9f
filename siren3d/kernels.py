"""The one place a SIREN is evaluated: its value, its value and gradient, and the fused training pass.

Every other path is a thin view of :func:`chains`: ``Siren.forward`` (value, differentiable),
``Siren.evaluator`` / ``grad_evaluator`` (no graph, in place, for meshing and the viewer),
``Siren.sdf_and_grad(method="analytic")`` (value and gradient, differentiable through autograd) and
``method="fused"`` below (the same chains, with a hand-written backward pass).
The sphere prior of init 'sphere' is added in :func:`add_sphere_prior`, and nowhere else.

Training needs f(x) and grad f(x) and then the gradient of a loss of both with respect to the
weights: a second-order derivative. Autograd builds it from many small elementwise kernels (sin,
cos, mul, neg for every layer, in both passes). Written out by hand it needs per layer one sin, one
cos, six matrix products and a handful of fused elementwise updates; ``benchmarks/train_step.py``
measures the difference against plain autograd.

Notation, for sine layers l = 1..L (h_0 = x), output f = w_o . h_L + b_o. The frequency w0_l is
folded into the layer's weights once per step (W'_l = w0_l W_l, b'_l = w0_l b_l: a 128x128 product,
instead of scaling every point's activations twice per layer):

    z_l = W'_l h_{l-1} + b'_l,  h_l = sin z_l,  c_l = cos z_l
    u_L = w_o,  v_l = u_l * c_l,  u_{l-1} = v_l W'_l,  grad f = u_0

Given dL/df and dL/d(grad f), the backward pass walks the gradient chain forward (l = 1..L) and
the value chain backward (l = L..1); the two meet through d c_l / d z_l = -sin z_l = -h_l:
dL/dz_l = hbar_l * c_l - cbar_l * h_l. The weight gradients of W'_l come out of both chains and
are scaled back by w0_l at the end.
"""

from __future__ import annotations

import torch

#: Changes whenever the cost of a kernel changes: timings made with an earlier revision (grad 'auto'
#: caches them) are not reused. 2: the bf16 backward runs whole in bf16, not only its products.
REVISION = 2


def fold(weights, biases, w0s) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """W'_l = w0_l W_l, b'_l = w0_l b_l (differentiable): folding w0 into the weights once costs a
    width x width product instead of scaling every point's activations."""
    return [w * w0 for w, w0 in zip(weights, w0s)], [b * w0 for b, w0 in zip(biases, w0s)]


def chains(ws, bs, w_out, b_out, x, *, grad: bool = True, keep: bool = False):
    """The value chain and, with ``grad``, the gradient chain of a SIREN with folded weights.

    ws, bs: folded (out, in) weights and biases of the sine layers; w_out (1, width), b_out (1,);
    x (N, 3). Returns f (N,), grad f (N, 3) or None, and with ``keep`` the intermediates the fused
    backward needs: (hs, cs, vs, us) as in this module's notation. Works in place when autograd is
    off (inference, or inside the fused autograd Function), out of place when it records a graph.
    """
    inplace = not torch.is_grad_enabled()
    n = len(ws)
    hs, cs = [x], []
    h = x
    for w, b in zip(ws, bs):
        z = torch.addmm(b, h, w.t())
        if grad:
            cs.append(torch.cos(z))
        h = z.sin_() if inplace else torch.sin(z)
        hs.append(h)
    f = torch.addmm(b_out, h, w_out.t()).squeeze(-1)
    if not grad:
        return f, None, None
    # Gradient chain: u_L = w_o, v_l = u_l * c_l, u_{l-1} = v_l W'_l; us[l-1] = u_l for l < L.
    vs, us = [None] * n, [None] * n
    u = w_out
    for i in range(n - 1, -1, -1):
        v = cs[i].mul_(u) if inplace and not keep else cs[i] * u
        if keep:
            vs[i] = v
        u = v @ ws[i]
        if keep and i > 0:
            us[i - 1] = u
    return f, u, ((hs, cs, vs, us) if keep else None)


def add_sphere_prior(x: torch.Tensor, f: torch.Tensor, g: torch.Tensor | None, radius: float | None):
    """f + (|x| - r) and g + x / |x| for init 'sphere' (radius None: no prior)."""
    if radius is None:
        return f, g
    r = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    f = f + (r.squeeze(-1) - radius)
    return f, (None if g is None else g + x / r)


class _SirenValueAndGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w0s, prior_radius, bf16_backward, w_out, b_out, *params):
        # params: W_1, b_1, W_2, b_2, ...; w0s: one float per sine layer.
        n = len(w0s)
        ws, bs = fold(params[0::2], params[1::2], w0s)
        f, g, (hs, cs, vs, us) = chains(ws, bs, w_out, b_out, x, keep=True)
        f, g = add_sphere_prior(x, f, g, prior_radius)
        ctx.w0s, ctx.n = w0s, n
        # The backward pass runs in one precision: bf16 when asked (its products several times
        # faster on CPUs with AVX512-BF16, its elementwise work half the memory traffic; weight
        # gradients good to ~3 digits, far below the sampling noise of a step), else fp32.
        lp = torch.bfloat16 if bf16_backward else x.dtype
        keep = [w_out, *ws, *hs[1:], *cs, *vs, *us[:-1]]
        ctx.save_for_backward(x, *[t.to(lp) for t in keep])
        return f, g

    @staticmethod
    def backward(ctx, gf, gg):
        n, w0s = ctx.n, ctx.w0s
        x, w_out, *saved = ctx.saved_tensors
        lp = w_out.dtype
        ws = saved[:n]                     # W'_l = w0_l W_l
        hs = saved[n:2 * n]                # h_1 .. h_L (h_0 = x)
        cs = saved[2 * n:3 * n]
        vs = saved[3 * n:4 * n]
        us = list(saved[4 * n:]) + [w_out]  # u_1 .. u_L
        gf = x.new_zeros(x.shape[0]) if gf is None else gf
        gg = torch.zeros_like(x) if gg is None else gg
        full = x.dtype  # weight gradients come out in the input's precision
        db_out = gf.sum(dtype=full).reshape(1)  # before gf is rounded to lp: exact
        gf, gg = gf.to(lp), gg.to(lp)

        # Gradient chain, l = 1..L (reverse of its forward): from u_{l-1} = v_l W'_l and v_l = u_l c_l.
        dW, dc = [None] * n, [None] * n
        ubar = gg                                  # dL/du_0
        for i in range(n):
            vbar = ubar @ ws[i].t()                # dL/dv_l
            dW[i] = (vs[i].t() @ ubar).to(full)     # dL/dW'_l through the gradient chain
            ubar = vbar * cs[i]                    # dL/du_l
            dc[i] = vbar.mul_(us[i])               # dL/dc_l (vbar is not needed after this)
        dw_out = ubar.sum(0, keepdim=True, dtype=full)  # u_L = w_o at every point
        # Value chain, l = L..1: dL/dz_l = hbar_l * c_l - dL/dc_l * h_l.
        dw_out = dw_out + (gf[None, :] @ hs[n - 1]).to(full)
        hbar = gf[:, None] * w_out                 # dL/dh_L
        grads = [None] * (2 * n)
        for i in range(n - 1, -1, -1):
            zbar = hbar.mul_(cs[i]).addcmul_(dc[i], hs[i], value=-1.0)
            if i == 0:  # the first layer's inputs are coordinates: its product in fp32
                dwp = dW[0] + zbar.t().to(full) @ x
            else:
                dwp = dW[i] + (zbar.t() @ hs[i - 1]).to(full)
                hbar = zbar @ ws[i]
            grads[2 * i] = dwp.mul_(w0s[i])
            grads[2 * i + 1] = zbar.sum(0, dtype=full).mul_(w0s[i])
        return (None, None, None, None, dw_out, db_out, *grads)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU's flags say it multiplies bfloat16 natively (AVX512-BF16 or AMX).

    Informational only: the flags do not say whether the bf16 path is faster (on an Intel CPU with
    AMX it was slower at the default batch), so ``grad='auto'`` times it (:mod:`siren3d.autotune`)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - a private torch API: no answer means no
        return False


def siren_value_and_grad(model, x: torch.Tensor, bf16_backward: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) (N,) and grad f(x) (N, 3) for a :class:`siren3d.model.Siren`, differentiable w.r.t. weights.

    x is treated as data (no gradient flows back to it). The forward values, f and grad f, are
    always in x's precision; ``bf16_backward`` runs the backward pass in bfloat16, its products and
    its elementwise work alike (the first layer's weight-gradient product, whose inputs are
    coordinates, stays in x's precision; weight gradients come out in it).
    """
    params = []
    for layer in model.layers:
        params += [layer.linear.weight, layer.linear.bias]
    w0s = tuple(layer.w0 for layer in model.layers)
    return _SirenValueAndGrad.apply(x.detach(), w0s, model.prior_radius, bool(bf16_backward), model.out.weight,
                                    model.out.bias, *params)
