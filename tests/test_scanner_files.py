"""LAS/LAZ and E57: real files written by laspy and pye57 (small), read in bounded memory, and the
same one-line errors as every other format for broken, truncated and mislabelled ones."""

from __future__ import annotations

import struct
import tracemalloc
import uuid

import laspy
import numpy as np
import pye57
import pytest
from pye57 import libe57

import siren3d.io.formats.e57 as e57_module
import siren3d.io.formats.las as las_module
from siren3d.errors import Siren3dError
from siren3d.io import load_scan, save_points_ply
from siren3d.io.scan import subsample_indices
from siren3d.synthetic import sample_surface, sphere

from test_colour_sensor import VIEWS, colour_of, single_view

OFFSET = np.array([431_000.0, 5_400_000.0, 250.0])  # UTM-like coordinates, as LiDAR files have


@pytest.fixture(scope="module")
def ball():
    """A sphere of radius 10 m at survey coordinates, with a colour per point from its position."""
    pts, nrm = sample_surface(sphere(0.5), 3000, res=48, seed=11)
    pts = pts * 20.0 + OFFSET
    lo, hi = pts.min(0), pts.max(0)
    return pts, nrm, colour_of(pts, lo, hi), lo, hi


def write_las(path, pts, colours8=None, intensity=None, point_format=3, version="1.2", scale=1e-4,
              eight_bit=False, normals=None):
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.offsets = pts.min(0)
    header.scales = [scale] * 3
    if normals is not None:
        header.add_extra_dims([laspy.ExtraBytesParams(name=n, type=np.float32) for n in ("NormalX", "NormalY", "NormalZ")])
    las = laspy.LasData(header)
    las.x, las.y, las.z = pts[:, 0], pts[:, 1], pts[:, 2]
    if colours8 is not None:
        c = colours8.astype(np.uint16) * (1 if eight_bit else 257)  # the spec's 16-bit, or 8-bit as some write
        las.red, las.green, las.blue = c[:, 0], c[:, 1], c[:, 2]
    if intensity is not None:
        las.intensity = intensity
    if normals is not None:
        las.NormalX, las.NormalY, las.NormalZ = normals[:, 0], normals[:, 1], normals[:, 2]
    las.write(str(path))
    return path


def _same_points(a, b, tol):
    """Each row of a is a row of b (and vice versa when the counts match)."""
    from scipy.spatial import cKDTree

    d, i = cKDTree(b).query(a)
    assert d.max() < tol
    return i


# --------------------------------------------------------------------------------------------
# LAS / LAZ


@pytest.mark.parametrize("suffix, point_format, version", [(".las", 2, "1.2"), (".laz", 3, "1.2"),
                                                           (".laz", 7, "1.4"), (".las", 8, "1.4")])
def test_las_and_laz_load_points_colour_and_intensity(tmp_path, ball, suffix, point_format, version):
    pts, nrm, col, lo, hi = ball
    intensity = (np.arange(len(pts)) * 37 % 65_000).astype(np.uint16)
    path = write_las(tmp_path / f"ball{suffix}", pts, col, intensity, point_format, version)
    if suffix == ".laz":
        assert laspy.open(str(path)).header.are_points_compressed
    scan = load_scan(path)
    assert len(scan) == len(pts) and scan.outliers == 0
    i = _same_points(scan.points, pts, 1e-4)
    np.testing.assert_array_equal(scan.colors, col[i])
    np.testing.assert_array_equal(scan.intensity, intensity[i].astype(np.float32))
    assert scan.normals_estimated
    assert np.mean(np.einsum("ij,ij->i", scan.normals, nrm[i]) > 0.9) > 0.98  # outward


def test_eight_bit_colour_in_sixteen_bit_fields_is_kept(tmp_path, ball):
    pts, _, col, _, _ = ball
    scan = load_scan(write_las(tmp_path / "eight.las", pts, col, eight_bit=True))
    np.testing.assert_array_equal(scan.colors, col[_same_points(scan.points, pts, 1e-4)])


def test_las_extra_bytes_normals_are_read(tmp_path, ball):
    pts, nrm, _, _, _ = ball
    scan = load_scan(write_las(tmp_path / "normals.laz", pts, normals=nrm, point_format=6, version="1.4"))
    assert not scan.normals_estimated
    np.testing.assert_allclose(scan.normals, nrm[_same_points(scan.points, pts, 1e-4)], atol=1e-6)


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_large_las_is_streamed_and_subsampled_like_everything_else(tmp_path, ball, suffix, monkeypatch):
    """Reading in chunks with the points chosen first keeps exactly the points that reading all and
    subsampling afterwards keeps (the one seeded rule)."""
    pts, _, col, _, _ = ball
    path = write_las(tmp_path / f"ball{suffix}", pts, col)
    everything = load_scan(path, outliers="off", max_points=10**7)
    monkeypatch.setattr(las_module, "CHUNK", 700)  # several chunks, boundaries inside the kept runs
    part = load_scan(path, outliers="off", max_points=1000, seed=5)
    assert len(part) == 1000
    keep = subsample_indices(len(pts), 1000, 5)
    np.testing.assert_array_equal(part.points, everything.points[keep])
    np.testing.assert_array_equal(part.colors, everything.colors[keep])
    assert any("3,000 points; using a random subset of 1,000" in n for n in part.notes)


