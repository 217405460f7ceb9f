"""benchmarks/side_by_side.py: the close-up goes where a mesh is wrong, and every panel shares one camera."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import side_by_side  # noqa: E402


def sphere_samples(n: int, seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def test_the_closeup_goes_where_the_mesh_is_farthest_from_the_reference():
    ref = sphere_samples(20_000, 0)
    mesh = sphere_samples(20_000, 1)
    dented = mesh @ np.array([0.0, 0.6, 0.8]) > 0.9  # a cap around (0, 0.6, 0.8) pushed inward
    mesh[dented] *= 0.8
    centre, normal, why = side_by_side.closeup_region(ref, ref, mesh, width=0.3)
    assert np.linalg.norm(centre - np.array([0.0, 0.6, 0.8])) < 0.25 and "distance" in why
    assert normal @ np.array([0.0, 0.6, 0.8]) > 0.9


def test_without_a_mesh_the_closeup_goes_where_the_reference_bends_most():
    # a flat square with one sharp ridge: the patches across the ridge have the most varied normals
    xy = np.random.default_rng(2).uniform(-1, 1, size=(20_000, 2))
    z = np.maximum(0.0, 0.5 - 2 * np.abs(xy[:, 0] - 0.5)) * (np.abs(xy[:, 1]) < 2)
    normals = np.zeros((len(xy), 3))
    normals[:, 2] = 1.0
    ridge = z > 0
    normals[ridge, 0] = 2 * np.sign(xy[ridge, 0] - 0.5)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    centre, _, why = side_by_side.closeup_region(np.column_stack([xy, z]), normals, None, width=0.2)
    assert abs(centre[0] - 0.5) < 0.15 and "normals" in why


def test_every_panel_has_the_same_camera(tmp_path):
    pytest.importorskip("pyvista")
    reference = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    reference.apply_translation([100.0, 0.0, 50.0])
    copy = tmp_path / "copy.ply"
    reference.export(copy)
    size = 96
    paths, why = side_by_side.render_case(reference, {"same": copy, "missing": None}, tmp_path / "case.png",
                                          size=size)
    from PIL import Image

    assert [p.name for p in paths] == ["case.png", "case-closeup.png", "case-detail.png"]
    for path in paths:
        img = np.asarray(Image.open(path).convert("L"), dtype=np.int16)
        assert img.shape == (size, 3 * size)
        ref_panel, same_panel, missing_panel = (img[20:, i * size:(i + 1) * size] for i in range(3))
        assert (ref_panel < 250).mean() > 0.05  # something drawn...
        assert (missing_panel >= 250).all()  # ...and nothing where there is no mesh
        if path.name != "case.png":  # (the whole view outlines the close-up on the reference)
            assert np.abs(ref_panel - same_panel).max() <= 2  # one camera: the same surface, the same pixels
