"""Colour, intensity and sensor positions from point files, and normals oriented toward the sensor.

Colours are a known function of position, so every check also proves they stayed with their points
through cleaning and subsampling. Files come from the writers users have: Open3D (PCD, PLY, XYZRGB),
PCL's layouts written byte by byte, and plain text.
"""

from __future__ import annotations

import logging

import numpy as np
import open3d as o3d
import pytest
from click.testing import CliRunner

from siren3d.cli import main
from siren3d.config import LoadConfig
from siren3d.errors import SettingError
from siren3d.io import Scan, load_scan, save_points_ply
from siren3d.synthetic import sample_surface, sphere, torus


def colour_of(points, lo, hi):
    """The test's colour field: x, y, z mapped to red, green, blue over the box [lo, hi]."""
    return np.rint(255 * (points - lo) / (hi - lo)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ball():
    pts, nrm = sample_surface(sphere(0.5), 2000, res=48, seed=4)
    pts = pts * 40.0 + np.array([100.0, -50.0, 7.0])
    return pts, nrm, pts.min(0), pts.max(0)


def _check_colours(scan, ball, tol=0):
    _, _, lo, hi = ball
    want = colour_of(scan.points, lo, hi)
    assert scan.colors is not None and scan.colors.dtype == np.uint8 and scan.colors.shape == (len(scan), 3)
    assert np.abs(scan.colors.astype(int) - want).max() <= tol


def _o3d_cloud(pts, colours01):
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.colors = o3d.utility.Vector3dVector(colours01)
    return pc


@pytest.mark.parametrize("suffix, ascii", [(".pcd", True), (".pcd", False), (".ply", True), (".ply", False),
                                           (".xyzrgb", True)])
def test_open3d_written_colours_load(tmp_path, ball, suffix, ascii):
    pts, _, lo, hi = ball
    path = tmp_path / f"ball{suffix}"
    assert o3d.io.write_point_cloud(str(path), _o3d_cloud(pts, colour_of(pts, lo, hi) / 255.0), write_ascii=ascii)
    scan = load_scan(path, outliers="off")
    assert len(scan) == len(pts)
    # Open3D stores float32 positions in some of these; the colour function moves < 1 level with them
    _check_colours(scan, ball, tol=1)


def _pcd_header(fields, sizes, types, n, mode, viewpoint="0 0 0 1 0 0 0"):
    return (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {sizes}\nTYPE {types}\nCOUNT {' '.join('1' * len(fields.split()))}\n"
            f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT {viewpoint}\nPOINTS {n}\nDATA {mode}\n")


def _packed(rgb, alpha):
    return (np.uint32(alpha) << 24) | (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) \
        | rgb[:, 2].astype(np.uint32)


@pytest.mark.parametrize("alpha", [0, 255])
def test_pcl_packed_rgb_float_binary_and_rgba_uint_ascii(tmp_path, ball, alpha):
    """PCL packs colour into one 32-bit field: 'rgb' as a float's bits (alpha 255 makes them a NaN
    pattern, which must survive), 'rgba' as an unsigned integer (ascii writes that integer)."""
    pts, _, lo, hi = ball
    want = colour_of(pts, lo, hi)
    packed = _packed(want, alpha)
    rec = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    for i, c in enumerate("xyz"):
        rec[c] = pts[:, i]
    rec["rgb"] = packed
    binary = tmp_path / "rgb.pcd"
    binary.write_bytes(_pcd_header("x y z rgb", "4 4 4 4", "F F F F", len(pts), "binary").encode() + rec.tobytes())
    scan = load_scan(binary, outliers="off")
    _check_colours(scan, ball, tol=1)

    text = tmp_path / "rgba.pcd"
    rows = "\n".join(f"{p[0]:.9g} {p[1]:.9g} {p[2]:.9g} {v}" for p, v in zip(pts, _packed(want, 77)))
    text.write_text(_pcd_header("x y z rgba", "4 4 4 4", "F F F U", len(pts), "ascii") + rows + "\n")
    scan = load_scan(text, outliers="off")
    assert scan.colors.shape == (len(pts), 4) and np.all(scan.colors[:, 3] == 77)
    assert np.abs(scan.colors[:, :3].astype(int) - colour_of(scan.points, lo, hi)).max() <= 1


def test_ply_colour_types_and_alpha(tmp_path, ball):
    pts, nrm, lo, hi = ball
    want = colour_of(pts, lo, hi)
    rgba = np.hstack([want, np.full((len(pts), 1), 200, np.uint8)])
    path = tmp_path / "uchar.ply"
    save_points_ply(path, pts, nrm, colors=rgba)
    scan = load_scan(path)
    assert not scan.normals_estimated and scan.colors.shape == (len(pts), 4)
    np.testing.assert_array_equal(scan.colors[:, 3], 200)
    assert np.abs(scan.colors[:, :3].astype(int) - colour_of(scan.points, lo, hi)).max() <= 1

    # float channels in [0, 1] and ushort channels (16-bit), ascii
    for name, typ, values in (("float", "float", want / 255.0), ("ushort", "ushort", want.astype(np.uint32) * 257)):
        lines = ["ply", "format ascii 1.0", f"element vertex {len(pts)}", "property double x", "property double y",
                 "property double z", f"property {typ} red", f"property {typ} green", f"property {typ} blue",
                 "end_header"]
        fmt = "{:.6f}" if typ == "float" else "{}"
        lines += [" ".join([f"{v:.9g}" for v in p] + [fmt.format(c) for c in col]) for p, col in zip(pts, values)]
        path = tmp_path / f"{name}.ply"
        path.write_text("\n".join(lines) + "\n")
        _check_colours(load_scan(path), ball)


@pytest.mark.parametrize("layout", ["xyzrgb255", "xyzrgb01", "pts_irgb", "xyznrgb", "xyzrgbn"])
def test_text_colour_layouts(tmp_path, ball, layout):
    pts, nrm, lo, hi = ball
    want = colour_of(pts, lo, hi)
    intensity = np.arange(len(pts)) % 97 - 40.0
    cols = {"xyzrgb255": (pts, want), "xyzrgb01": (pts, want / 255.0), "pts_irgb": (pts, intensity[:, None], want),
            "xyznrgb": (pts, nrm, want), "xyzrgbn": (pts, want, nrm)}[layout]
    path = tmp_path / ("scan.pts" if layout == "pts_irgb" else "scan.xyz")
    with open(path, "w") as f:
        if layout == "pts_irgb":
            f.write(f"{len(pts)}\n")
        np.savetxt(f, np.hstack(cols), fmt="%.9g")
    scan = load_scan(path)
    _check_colours(scan, ball)
    assert scan.normals_estimated == (layout not in ("xyznrgb", "xyzrgbn"))
    if layout == "pts_irgb":
        np.testing.assert_array_equal(scan.intensity, intensity.astype(np.float32))
    if not scan.normals_estimated:
        np.testing.assert_allclose(scan.normals, nrm, atol=1e-6)


def test_six_columns_are_normals_in_xyzn_and_when_unit_length(tmp_path, ball):
    pts, nrm, _, _ = ball
    for suffix in (".xyz", ".xyzn"):
        path = tmp_path / f"n{suffix}"
        np.savetxt(path, np.hstack([pts, nrm]))
        scan = load_scan(path)
        assert scan.colors is None and not scan.normals_estimated


def test_colours_stay_with_their_points_through_cleaning_and_subsampling(tmp_path, ball, caplog):
    pts, nrm, lo, hi = (a.copy() if isinstance(a, np.ndarray) else a for a in ball)
    want = colour_of(pts, lo, hi)
    intensity = np.linalg.norm(pts - lo, axis=1)
    pts[::7] = np.nan          # dropped: NaN coordinates
    nrm[3::11] = 0.0           # dropped: unusable normals
    path = tmp_path / "dirty.npz"
    np.savez(path, points=pts, normals=nrm, colors=want, intensity=intensity)
    with caplog.at_level(logging.WARNING, logger="siren3d"):
        scan = load_scan(path, max_points=1200, seed=3)
    assert 1000 < len(scan) < 1200  # subsampled to 1,200, then those with zero normals dropped
    _check_colours(scan, ball)
    np.testing.assert_allclose(scan.intensity, np.linalg.norm(scan.points - lo, axis=1), rtol=1e-6)
    sub = scan.take(np.arange(0, len(scan), 5))
    assert len(sub) == (len(scan) + 4) // 5
    _check_colours(sub, ball)
    np.testing.assert_array_equal(sub.normals, scan.normals[::5])


# --------------------------------------------------------------------------------------------
# Sensor positions: normals of a single view oriented toward the scanner


def single_view(sdf, n, viewpoint, seed=0, noise=0.0):
    """Points of ``sdf``'s surface that a scanner at ``viewpoint`` sees: facing it and not hidden by
    the shape (the segment to the scanner stays outside). Returns (points, true outward normals)."""
    pts, nrm = sample_surface(sdf, n, res=96, seed=seed)
    v = np.asarray(viewpoint, dtype=np.float64)
    facing = np.einsum("ij,ij->i", nrm, v - pts) > 0
    pts, nrm = pts[facing], nrm[facing]
    t = np.linspace(0.0, 1.0, 400)[1:]
    start = pts + 2e-3 * nrm
    ray = start[:, None, :] + t[None, :, None] * (v - start)[:, None, :]
    visible = (sdf(ray.reshape(-1, 3)).reshape(len(pts), -1) > 0).all(1)
    pts, nrm = pts[visible], nrm[visible]
    if noise:
        pts = pts + np.random.default_rng(seed + 1).normal(scale=noise, size=pts.shape)
    return pts, nrm


def room(p):
    """A spherical room (the solid is outside it) with a pillar: scanned from inside, like a
    terrestrial scanner in a room. Tangent-plane propagation turns such a scan's normals outward
    from the points' centroid, which here is into the walls: every one wrong."""
    return np.minimum(0.8 - np.linalg.norm(p, axis=-1), np.linalg.norm(p[..., :2] - [0.35, 0.0], axis=-1) - 0.12)


SCALE, SHIFT = 30.0, np.array([5.0, -2.0, 40.0])
VIEWS = {"torus": (torus(0.5, 0.18), np.array([1.3, -1.1, 0.9])),  # down onto the ring, through its hole
         "room": (room, np.array([-0.3, 0.2, 0.1]))}  # inside; the pillar hides part of the wall


@pytest.fixture(scope="module", params=sorted(VIEWS))
def view(request):
    """(points, true normals, scanner position) of a single view, in scan units."""
    sdf, eye = VIEWS[request.param]
    pts, nrm = single_view(sdf, 8000, eye, seed=5, noise=1e-3)
    return pts * SCALE + SHIFT, nrm, eye * SCALE + SHIFT


@pytest.fixture(scope="module")
def room_view():
    sdf, eye = VIEWS["room"]
    pts, nrm = single_view(sdf, 8000, eye, seed=6, noise=1e-3)
    return pts * SCALE + SHIFT, nrm, eye * SCALE + SHIFT


def _agree(scan, nrm):
    """Fraction of estimated normals on the same side as the true ones."""
    return float(np.mean(np.einsum("ij,ij->i", scan.normals, nrm) > 0))


def test_viewpoint_setting_orients_estimated_normals_toward_the_scanner(tmp_path, view, caplog):
    pts, nrm, eye = view
    assert 2500 < len(pts) < 7500  # a partial view: some of the surface is hidden or faces away
    path = tmp_path / "view.ply"
    save_points_ply(path, pts)
    with caplog.at_level(logging.WARNING, logger="siren3d"):
        scan = load_scan(path, viewpoint=",".join(f"{v:.10g}" for v in eye))
    assert scan.normals_estimated and scan.outliers == 0
    np.testing.assert_allclose(scan.sensor, eye)
    assert _agree(scan, nrm) > 0.995
    assert any("toward the sensor" in r.message for r in caplog.records)


def test_pcd_viewpoint_orients_normals_and_the_default_one_is_ignored(tmp_path, room_view):
    pts, nrm, eye = room_view
    rows = "\n".join(" ".join(f"{v:.9g}" for v in p) for p in pts) + "\n"
    path = tmp_path / "view.pcd"
    path.write_text(_pcd_header("x y z", "4 4 4", "F F F", len(pts), "ascii",
                                viewpoint=f"{eye[0]:.9g} {eye[1]:.9g} {eye[2]:.9g} 1 0 0 0") + rows)
    scan = load_scan(path)
    np.testing.assert_allclose(scan.sensor, eye, rtol=1e-7)
    assert _agree(scan, nrm) > 0.995
    # PCL writes '0 0 0 1 0 0 0' when nobody set a viewpoint: it is not a sensor position (and
    # without one, this room's normals come out facing into the walls)
    path.write_text(_pcd_header("x y z", "4 4 4", "F F F", len(pts), "ascii") + rows)
    scan = load_scan(path)
    assert scan.sensor is None and _agree(scan, nrm) < 0.5


def test_per_point_sensor_columns_in_ply_and_npz(tmp_path, room_view):
    pts, nrm, eye = room_view
    # two scanner stations: every other point that the second one also sees was measured from there
    other = np.array([0.3, -0.4, -0.2]) * SCALE + SHIFT
    second = (np.arange(len(pts)) % 2 == 0) & (np.einsum("ij,ij->i", nrm, other - pts) > 0)
    assert second.mean() > 0.3
    sensors = np.where(second[:, None], other, eye)
    lines = ["ply", "format ascii 1.0", f"element vertex {len(pts)}"] + \
        [f"property double {c}" for c in ("x", "y", "z", "sensor_x", "sensor_y", "sensor_z")] + ["end_header"]
    lines += [" ".join(f"{v:.10g}" for v in row) for row in np.hstack([pts, sensors])]
    path = tmp_path / "sensors.ply"
    path.write_text("\n".join(lines) + "\n")
    scan = load_scan(path)
    assert scan.sensor.shape == (len(pts), 3)
    np.testing.assert_allclose(scan.sensor, sensors)
    assert _agree(scan, nrm) > 0.995

    npz = tmp_path / "sensors.npz"
    np.savez(npz, points=pts, sensor_position=sensors)
    scan = load_scan(npz, max_points=2000, seed=1)  # subsampled: sensors stay with their points
    assert len(scan) == 2000
    owner = np.abs(scan.sensor - eye).max(1) < 1e-9
    assert 0.3 < owner.mean() < 0.7
    # sparser after subsampling: PCA normals of points seen at grazing angles can tip over
    assert _agree(scan, _true_normals(pts, nrm, scan.points)) > 0.99


def _true_normals(pts, nrm, query):
    """The true normal of each queried point (an exact copy of one of ``pts``)."""
    from scipy.spatial import cKDTree

    d, i = cKDTree(pts).query(query)
    assert d.max() < 1e-9
    return nrm[i]


def test_viewpoint_setting_is_a_checked_fit_option():
    assert LoadConfig(viewpoint="1, 2,3").viewpoint == (1.0, 2.0, 3.0)
    assert LoadConfig(viewpoint=[1, 2, 3]).viewpoint == (1.0, 2.0, 3.0)
    for bad in ("1,2", "a,b,c", (1.0, float("nan"), 2.0)):
        with pytest.raises(SettingError, match="viewpoint"):
            LoadConfig(viewpoint=bad).validate()
    help_text = CliRunner().invoke(main, ["fit", "--help"]).output
    assert "--viewpoint X,Y,Z" in help_text and "--outliers [auto|off]" in help_text
    r = CliRunner().invoke(main, ["fit", "missing.ply", "--viewpoint", "1,2"])
    assert r.exit_code == 2 and "three numbers" in r.output


def test_scan_take_keeps_a_single_sensor_position():
    pts = np.random.default_rng(0).normal(size=(10, 3))
    s = Scan(points=pts, normals=pts.astype(np.float32), sensor=np.array([0.0, 0.0, 5.0]),
             colors=np.zeros((10, 3), np.uint8))
    sub = s.take(np.array([1, 3]))
    assert len(sub) == 2 and sub.colors.shape == (2, 3) and sub.sensor.shape == (3,)
