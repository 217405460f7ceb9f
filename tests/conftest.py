"""Shared fixtures: small real scans written to temp dirs, and small real fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siren3d.io import save_points_ply
from siren3d.model import ModelConfig, Siren
from siren3d.synthetic import sample_surface, sphere, torus

# Two cores on CI: keep intra-op threads at the machine's count, and tests deterministic.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session", autouse=True)
def _private_autotune_cache(tmp_path_factory):
    """grad='auto' fits time and cache into a folder of this test session, never the user's cache."""
    import os

    from siren3d.autotune import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("siren3d-cache"))
    yield
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


def write_ply_ascii(path, points, normals=None, faces=None):
    lines = ["ply", "format ascii 1.0", f"element vertex {len(points)}",
             "property float x", "property float y", "property float z"]
    if normals is not None:
        lines += ["property float nx", "property float ny", "property float nz"]
    if faces is not None:
        lines += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    data = points if normals is None else np.hstack([points, normals])
    lines += [" ".join(f"{v:.9g}" for v in row) for row in data]
    if faces is not None:
        lines += ["3 " + " ".join(str(int(i)) for i in f) for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def exact_sphere_siren(width: int = 16) -> Siren:
    """A real SIREN whose f is exactly |x| - 0.5 (unit box) everywhere: the sphere prior
    (f = SIREN(x) + |x| - r) with the output layer zeroed. Every value and offset can be checked."""
    model = Siren(ModelConfig(width=width, hidden_layers=1, init="sphere", sphere_radius=0.5))
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
    return model.eval()


@pytest.fixture(scope="session")
def sphere_points():
    """3,000 points with outward normals on a sphere of radius 0.5 (unit-box units)."""
    return sample_surface(sphere(0.5), 3000, res=64, seed=1)


@pytest.fixture(scope="session")
def torus_points():
    return sample_surface(torus(0.5, 0.18), 4000, res=64, seed=2)


@pytest.fixture
def sphere_scan_file(tmp_path, sphere_points):
    """A binary PLY of a sphere of radius 20 centred at (100, -50, 7), in 'scan units'."""
    pts, nrm = sphere_points
    path = tmp_path / "ball.ply"
    save_points_ply(path, pts * 40.0 + np.array([100.0, -50.0, 7.0]), nrm)
    return path
