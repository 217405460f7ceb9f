"""The SIREN as published: initialization statistics and exact spatial gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from siren3d.model import ModelConfig, Siren
from siren3d.normalization import Normalization


def arcsine_cdf(x):
    return 2 / np.pi * np.arcsin(np.sqrt(np.clip((x + 1) / 2, 0, 1)))


def test_initialization_keeps_preactivations_normal_and_activations_arcsine():
    torch.manual_seed(0)
    model = Siren(ModelConfig(width=512, hidden_layers=4))
    x = torch.rand(4000, 3) * 2 - 1
    h = x
    with torch.no_grad():
        for depth, layer in enumerate(model.layers):
            # The paper's result is about the weighted sum w0 * W h (its analysis leaves the bias out).
            z = (layer.w0 * (h @ layer.linear.weight.T)).flatten().numpy()
            h = torch.sin(layer.w0 * layer.linear(h))
            if depth == 0:
                continue  # the first layer maps 3 inputs: its pre-activations are not normal, by design
            # Hidden pre-activations ~ N(0, 1) (paper, Sec. 3.2): mean, std and a KS test on a sample.
            assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.08, (depth, z.mean(), z.std())
            ks = stats.kstest(np.random.default_rng(depth).choice(z, 20000), "norm")
            assert ks.statistic < 0.03, (depth, ks.statistic)
            # Activations arcsine-distributed on [-1, 1].
            a = np.random.default_rng(depth).choice(h.flatten().numpy(), 20000)
            ks = stats.kstest(a, arcsine_cdf)
            assert ks.statistic < 0.03, (depth, ks.statistic)


def test_a_badly_scaled_init_fails_the_same_statistics():
    # The statistical test above can fail: with w0 = 1 in hidden layers the scale is wrong.
    torch.manual_seed(0)
    model = Siren(ModelConfig(width=512, hidden_layers=2, w0_hidden=3.0))
    with torch.no_grad():
        h = torch.sin(model.layers[0].w0 * model.layers[0].linear(torch.rand(4000, 3) * 2 - 1))
        pre = model.layers[1].w0 * (h @ (model.layers[1].linear.weight * 10).T)
    assert abs(pre.std().item() - 1.0) > 0.5


def test_first_layer_and_hidden_bounds_follow_the_paper():
    m = Siren(ModelConfig(width=64, hidden_layers=2, w0=30.0))
    assert m.layers[0].linear.weight.abs().max() <= 1 / 3
    assert m.layers[1].linear.weight.abs().max() <= np.sqrt(6 / 64) / 30
    assert len(m.layers) == 3 and m.out.out_features == 1


@pytest.mark.parametrize("method", ["analytic", "autograd"])
def test_gradient_matches_finite_differences(method):
    torch.manual_seed(1)
    model = Siren(ModelConfig(width=64, hidden_layers=2)).double()
    x = (torch.rand(200, 3, dtype=torch.float64) * 2 - 1) * 0.9
    f, g = model.sdf_and_grad(x, method=method, create_graph=False)
    eps = 1e-6
    fd = torch.stack([(model(x + eps * e) - model(x - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=x.dtype)], 1)
    torch.testing.assert_close(g.detach(), fd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f.detach(), model(x))


@pytest.mark.parametrize("init", ["siren", "sphere"])
def test_grad_evaluator_matches_finite_differences(init):
    """The inference path meshing uses for vertex normals: w0 folded, no autograd graph."""
    torch.manual_seed(2)
    model = Siren(ModelConfig(width=64, hidden_layers=3, init=init)).double()
    x = (torch.rand(300, 3, dtype=torch.float64) * 2 - 1) * 0.9
    f, g = model.grad_evaluator()(x)
    eps = 1e-6
    fd = torch.stack([(model(x + eps * e) - model(x - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=x.dtype)], 1)
    torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f, model(x))

def _loss_gradients(model, x, normals, method):
    model.zero_grad()
    f, g = model.sdf_and_grad(x, method=method)
    loss = (f.abs().mean() + (g.norm(dim=1) - 1).abs().mean() + torch.exp(-100 * f.abs()).mean()
            + (1 - torch.nn.functional.cosine_similarity(g, normals, dim=1)).mean())
    loss.backward()
    return [f.detach(), g.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("init", ["siren", "sphere"])
@pytest.mark.parametrize("method", ["analytic", "fused"])
def test_every_gradient_method_gives_autograds_parameter_gradients(method, init):
    torch.manual_seed(2)
    model = Siren(ModelConfig(width=32, hidden_layers=3, init=init)).double()
    x = torch.rand(100, 3, dtype=torch.float64) * 2 - 1
    normals = torch.nn.functional.normalize(torch.randn(100, 3, dtype=torch.float64), dim=1)
    ref = _loss_gradients(model, x, normals, "autograd")
    got = _loss_gradients(model, x, normals, method)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_bf16_backward_gradients_stay_close_to_exact():
    torch.manual_seed(3)
    model = Siren(ModelConfig(width=64, hidden_layers=2))
    x = torch.rand(2000, 3) * 2 - 1
    normals = torch.nn.functional.normalize(torch.randn(2000, 3), dim=1)
    ref = _loss_gradients(model, x, normals, "autograd")
    got = _loss_gradients(model, x, normals, "fused-bf16")
    torch.testing.assert_close(got[0], ref[0])  # forward values are exact fp32
    torch.testing.assert_close(got[1], ref[1])
    for a, b in zip(got[2:], ref[2:]):
        rel = (a - b).norm() / b.norm()
        assert rel < 0.02, rel.item()  # bf16 has an 8-bit mantissa: ~0.4 % per product


def test_normalization_round_trips_and_fills_the_box():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 3)) * [3.0, 1.0, 0.2] + [1e6, -2e6, 5.0]
    norm = Normalization.fit(pts, margin=0.1)
    unit = norm.to_unit(pts)
    assert unit.dtype == np.float32
    assert np.isclose(np.abs(unit).max(), 0.9, atol=1e-4)  # longest half-extent -> 1 - margin
    np.testing.assert_allclose(norm.to_scan(unit), pts, rtol=0, atol=1e-6 * 1e6 * 1e-1)
    again = Normalization.from_dict(norm.to_dict())
    assert again == norm


def test_sphere_init_starts_as_a_sphere_distance_and_keeps_exact_gradients():
    torch.manual_seed(0)
    model = Siren(ModelConfig(width=128, hidden_layers=2, init="sphere", sphere_radius=0.5)).double()
    x = torch.rand(2000, 3, dtype=torch.float64) * 1.8 - 0.9
    f, g = model.sdf_and_grad(x, create_graph=False)
    assert (f - (x.norm(dim=1) - 0.5)).abs().mean() < 0.05
    fa, ga = model.sdf_and_grad(x, method="autograd", create_graph=False)
    torch.testing.assert_close(f, fa)
    torch.testing.assert_close(g, ga)