def test_las_memory_follows_max_points_not_the_file(tmp_path, monkeypatch):
    n = 400_000
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(n, 3))
    pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) * 10 + OFFSET
    path = write_las(tmp_path / "big.las", pts, rng.integers(0, 256, (n, 3)), point_format=3)
    monkeypatch.setattr(las_module, "CHUNK", 50_000)

    def peak_reading(max_points):
        tracemalloc.start()
        try:
            raw = las_module.load_las(str(path), las_module.ReadOptions(max_points=max_points, seed=0))
            return raw, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    raw, peak = peak_reading(2000)
    assert len(raw.points) == 2000 and raw.total == n
    everything, peak_all = peak_reading(10**9)
    assert len(everything.points) == n and everything.total is None
    assert peak_all > n * (3 * 8 + 3 + 4)  # every point's xyz, colour and intensity
    assert peak < peak_all / 4, f"{peak / 2**20:.1f} MiB for 2,000 points, {peak_all / 2**20:.1f} MiB for all"


def _las_bytes(tmp_path, ball, suffix=".las"):
    pts, _, col, _, _ = ball
    return write_las(tmp_path / f"good{suffix}", pts, col, point_format=3 if suffix == ".las" else 3).read_bytes()


@pytest.mark.parametrize("case, message", [
    ("truncated_las", "LAS file is truncated: header declares 3,000 points, the file holds 1,4"),
    ("truncated_laz", "LAZ data cannot be read (truncated or corrupt)"),
    ("vlr_count", "variable-length records, more than fit"),
    ("bad_format", "point format 42 does not exist"),
    ("bad_version", "LAS version 3.1"),
    ("short_header", "LAS file is truncated: its header needs 227 bytes"),
    ("not_las", "not a LAS/LAZ file"),
    ("zero_scale", "scale factors"),
])
def test_broken_las_files_give_one_line_errors(tmp_path, ball, case, message):
    data = bytearray(_las_bytes(tmp_path, ball, ".laz" if case == "truncated_laz" else ".las"))
    if case in ("truncated_las", "truncated_laz"):
        data = data[: len(data) // 2]
    elif case == "vlr_count":
        struct.pack_into("<I", data, 100, 3_000_000_000)  # made laspy read 'VLRs' for minutes
    elif case == "bad_format":
        data[104] = 42
    elif case == "bad_version":
        data[24], data[25] = 3, 1
    elif case == "short_header":
        data = data[:100]
    elif case == "not_las":
        data[:4] = b"LASX"
    elif case == "zero_scale":
        struct.pack_into("<d", data, 131, 0.0)
    path = tmp_path / ("broken.laz" if case == "truncated_laz" else "broken.las")
    path.write_bytes(bytes(data))
    with pytest.raises(Siren3dError) as err:
        load_scan(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


@pytest.mark.parametrize("write_as, name_as, says", [
    ("las", ".ply", "is a LAS/LAZ file, but its name ends in '.ply'; rename it to '.las'"),
    ("e57", ".las", "is a E57 file, but its name ends in '.las'; rename it to '.e57'"),
    ("ply", ".e57", "is a PLY file, but its name ends in '.e57'; rename it to '.ply'"),
    ("ply", ".laz", "is a PLY file, but its name ends in '.laz'; rename it to '.ply'"),
])
def test_mislabelled_scanner_files_are_named_for_what_they_are(tmp_path, ball, write_as, name_as, says):
    pts, nrm, col, _, _ = ball
    src = tmp_path / f"src.{write_as}"
    if write_as == "las":
        write_las(src, pts, col)
    elif write_as == "e57":
        write_e57(src, [(pts, col, None, None)])
    else:
        save_points_ply(src, pts, nrm)
    path = tmp_path / f"scan{name_as}"
    path.write_bytes(src.read_bytes())
    with pytest.raises(Siren3dError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_scan(path)


# --------------------------------------------------------------------------------------------
# E57


def _quaternion_z(angle):
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def _rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def write_e57(path, scans):
    """scans: [(local points, colours or None, intensity or None, (angle about z, translation) or None)]."""
    with pye57.E57(str(path), mode="w") as f:
        for pts, col, inten, pose in scans:
            data = {"cartesianX": pts[:, 0], "cartesianY": pts[:, 1], "cartesianZ": pts[:, 2]}
            if col is not None:
                data.update(colorRed=col[:, 0], colorGreen=col[:, 1], colorBlue=col[:, 2])
            if inten is not None:
                data["intensity"] = inten
            kw = {} if pose is None else dict(rotation=_quaternion_z(pose[0]), translation=np.asarray(pose[1]))
            f.write_scan_raw(data, **kw)
    return path


def test_e57_scan_pose_colour_intensity_and_sensor(tmp_path, ball):
    pts, _, col, _, _ = ball
    angle, station = 0.6, OFFSET + [30.0, -5.0, 1.5]
    local = (pts - station) @ _rot_z(angle)  # what the scanner recorded in its own frame
    intensity = np.linspace(0.0, 1.0, len(pts))
    path = write_e57(tmp_path / "station.e57", [(local, col, intensity, (angle, station))])
    scan = load_scan(path)
    assert len(scan) == len(pts)
    i = _same_points(scan.points, pts, 1e-3)  # the file stores float32 coordinates
    np.testing.assert_array_equal(scan.colors, col[i])
    np.testing.assert_allclose(scan.intensity, intensity[i], atol=1e-6)
    np.testing.assert_allclose(scan.sensor, station)


def test_e57_pose_orients_a_single_view(tmp_path):
    sdf, eye = VIEWS["room"]
    pts, nrm = single_view(sdf, 6000, eye, seed=12, noise=1e-3)
    angle, station = -1.1, np.array([12.0, 4.0, 1.7])
    world = (pts - eye) * 10.0 + station  # a 16 m room; the scanner at `station`
    local = (world - station) @ _rot_z(angle)
    scan = load_scan(write_e57(tmp_path / "room.e57", [(local, None, None, (angle, station))]))
    np.testing.assert_allclose(scan.sensor, station)
    i = _same_points(scan.points, world, 1e-3)
    assert np.mean(np.einsum("ij,ij->i", scan.normals, nrm[i]) > 0) > 0.995


def test_e57_several_stations_give_per_point_sensors(tmp_path, ball):
    pts, _, col, _, _ = ball
    stations = [OFFSET + [30.0, 0.0, 0.0], OFFSET + [-30.0, 5.0, 2.0]]
    halves = [pts[: len(pts) // 2], pts[len(pts) // 2:]]
    path = write_e57(tmp_path / "two.e57", [(h - s, c, None, (0.0, s)) for h, s, c in
                                            zip(halves, stations, (col[: len(pts) // 2], col[len(pts) // 2:]))])
    scan = load_scan(path)
    assert scan.sensor.shape == (len(pts), 3)
    i = _same_points(scan.points, pts, 1e-3)
    np.testing.assert_allclose(scan.sensor, np.where((i < len(pts) // 2)[:, None], stations[0], stations[1]))
    np.testing.assert_array_equal(scan.colors, col[i])


def write_spherical_e57(path, rae, translation, invalid_every=10):
    """A scan stored as range / azimuth / elevation (as many terrestrial scanners export), written with
    libE57 directly (pye57's writer is cartesian only); every ``invalid_every``-th point flagged invalid."""
    imf = libe57.ImageFile(str(path), "w")
    imf.extensionsAdd("", libe57.E57_V1_0_URI)
    root = imf.root()
    root.set("formatName", libe57.StringNode(imf, "ASTM E57 3D Imaging Data File"))
    root.set("guid", libe57.StringNode(imf, "{%s}" % uuid.uuid4()))
    root.set("versionMajor", libe57.IntegerNode(imf, 1))
    root.set("versionMinor", libe57.IntegerNode(imf, 0))
    data3d = libe57.VectorNode(imf, True)
    root.set("data3D", data3d)
    scan = libe57.StructureNode(imf)
    scan.set("guid", libe57.StringNode(imf, "{%s}" % uuid.uuid4()))
    pose, rotation, shift = libe57.StructureNode(imf), libe57.StructureNode(imf), libe57.StructureNode(imf)
    for c, v in zip("wxyz", (1.0, 0.0, 0.0, 0.0)):
        rotation.set(c, libe57.FloatNode(imf, v))
    for c, v in zip("xyz", translation):
        shift.set(c, libe57.FloatNode(imf, float(v)))
    pose.set("rotation", rotation)
    pose.set("translation", shift)
    scan.set("pose", pose)
    names = ("sphericalRange", "sphericalAzimuth", "sphericalElevation")
    proto = libe57.StructureNode(imf)
    for name in names:
        proto.set(name, libe57.FloatNode(imf, 0.0, libe57.E57_DOUBLE))
    proto.set("sphericalInvalidState", libe57.IntegerNode(imf, 0, 0, 2))
    points = libe57.CompressedVectorNode(imf, proto, libe57.VectorNode(imf, True))
    scan.set("points", points)
    data3d.append(scan)
    n = len(rae)
    arrays = {name: np.ascontiguousarray(rae[:, i], dtype=np.float64) for i, name in enumerate(names)}
    arrays["sphericalInvalidState"] = np.zeros(n, dtype=np.int8)
    arrays["sphericalInvalidState"][::invalid_every] = 2
    buffers = libe57.VectorSourceDestBuffer()
    for name, a in arrays.items():
        buffers.append(libe57.SourceDestBuffer(imf, name, a, n, True, True))
    writer = points.writer(buffers)
    writer.write(n)
    writer.close()
    imf.close()
    return path


def test_spherical_e57_with_invalid_points(tmp_path, ball, monkeypatch):
    pts, _, _, _, _ = ball
    station = OFFSET + [0.0, 0.0, 25.0]
    d = pts - station
    r = np.linalg.norm(d, axis=1)
    rae = np.stack([r, np.arctan2(d[:, 1], d[:, 0]), np.arcsin(d[:, 2] / r)], axis=1)
    path = write_spherical_e57(tmp_path / "spherical.e57", rae, station)
    monkeypatch.setattr(e57_module, "CHUNK", 256)
    scan = load_scan(path, outliers="off")
    valid = np.arange(len(pts)) % 10 != 0
    assert len(scan) == valid.sum()
    _same_points(scan.points, pts[valid], 1e-6)
    np.testing.assert_allclose(scan.sensor, station)
    assert any(f"skipped {len(pts) - valid.sum():,} points the scanner flagged invalid" in n for n in scan.notes)


def test_large_e57_is_streamed_and_subsampled_like_everything_else(tmp_path, ball, monkeypatch):
    pts, _, col, _, _ = ball
    path = write_e57(tmp_path / "two.e57", [(pts[:1700], col[:1700], None, None), (pts[1700:], col[1700:], None, None)])
    everything = load_scan(path, outliers="off")
    monkeypatch.setattr(e57_module, "CHUNK", 300)
    part = load_scan(path, outliers="off", max_points=900, seed=2)
    keep = subsample_indices(len(pts), 900, 2)
    np.testing.assert_array_equal(part.points, everything.points[keep])
    np.testing.assert_array_equal(part.colors, everything.colors[keep])


@pytest.mark.parametrize("case, message", [
    ("truncated", "cannot read as E57 (truncated or corrupt)"),
    ("garbage", "cannot read as E57 (truncated or corrupt)"),
    ("no_scans", "E57 file holds no point scans"),
])
def test_broken_e57_files_give_one_line_errors(tmp_path, ball, case, message):
    pts, _, col, _, _ = ball
    path = tmp_path / "broken.e57"
    if case == "no_scans":
        with pye57.E57(str(path), mode="w"):
            pass
    else:
        good = write_e57(tmp_path / "good.e57", [(pts, col, None, None)]).read_bytes()
        data = good[: len(good) // 2] if case == "truncated" else good[:48] + bytes(range(256)) * 40
        path.write_bytes(data)
    with pytest.raises(Siren3dError) as err:
        load_scan(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_fit_on_a_laz_with_strays_records_them_and_outliers_off_keeps_them(tmp_path, ball):
    """The command line end to end: the warning line, fit.json's note and point count, --outliers off."""
    import json

    from click.testing import CliRunner

    from siren3d.cli import main

    pts, _, col, _, _ = ball
    rng = np.random.default_rng(3)
    lo, hi = pts.min(0), pts.max(0)
    strays = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), size=(90, 3))
    # clearly off the surface: more than 6 point spacings (0.65 m) from the 10 m sphere
    strays = strays[np.abs(np.linalg.norm(strays - (lo + hi) / 2, axis=1) - 10.0) > 4.0]
    path = write_las(tmp_path / "scan.laz", np.vstack([pts, strays]),
                     np.vstack([col, np.zeros((len(strays), 3), np.uint8)]))
    tiny = ["--steps", "2", "--batch", "256", "--width", "16", "--hidden-layers", "1", "--device", "cpu", "-q"]
    runner = CliRunner()
    r = runner.invoke(main, ["fit", str(path), "--out", str(tmp_path / "run"), *tiny])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "run" / "fit.json").read_text())["input"]
    line = f"dropped {len(strays):,} stray points of {len(pts) + len(strays):,}"
    assert f"warning: {path}: {line}" in r.output
    assert info["points"] == len(pts) and any(line in n for n in info["notes"])

    r = runner.invoke(main, ["fit", str(path), "--out", str(tmp_path / "all"), "--outliers", "off", *tiny])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "all" / "fit.json").read_text())["input"]["points"] == len(pts) + len(strays)
