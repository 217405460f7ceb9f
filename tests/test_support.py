"""The scan's support: spacing, storage in model.pt, the support distance, cutting and auto trimming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from siren3d.checkpoint import load_checkpoint, save_checkpoint
from siren3d.config import MeshConfig, parse_trim
from siren3d.errors import SettingError, Siren3dError
from siren3d.model import ModelConfig, Siren
from siren3d.normalization import Normalization
from siren3d.support import AUTO_DEPTH, ScanSupport, cut_mesh, face_areas, plan_trim, point_spacing

UNIT = Normalization((0.0, 0.0, 0.0), 1.0)


def _min_angles(v, f):
    t = v[f]
    e = [np.linalg.norm(t[:, (i + 1) % 3] - t[:, (i + 2) % 3], axis=1) for i in range(3)]  # opposite corner i
    ang = []
    for i in range(3):
        a, b, c = e[i], e[(i + 1) % 3], e[(i + 2) % 3]
        ang.append(np.degrees(np.arccos(np.clip((b * b + c * c - a * a) / (2 * b * c), -1, 1))))
    return np.min(ang, axis=0)


def _sphere_support(n: int = 20_000, radius: float = 0.5, keep=None, seed: int = 0) -> ScanSupport:
    """Points on a sphere (those where keep(points) holds), as a support in the unit box."""
    p = np.random.default_rng(seed).normal(size=(n, 3))
    p = radius * p / np.linalg.norm(p, axis=1, keepdims=True)
    if keep is not None:
        p = p[keep(p)]
    return ScanSupport(p.astype(np.float32), point_spacing(p))


def test_point_spacing_is_the_grid_spacing_and_a_stray_point_does_not_inflate_it():
    s = 0.01
    g = np.stack(np.meshgrid(np.arange(60) * s, np.arange(60) * s, [0.0], indexing="ij"), -1).reshape(-1, 3)
    stray = np.array([[0.3, 0.3, 0.5]])
    sp = point_spacing(np.concatenate([g, stray]))
    interior = (g[:, :2] > 3 * s).all(1) & (g[:, :2] < 56 * s).all(1)
    # 1 / sqrt(density): 8 neighbours within s * sqrt(2) -> s * sqrt(2) * sqrt(pi / 8) = 0.886 s
    assert np.allclose(sp[:-1][interior], s * np.sqrt(2 * np.pi / 8), rtol=1e-3)
    assert sp[-1] < 2 * s  # its own neighbours are 0.5 away; it gets the grid's spacing


def test_support_distance_is_in_local_spacings():
    sup = _sphere_support(5000)
    on = sup.points[:100].astype(np.float64)
    assert np.allclose(sup.distance(on), 0.0, atol=1e-6)
    out = on * 1.2  # 0.1 off the sphere
    d = sup.distance(out)
    assert np.all(d > 0.09 / sup.spacing.max()) and np.all(d < 0.11 / sup.spacing.min())
    assert np.allclose(sup.distance(out, offset=0.1), sup.distance(out) - 0.1 / sup.spacing[sup.tree.query(out)[1]],
                       atol=0.05)


def test_support_round_trips_through_the_model_file_and_bad_ones_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.5, 0.5, (500, 3))
    sup = ScanSupport(pts.astype(np.float32), point_spacing(pts), rng.integers(0, 256, (500, 3), dtype=np.uint8))
    model = Siren(ModelConfig(width=16, hidden_layers=1))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, UNIT, {}, support=sup)
    back = load_checkpoint(path).support
    assert back is not None
    assert np.array_equal(back.points, sup.points) and np.array_equal(back.spacing, sup.spacing)
    assert np.array_equal(back.colors, sup.colors)
    # A file written before the support existed still loads, without one.
    save_checkpoint(path, model, UNIT, {})
    assert load_checkpoint(path).support is None

    good = sup.to_tensors()
    bad_cases = {
        "spacing NaN": {**good, "spacing": torch.full((500,), float("nan"))},
        "points 2-D wrong": {**good, "points": torch.zeros(500, 2)},
        "colours float": {**good, "colors": torch.zeros(500, 3)},
        "spacing short": {**good, "spacing": good["spacing"][:10]},
        "not tensors": {"points": [1, 2, 3]},
    }
    for what, bad in bad_cases.items():
        payload = torch.load(tmp_path / "model.pt", weights_only=True)
        payload["support"] = bad
        torch.save(payload, path)
        with pytest.raises(Siren3dError, match=r"model\.pt: model file's scan support is invalid"):
            load_checkpoint(path)


def test_trim_setting_parses_auto_off_and_spacings():
    assert parse_trim("auto") == "auto" and parse_trim(" OFF ") == "off" and parse_trim("2.5") == 2.5
    for bad in ("0", "-1", "nan", "inf", "some"):
        with pytest.raises(ValueError):
            parse_trim(bad)
    with pytest.raises(SettingError, match="trim"):
        MeshConfig(trim="-3").validate()


def test_cut_follows_the_level_line_keeps_the_winding_and_makes_no_slivers():
    s = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    level = 0.1234
    v, f, new = cut_mesh(s.vertices, s.faces, s.vertices[:, 0] - level)
    cut = trimesh.Trimesh(v, f, process=False)
    # The kept part is the zone x <= level: area 2 pi r (r + level) on the sphere.
    assert cut.area == pytest.approx(2 * np.pi * (1 + level) * s.area / (4 * np.pi), rel=0.01)
    assert (np.einsum("ij,ij->i", cut.face_normals, v[f].mean(1)) > 0).all()  # outward, as before
    edge = np.median(s.edges_unique_length)
    border = np.unique(cut.edges_sorted[trimesh.grouping.group_rows(cut.edges_sorted, require_count=1)])
    assert len(border) > 20 and np.abs(v[border, 0] - level).max() < 0.25 * edge
    assert new.sum() > 0 and np.allclose(v[new, 0], level, atol=1e-9)  # cut points lie on the line
    assert _min_angles(v, f).min() > 10.0  # the sphere's own triangles are near-equilateral
    assert face_areas(v, f).min() > 0.02 * np.median(face_areas(v, f))
    assert cut.is_winding_consistent


def test_auto_trims_the_unseen_side_and_keeps_holes_closed_a_distance_trims_both():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    # One view: the points of the x > 0 half only.
    half = _sphere_support(keep=lambda p: p[:, 0] > 0)
    plan = plan_trim(v, f, half.distance(v), "auto", half)
    assert plan.trimmed_regions == 1
    gone = plan.value > 0
    assert gone[v[:, 0] < -0.1].all() and not gone[v[:, 0] > 0].any()
    # A complete scan with a hole of 5 % of the diagonal (the bunny's base holes are up to ~7 %).
    diag = 1.0 * np.sqrt(3)
    holed = _sphere_support(keep=lambda p: np.linalg.norm(p - [0, 0, 0.5], axis=1) > 0.025 * diag)
    plan = plan_trim(v, f, holed.distance(v), "auto", holed)
    assert plan.regions >= 1 and plan.trimmed_regions == 0 and not (plan.value > 0).any()
    plan = plan_trim(v, f, holed.distance(v), 3.0, holed)
    assert (plan.value > 0).any() and (plan.value > 0)[np.argmax(v[:, 2])]
    # A region that reaches the box's edge goes, however small.
    edge = np.zeros(len(v), dtype=bool)
    edge[np.argmax(v[:, 2])] = True
    assert plan_trim(v, f, holed.distance(v), "auto", holed, at_box_edge=edge).trimmed_regions == 1
    assert AUTO_DEPTH * holed.diagonal > 0.025 * diag
    # A ghost (a piece of its own, far from every point) does not make a complete scan open.
    ghost = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    ghost.apply_translation([0.0, 0.0, 0.85])
    both = trimesh.util.concatenate([sphere, ghost])
    vb, fb = np.asarray(both.vertices), np.asarray(both.faces)
    full = _sphere_support()
    plan = plan_trim(vb, fb, full.distance(vb), "auto", full)
    assert plan.regions >= 1 and plan.trimmed_regions == 0 and not (plan.value > 0).any()


def test_a_measured_inner_wall_is_kept_and_an_unsupported_inner_shell_dropped():
    """A hollow ball scanned inside and out (a cut-open shell, say) keeps its inner wall; the same
    inner shell with no scan points on it is a fitting artefact and goes."""
    from siren3d.meshing import drop_inner_shells
    from siren3d.support import shell_supported

    outer = trimesh.creation.icosphere(subdivisions=4, radius=0.8)
    inner = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    inner.apply_translation([0.03, -0.02, 0.05])
    inner.invert()  # the inner wall faces into the cavity
    both = trimesh.util.concatenate([outer, inner])
    v, f = np.asarray(both.vertices), np.asarray(both.faces)
    walls = _sphere_support(20_000, 0.8)
    pts = np.concatenate([walls.points, 0.5 * walls.points[:5000] + [0.03, -0.02, 0.05]])
    hollow = ScanSupport(pts.astype(np.float32), point_spacing(pts))

    def asks(sup):
        return lambda pv, pf: shell_supported(pv, pf, sup)

    _, f1, dropped, kept = drop_inner_shells(v, f, supported=asks(hollow))
    assert (dropped, kept) == (0, 1) and len(f1) == len(f)
    _, f2, dropped, kept = drop_inner_shells(v, f, supported=asks(walls))
    assert (dropped, kept) == (1, 0) and len(f2) == len(outer.faces)


def test_scanned_bits_apart_from_the_rest_survive_trimming_and_stray_islands_do_not():
    """An exact field: a ball and, apart from it, a small ball (1.6 % of the big one's area, so
    min_component alone would drop it). The scan saw one side of each, and a few stray points on
    the far side of the big one. Trimming keeps both seen sides and no island around the strays."""
    from siren3d.meshing import extract_mesh
    from siren3d.synthetic import sphere

    big, small = sphere(0.6), sphere(0.075, center=(0.72, 0.0, 0.0))

    def field(p):
        return np.minimum(big(p), small(p))

    rng = np.random.default_rng(1)
    a = rng.normal(size=(40_000, 3))
    a = 0.6 * a / np.linalg.norm(a, axis=1, keepdims=True)
    b = rng.normal(size=(3_000, 3))
    b = 0.075 * b / np.linalg.norm(b, axis=1, keepdims=True) + [0.72, 0, 0]
    seen = np.concatenate([a[a[:, 2] > 0], b[b[:, 2] > 0]])
    strays = np.array([[0.0, 0.0, -0.6], [0.3, 0.2, -0.5], [-0.25, -0.3, -0.48]])
    strays *= 0.6 / np.linalg.norm(strays, axis=1, keepdims=True)
    pts = np.concatenate([seen, strays])
    sup = ScanSupport(pts.astype(np.float32), point_spacing(pts))
    kw = dict(res=96, normals=False)
    whole = extract_mesh(field, UNIT, support=sup, trim="off", **kw)
    assert whole.stats.components == 1 and whole.stats.dropped_components == 1  # as before: the small ball goes
    mesh = extract_mesh(field, UNIT, support=sup, **kw)
    assert mesh.stats.trimmed_regions >= 2 and 0.4 < mesh.stats.trimmed_fraction < 0.6
    assert mesh.stats.components == 2 and mesh.stats.dropped_components == 3  # the strays' islands
    pieces = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).split(only_watertight=False)
    centres = sorted(p.vertices.mean(0)[0] for p in pieces)
    assert centres[0] == pytest.approx(0.0, abs=0.05) and centres[1] == pytest.approx(0.72, abs=0.02)
    assert mesh.vertices[:, 2].min() > -0.05  # nothing left of the far sides


def test_a_gap_in_the_view_is_cut_but_surface_the_fit_did_not_bring_to_its_points_stays():
    """One view of a ball (the far half is an open side). Inside the view: a gap with no points
    (an occlusion shadow), and a dent the field does not follow (points 5 spacings below its
    surface). Both are deeper than AUTO_HOLE_SPACINGS; the field tells them apart: the points
    nearest to the gap's bridge lie on the surface, those under the dent do not."""
    from siren3d.support import AUTO_HOLE_SPACINGS
    from siren3d.synthetic import sphere

    ball = trimesh.creation.icosphere(subdivisions=5, radius=0.6)
    v, f = np.asarray(ball.vertices), np.asarray(ball.faces)
    p = np.random.default_rng(2).normal(size=(80_000, 3))
    p = p[p[:, 0] > 0]
    p = 0.6 * p / np.linalg.norm(p, axis=1, keepdims=True)
    gap_dir, dent_dir = (np.array(d) / np.linalg.norm(d) for d in ([1, -0.4, -0.3], [1, 0.4, 0.3]))
    p = p[p @ gap_dir < 0.6 * np.cos(0.12)]
    dent = p @ dent_dir > 0.6 * np.cos(0.15)
    spacing = float(np.median(point_spacing(p)))
    p[dent] *= 1 - 5.5 * spacing / 0.6
    sup = ScanSupport(p.astype(np.float32), point_spacing(p))
    in_gap = v @ gap_dir > 0.6 * np.cos(0.06)
    in_dent = v @ dent_dir > 0.6 * np.cos(0.08)
    assert sup.distance(v[in_dent]).min() > AUTO_HOLE_SPACINGS and sup.distance(v[in_gap]).max() > AUTO_HOLE_SPACINGS
    plan = plan_trim(v, f, sup.distance(v), "auto", sup, field=sphere(0.6))
    gone = plan.value > 0
    assert gone[v[:, 0] < -0.1].all() and gone[in_gap].all() and not gone[in_dent].any()
    blind = plan_trim(v, f, sup.distance(v), "auto", sup)  # without the field: every deep region goes
    assert (blind.value > 0)[in_dent].all()

    # A ghost: a small ball of its own beside the dent, whose nearest scan points are the dent's
    # (off the field's surface, like the fold's): a piece with no supported surface goes anyway.
    ghost = trimesh.creation.icosphere(subdivisions=2, radius=0.02)
    gv = np.asarray(ghost.vertices) + dent_dir * 0.66
    assert sup.distance(gv).min() > AUTO_HOLE_SPACINGS
    v2, f2 = np.concatenate([v, gv]), np.concatenate([f, np.asarray(ghost.faces) + len(v)])
    plan = plan_trim(v2, f2, sup.distance(v2), "auto", sup, field=sphere(0.6))
    gone = plan.value > 0
    assert gone[len(v):].all() and not gone[:len(v)][in_dent].any() and gone[:len(v)][in_gap].all()
