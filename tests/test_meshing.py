"""Sparse coarse-to-fine extraction against dense extraction, on real SIREN fields; clean-up steps."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner
from scipy.spatial import cKDTree

from siren3d import meshing
from siren3d.checkpoint import save_checkpoint
from siren3d.config import MAX_RES
from siren3d.cli import main
from siren3d.errors import Siren3dError
from siren3d.meshing import drop_small_components, extract_mesh, face_components, is_watertight
from siren3d.model import ModelConfig, Siren
from siren3d.normalization import Normalization
from siren3d.training import FitConfig, fit

from conftest import exact_sphere_siren

UNIT = Normalization((0.0, 0.0, 0.0), 1.0)


def _siren(init: str, seed: int = 0, width: int = 32, **kw) -> Siren:
    torch.manual_seed(seed)
    return Siren(ModelConfig(width=width, hidden_layers=2, init=init, **kw))


@pytest.fixture(scope="session")
def torus_fit(tmp_path_factory, torus_points):
    """A short real fit of a torus: a field with a hole, ripples and the errors of a real fit."""
    from siren3d.io import Scan

    pts, nrm = torus_points
    scan = Scan(points=pts * 10.0 + 3.0, normals=nrm, path="torus.ply")
    cfg = FitConfig(steps=250, batch=1024, lr=5e-4, lr_sparse=5e-4, seed=3, checkpoint_every=0,
                    model=ModelConfig(width=64, hidden_layers=2, init="sphere"))
    result = fit(scan, cfg, tmp_path_factory.mktemp("torus"), progress=False)
    return result.model, result.normalization


def _centroids(m):
    """Face centroids, without slivers of (near) zero area: skimage drops those by a float32 test,
    whose outcome depends on the coordinates' magnitude (a block's or the whole grid's)."""
    tri = m.vertices[m.faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return tri[area > 1e-6 * np.median(area)].mean(1)


def _same_surface(a, b, tol, unmatched: int = 0):
    """Every face of a has a face of b at the same place, and the other way round (but ``unmatched``)."""
    ca, cb = _centroids(a), _centroids(b)
    assert abs(len(ca) - len(cb)) <= unmatched
    assert (cKDTree(cb).query(ca)[0] > tol).sum() <= unmatched
    assert (cKDTree(ca).query(cb)[0] > tol).sum() <= unmatched


def _on_cpu(model: Siren) -> Siren:
    """Exact sparse == dense needs each point's f to be the same whatever chunk it is evaluated in:
    true on the CPU; on CUDA the matrix-product kernels (and so the rounding) change with the chunk's size."""
    return copy.deepcopy(model).cpu()


@pytest.mark.parametrize("backend", ["mcubes", "skimage"])
@pytest.mark.parametrize("field", ["torus-fit", "paper-init", "sphere-init"])
def test_sparse_equals_dense_at_128(field, backend, torus_fit):
    if field == "torus-fit":
        model, norm = _on_cpu(torus_fit[0]), torus_fit[1]
    else:  # a freshly initialized SIREN is full of surfaces: the hardest case for pruning
        model, norm = (_siren("siren", width=64) if field == "paper-init" else _siren("sphere")), UNIT
    kw = dict(backend=backend, refine=0, normals=False, min_component=0.0, keep_inner=True)
    dense = extract_mesh(model, norm, res=128, method="dense", **kw)
    sparse = extract_mesh(model, norm, res=128, method="sparse", **kw)
    # A fresh paper-init SIREN has surfaces in every block: sparse must then cost about what dense does.
    assert sparse.stats.evaluations < (1.05 if field == "paper-init" else 0.6) * dense.stats.evaluations
    # skimage decides in float32 whether a sliver is degenerate, in block or in grid coordinates:
    # on the paper-init field (400k faces) a few slivers and their neighbours come out differently.
    _same_surface(dense, sparse, tol=1e-4 * norm.scale, unmatched=0 if backend == "mcubes" else 16)
    if backend == "mcubes":
        assert sparse.stats.components == dense.stats.components
    assert sparse.stats.watertight == dense.stats.watertight


@pytest.mark.slow
def test_sparse_equals_dense_at_256_without_seams(torus_fit):
    model, norm = _on_cpu(torus_fit[0]), torus_fit[1]
    raw = dict(refine=0, normals=False, min_component=0.0, keep_inner=True)
    dense = extract_mesh(model, norm, res=256, method="dense", **raw)
    sparse = extract_mesh(model, norm, res=256, **raw)
    _same_surface(dense, sparse, tol=1e-4 * norm.scale)
    assert len(np.unique(sparse.vertices, axis=0)) == len(sparse.vertices)  # block seams merged
    assert sparse.stats.watertight == dense.stats.watertight == is_watertight(sparse.faces)
    assert sparse.stats.components == dense.stats.components
    assert sparse.stats.dense_evaluations / sparse.stats.evaluations > 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sparse_matches_dense_on_cuda(torus_fit):
    """On a GPU the two methods agree up to float rounding: the same surface, the same topology."""
    model, norm = copy.deepcopy(torus_fit[0]).cuda(), torus_fit[1]
    dense = extract_mesh(model, norm, res=128, method="dense", refine=0, normals=False)
    sparse = extract_mesh(model, norm, res=128, refine=0)
    _same_surface(dense, sparse, tol=1e-3 * norm.scale, unmatched=len(dense.faces) // 1000)
    assert sparse.stats.components == dense.stats.components
    assert sparse.stats.watertight == dense.stats.watertight
    cpu = extract_mesh(_on_cpu(model), norm, res=128, refine=0)  # and the GPU's mesh is the CPU's
    _same_surface(cpu, sparse, tol=1e-3 * norm.scale, unmatched=len(cpu.faces) // 1000)


def test_refine_moves_vertices_onto_the_level_set_and_normals_point_out(torus_fit):
    model, norm = torus_fit
    raw = extract_mesh(model, norm, res=48, refine=0)
    ref = extract_mesh(model, norm, res=48, refine=2)
    err = ref.stats.level_error
    assert err["after_mean"] < 0.2 * err["before_mean"]
    assert err["before_mean"] == pytest.approx(raw.stats.level_error["before_mean"])
    assert np.allclose(np.linalg.norm(ref.normals, axis=1), 1.0, atol=1e-6)
    # Outward: the normals agree with the faces' winding (negative inside, faces wound outward).
    tm = ref.to_trimesh()
    face_n = tm.face_normals
    vert_n = ref.normals[ref.faces].mean(1)
    assert (np.einsum("ij,ij->i", face_n, vert_n) > 0).mean() > 0.99


def test_small_pieces_are_dropped_and_counted():
    big = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    small = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    small.apply_translation([3, 0, 0])
    both = trimesh.util.concatenate([big, small])
    v, f, kept, dropped = drop_small_components(both.vertices, both.faces, 0.1)
    assert (kept, dropped) == (1, 1) and len(f) == len(big.faces) and len(v) == len(big.vertices)
    assert is_watertight(f)
    v, f, kept, dropped = drop_small_components(both.vertices, both.faces, 0.0)
    assert (kept, dropped, len(f)) == (2, 0, len(both.faces))
    # nothing small enough: the same arrays back, so what extract_mesh knows of them still holds
    faces = np.asarray(both.faces)
    v, f, kept, dropped = drop_small_components(both.vertices, faces, 0.01)
    assert (kept, dropped) == (2, 0) and f is faces


def test_one_pass_over_the_edges_gives_the_pieces_and_closedness_of_each_mesh():
    """mesh_pieces (what extract_mesh computes once) gives the known pieces and closedness of closed,
    open, two-piece and pinched meshes, and agrees with is_watertight (its own sort of the edges)
    and with trimesh on the open one."""
    from siren3d.topology import mesh_pieces

    ball = trimesh.creation.icosphere(subdivisions=2)
    other = trimesh.creation.icosphere(subdivisions=1, radius=0.3)
    other.apply_translation([3, 0, 0])
    two = trimesh.util.concatenate([ball, other])
    open_ball = ball.faces[1:]
    # two tetrahedra sharing one vertex: closed, two pieces (a pinch point joins nothing)
    tet = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    pinch = np.concatenate([tet, np.where(tet == 3, 3, tet + 4)])
    for faces, count, closed in ((ball.faces, 1, True), (open_ball, 1, False), (two.faces, 2, True),
                                 (pinch, 2, True), (np.zeros((0, 3), dtype=np.int64), 0, False)):
        p = mesh_pieces(faces)
        assert (p.count, p.watertight) == (count, closed) == (face_components(faces)[0], is_watertight(faces))
        assert np.array_equal(p.labels, face_components(faces)[1])
    assert trimesh.Trimesh(ball.vertices, open_ball, process=False).is_watertight is False


def test_inner_shells_are_dropped_and_outer_pieces_kept():
    """A closed piece inside the main surface goes (off-centre, so no ray passes through a vertex
    by symmetry); a piece beside it and a piece in a concavity-free outside spot stay."""
    from siren3d.meshing import drop_inner_shells

    big = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    inside = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    inside.apply_translation([0.21, -0.13, 0.34])
    beside = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    beside.apply_translation([2.5, 0.1, -0.2])
    allp = trimesh.util.concatenate([big, inside, beside])
    v, f, dropped, kept = drop_inner_shells(allp.vertices, allp.faces)
    assert (dropped, kept) == (1, 0)
    assert len(f) == len(big.faces) + len(beside.faces) and len(v) == len(big.vertices) + len(beside.vertices)
    kept = trimesh.Trimesh(v, f, process=False).split(only_watertight=False)
    assert sorted(len(k.faces) for k in kept) == sorted([len(big.faces), len(beside.faces)])
    # the pieces known beforehand (what extract_mesh passes) give the same result
    from siren3d.topology import mesh_pieces

    faces = np.asarray(allp.faces)
    v3, f3, d3, k3 = drop_inner_shells(allp.vertices, faces, pieces=mesh_pieces(faces))
    assert (d3, k3) == (1, 0) and np.array_equal(f3, f) and np.array_equal(v3, v)
    # nothing inside: nothing dropped, the arrays come back as they were
    v2, f2, d2, _ = drop_inner_shells(trimesh.util.concatenate([big, beside]).vertices,
                                      trimesh.util.concatenate([big, beside]).faces)
    assert d2 == 0 and len(f2) == len(big.faces) + len(beside.faces)


def test_parity_rays_tested_against_nearby_triangles_count_as_against_all():
    """The inner-shell test counts a ray's crossings only among the triangles whose extent across
    the ray holds its origin: the same parity as testing every triangle, inside, outside and on a
    torus (rays that cross it 0, 1, 2 or 4 times)."""
    from siren3d.meshing import _RAYS, _RayTarget, _ray_crossings

    tor = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3, major_sections=48, minor_sections=24)
    tri = np.asarray(tor.vertices)[tor.faces]
    target = _RayTarget(tri)
    origins = np.random.default_rng(0).uniform(-1.4, 1.4, size=(40, 3)) * [1, 1, 0.3]
    parities = []
    for o in origins:
        full = sum(_ray_crossings(o, d / np.linalg.norm(d), tri) % 2 for d in _RAYS)
        assert target.odd_rays(o) == full
        parities.append(full)
    assert 0 in parities and 3 in parities  # origins outside and inside the torus both tested


def test_extract_mesh_drops_inner_shells_unless_asked_to_keep_them():
    """A fresh paper-init SIREN is full of nested blobs: by default the pieces inside the largest
    one go (keep_inner keeps them), and the counts add up."""
    model = _siren("siren", width=64)
    kw = dict(refine=0, normals=False, min_component=0.0)
    every = extract_mesh(model, UNIT, res=48, keep_inner=True, **kw)
    outer = extract_mesh(model, UNIT, res=48, **kw)
    assert every.stats.inner_shells_dropped == 0
    assert outer.stats.inner_shells_dropped >= 1
    assert outer.stats.components == every.stats.components - outer.stats.inner_shells_dropped
    assert len(outer.faces) < len(every.faces)


def test_a_surface_that_leaves_the_box_is_reported_and_pad_closes_it(caplog):
    model = _siren("sphere", sphere_radius=1.05)
    with caplog.at_level(logging.WARNING, logger="siren3d"):
        open_mesh = extract_mesh(model, UNIT, res=48, refine=0)
    assert open_mesh.stats.touches_box and not open_mesh.stats.watertight
    assert "pad" in caplog.text
    closed = extract_mesh(model, UNIT, res=48, refine=0, pad=0.2)
    assert closed.stats.watertight and not closed.stats.touches_box
    boxed = extract_mesh(model, Normalization((10.0, 0.0, 0.0), 2.0), res=48, refine=0,
                         bbox=(7.0, -3.0, -3.0, 13.0, 3.0, 3.0))
    assert boxed.stats.watertight
    assert np.allclose(boxed.vertices.mean(0), [10, 0, 0], atol=0.2)


def test_no_crossing_and_oversized_grids_are_refused(monkeypatch):
    model = _siren("sphere")
    with pytest.raises(Siren3dError, match="never reaches the level 5"):
        extract_mesh(model, UNIT, res=32, level=5.0)
    with pytest.raises(Siren3dError, match="largest supported"):
        extract_mesh(model, UNIT, res=MAX_RES + 1)
    monkeypatch.setattr(meshing, "available_memory", lambda: 2 ** 30)  # a machine with 1 GiB free
    with pytest.raises(Siren3dError, match=r"needs about [\d.]+ GiB but only 1.0 GiB"):
        extract_mesh(model, UNIT, res=1024, method="dense")


def test_cli_mesh_reports_the_summary_and_writes_normals(tmp_path):
    model = _siren("sphere")
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, Normalization((5.0, 5.0, 5.0), 4.0), {"fit": FitConfig().to_dict(), "step": 0})
    out = tmp_path / "m.ply"
    r = CliRunner().invoke(main, ["mesh", str(path), "--res", "64", "--refine", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    summary = next(line for line in r.output.splitlines() if line.startswith("mesh res 64"))
    assert "of dense" in summary and summary.endswith(", 1 piece, watertight"), summary
    assert "refined" in r.output
    mesh = trimesh.load(out)
    assert mesh.is_watertight
    assert np.allclose(np.linalg.norm(mesh.vertices - 5.0, axis=1), 2.0, atol=0.2)
    assert b"property float nx" in out.read_bytes()[:2000]  # normals from grad f are written


# ------------------------------------------------------------------------------------------ offset surfaces

#: A scan frame that is not the unit box: meshes must come back in it, levels must be read in it
#: (exact_sphere_siren is the sphere of radius 20 there).
FRAME = Normalization((100.0, -50.0, 7.0), 40.0)


@pytest.mark.parametrize("level", [6.0, -6.0, 0.0])
def test_level_is_an_offset_surface_in_scan_units(level):
    """On a field that is an exact distance, level L is the sphere of radius r + L, in scan units
    (L = 6 scan units is 0.15 of the unit box here: a level read in unit-box units would be far off)."""
    res = 64
    cell = 2 * FRAME.scale / (res - 1)  # scan units
    mesh = extract_mesh(exact_sphere_siren(), FRAME, res=res, level=level)
    r = np.linalg.norm(mesh.vertices - np.array(FRAME.center), axis=1)
    assert np.abs(r - (20.0 + level)).max() < 0.1 * cell  # linear interpolation of |x| - r: well within a cell
    assert mesh.stats.components == 1 and mesh.stats.watertight
    # normals point outward, away from the centre, at either sign of the level
    radial = (mesh.vertices - np.array(FRAME.center)) / r[:, None]
    assert np.einsum("ij,ij->i", mesh.normals, radial).min() > 0.99


@pytest.mark.parametrize("level", [2.0, -2.0])
def test_level_on_an_analytic_torus(level):
    """extract_mesh takes any field (here the exact torus, an analytic callable): level L is the tube
    of radius minor + L around the same core circle, measured in scan units."""
    from siren3d.synthetic import torus

    frame = Normalization((3.0, -4.0, 10.0), 25.0)  # torus(0.5, 0.18): major 12.5, minor 4.5 scan units
    res = 96
    cell = 2 * frame.scale / (res - 1)
    for method in ("sparse", "dense"):
        mesh = extract_mesh(torus(0.5, 0.18), frame, res=res, level=level, method=method)
        p = mesh.vertices - np.array(frame.center)
        tube = np.hypot(np.hypot(p[:, 0], p[:, 1]) - 12.5, p[:, 2])  # distance to the core circle
        assert np.abs(tube - (4.5 + level)).max() < 0.25 * cell, method
        assert mesh.stats.components == 1 and mesh.stats.watertight


@pytest.mark.parametrize("level", ["6", "-6"])
def test_cli_mesh_level_is_an_offset_in_scan_units(tmp_path, level):
    path = tmp_path / "model.pt"
    save_checkpoint(path, exact_sphere_siren(), FRAME, {"fit": FitConfig().to_dict(), "step": 0})
    out = tmp_path / "offset.ply"
    r = CliRunner().invoke(main, ["mesh", str(path), "--level", level, "--res", "64", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 piece, watertight" in r.output
    mesh = trimesh.load(out)
    radius = np.linalg.norm(mesh.vertices - np.array(FRAME.center), axis=1)
    cell = 2 * FRAME.scale / 63
    assert np.abs(radius - (20.0 + float(level))).max() < 0.1 * cell
