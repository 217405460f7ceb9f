"""Trimming and colour on real (small) fits: a single view of a ball, and a complete coloured ball."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from scipy.spatial import cKDTree

from siren3d.checkpoint import load_checkpoint, save_checkpoint
from siren3d.cli import main
from siren3d.config import FitConfig, ModelConfig
from siren3d.io import Scan
from siren3d.meshing import export_mesh, extract_mesh
from siren3d.metrics import surface_distances
from siren3d.scanner import scan_mesh, viewpoint
from siren3d.support import AUTO_SPACINGS, SNAP
from siren3d.training import fit

CENTRE = np.array([100.0, -50.0, 7.0])
RADIUS = 20.0
SMALL = FitConfig(steps=300, batch=1024, lr=5e-4, lr_sparse=5e-4, seed=0, checkpoint_every=0,
                  model=ModelConfig(width=64, hidden_layers=2, init="sphere"))


def _color_of(points: np.ndarray) -> np.ndarray:
    """A known colour for every position on the ball: (N, 3) float, 0-255."""
    u = (points - CENTRE) / RADIUS
    return np.stack([128 + 100 * u[:, 0], 128 + 100 * u[:, 1], 128 + 60 * u[:, 2] + 40 * u[:, 0] * u[:, 1]], 1)


@pytest.fixture(scope="module")
def view_fit(tmp_path_factory):
    """One view of a ball, fitted: the field closes the far side somewhere, unsupported."""
    ball = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    ball.apply_translation(CENTRE)
    view = scan_mesh(ball.vertices, ball.faces, viewpoint(CENTRE, 5 * RADIUS, azimuth=30, elevation=20),
                     resolution=64)
    run = tmp_path_factory.mktemp("view")
    return view, fit(view.to_scan(path=str(run / "view.ply")), SMALL, run, progress=False)


@pytest.fixture(scope="module")
def colored_fit(tmp_path_factory, sphere_points):
    """A complete scan of a ball, coloured by _color_of."""
    pts, nrm = sphere_points
    pts = pts / 0.5 * RADIUS + CENTRE
    colors = np.clip(np.rint(_color_of(pts)), 0, 255).astype(np.uint8)
    scan = Scan(points=pts, normals=nrm, path="ball.ply", colors=colors)
    run = tmp_path_factory.mktemp("ball")
    return scan, fit(scan, SMALL, run, progress=False)


def _border_vertices(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    return np.unique(edges[counts == 1])


def test_a_single_view_keeps_the_seen_side_only_with_a_clean_border(view_fit):
    view, result = view_fit
    # every piece kept: trimming counts a small unsupported piece it cuts away as trimmed area (this
    # fit has one, 1.4 % of the area), where an untrimmed mesh drops it as a small piece (min_component)
    whole = extract_mesh(result.model, result.normalization, res=48, support=result.support, trim="off",
                         min_component=0)
    mesh = extract_mesh(result.model, result.normalization, res=48, support=result.support)  # trim auto
    s = mesh.stats
    assert s.trim == "auto" and s.trimmed_regions >= 1 and 0.3 < s.trimmed_fraction < 0.95
    assert not s.watertight and s.components == 1
    area_whole, area = trimesh.Trimesh(whole.vertices, whole.faces).area, trimesh.Trimesh(mesh.vertices, mesh.faces).area
    assert s.trimmed_area == pytest.approx(area_whole - area, rel=0.02)
    assert s.trimmed_fraction == pytest.approx(1 - area / area_whole, abs=0.01)
    # Only surface near the scan is left: every vertex within the cut distance (plus the snap at
    # the border), measured again here from the scan's own points.
    d, j = cKDTree(view.points).query(mesh.vertices)
    spacing = result.normalization.distance_to_scan(result.support.spacing)  # same points, same order
    assert (d / spacing[j]).max() < AUTO_SPACINGS + 1.5
    assert np.allclose(mesh.support_distance, d / spacing[j], rtol=1e-4, atol=1e-4)
    # ... and the whole seen side is there: the scan points are as close to it as to the untrimmed mesh.
    near_whole = surface_distances(whole.vertices, whole.faces, view.points)
    near = surface_distances(mesh.vertices, mesh.faces, view.points)
    assert np.allclose(near, near_whole, atol=1e-4 * RADIUS)
    # One border, along the cut: its vertices sit at the cut distance (within the snap), and the
    # cut made no slivers: faces along it are no thinner than the marching-cubes faces elsewhere.
    border = _border_vertices(mesh.faces)
    assert len(border) > 30
    assert np.quantile(mesh.support_distance[border], 0.1) > AUTO_SPACINGS - 1.0
    tri = mesh.vertices[mesh.faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    longest = np.max([np.linalg.norm(tri[:, i] - tri[:, (i + 1) % 3], axis=1) for i in range(3)], axis=0)
    thin = area2 / longest ** 2  # 0 for a sliver, 0.87 equilateral
    at_border = np.isin(mesh.faces, border).any(1)
    assert np.quantile(thin[at_border], 0.02) >= 0.5 * np.quantile(thin[~at_border], 0.02)
    assert SNAP > 0


def test_a_distance_trims_more_as_it_shrinks_and_off_keeps_the_field_surface(view_fit):
    _, result = view_fit
    kw = dict(res=48, support=result.support, refine=0)
    off = extract_mesh(result.model, result.normalization, trim="off", **kw)
    wide = extract_mesh(result.model, result.normalization, trim=6.0, **kw)
    tight = extract_mesh(result.model, result.normalization, trim=1.5, **kw)
    assert off.stats.trimmed_area == 0 and off.stats.trim == "off"
    assert 0 < wide.stats.trimmed_fraction < tight.stats.trimmed_fraction < 1
    assert wide.support_distance.max() < 6.0 + 1.5 and tight.support_distance.max() < 1.5 + 1.0
    assert wide.stats.trim == "6" and tight.stats.trim == "1.5"


def test_the_cli_mesh_is_the_notebook_mesh_and_says_what_it_trimmed(view_fit, tmp_path):
    _, result = view_fit
    out = tmp_path / "cli.ply"
    r = CliRunner().invoke(main, ["mesh", str(result.model_path), "--res", "48", "-o", str(out), "-q",
                                  "--write-support"])
    assert r.exit_code == 0, r.output
    summary = next(line for line in r.output.splitlines() if line.startswith("mesh res 48"))
    assert "open (not watertight); trimmed " in summary and "% of the area" in summary, summary
    notebook = extract_mesh(result.model, result.normalization, res=48, support=result.support)
    assert f"trimmed {notebook.stats.trimmed_fraction:.1%}" in summary
    mine = tmp_path / "notebook.ply"
    export_mesh(notebook, mine, support_property=True)
    assert out.read_bytes() == mine.read_bytes()
    assert b"property float quality" in out.read_bytes()[:1000]
    back = trimesh.load(out, process=False)
    quality = back.metadata["_ply_raw"]["vertex"]["data"]["quality"].ravel()
    assert np.array_equal(quality, notebook.support_distance.astype(np.float32))
    r = CliRunner().invoke(main, ["mesh", str(result.model_path), "--res", "48", "-o", str(out), "--trim", "0"])
    assert r.exit_code == 2 and "positive number of point spacings" in r.output


def test_a_model_file_without_support_is_meshed_untrimmed_and_refuses_a_distance(view_fit, tmp_path):
    _, result = view_fit
    ckpt = load_checkpoint(result.model_path)
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt.model, ckpt.normalization, ckpt.meta)  # as siren3d wrote before
    r = CliRunner().invoke(main, ["mesh", str(old), "--res", "40", "-o", str(tmp_path / "m.ply"), "-q"])
    assert r.exit_code == 0, r.output
    assert "no scan support" in r.output and "trimmed" not in r.output.split("no scan support")[0]
    r = CliRunner().invoke(main, ["mesh", str(old), "--res", "40", "-o", str(tmp_path / "m.ply"), "--trim", "3"])
    assert r.exit_code == 2 and r.output.startswith("error: trim 3 needs the scan's support")


def test_a_complete_scan_stays_one_watertight_piece_exactly_as_without_trimming(colored_fit):
    _, result = colored_fit
    auto = extract_mesh(result.model, result.normalization, res=48, support=result.support)
    off = extract_mesh(result.model, result.normalization, res=48, support=result.support, trim="off")
    bare = extract_mesh(result.model, result.normalization, res=48)  # no support at all: as before
    assert auto.stats.watertight and auto.stats.components == 1 and auto.stats.trimmed_regions == 0
    assert auto.stats.trimmed_area == 0
    for other in (off, bare):
        assert np.array_equal(auto.vertices, other.vertices) and np.array_equal(auto.faces, other.faces)


def test_vertex_colours_follow_the_scans_colours_into_every_format(colored_fit, tmp_path):
    scan, result = colored_fit
    mesh = extract_mesh(result.model, result.normalization, res=48, support=result.support)
    assert mesh.stats.colored and mesh.colors.shape == (len(mesh.vertices), 3) and mesh.colors.dtype == np.uint8
    err = np.abs(mesh.colors.astype(np.float64) - _color_of(mesh.vertices))
    assert np.quantile(err, 0.99) <= 4 and err.mean() < 1.5, (np.quantile(err, 0.99), err.mean())
    for suffix in (".ply", ".obj", ".glb"):
        path = export_mesh(mesh, tmp_path / f"ball{suffix}")
        back = trimesh.load(path, process=False, force="mesh")
        assert back.visual.kind == "vertex", suffix
        got = np.asarray(back.visual.vertex_colors)[:, :3].astype(int)
        if suffix == ".glb":  # glTF may reorder nothing but stores vertices as float32: match by position
            order = cKDTree(mesh.vertices).query(back.vertices)[1]
            want = mesh.colors[order]
        else:
            want = mesh.colors
        assert len(got) == len(want) and np.abs(got - want).max() <= 1, suffix
