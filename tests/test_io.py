"""Every loader format round-trips from files written here; cleaning and normal estimation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import trimesh

from siren3d.errors import Siren3dError
from siren3d.io import load_scan, save_points_ply

from conftest import write_ply_ascii


def _write_pcd(path, pts, nrm, binary):
    fields = "x y z normal_x normal_y normal_z"
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE 4 4 4 4 4 4\nTYPE F F F F F F\n"
            f"COUNT 1 1 1 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\n")
    data = np.hstack([pts, nrm]).astype("<f4")
    if binary:
        path.write_bytes((head + "DATA binary\n").encode() + data.tobytes())
    else:
        path.write_text(head + "DATA ascii\n" + "\n".join(" ".join(f"{v:.9g}" for v in r) for r in data) + "\n")


def _write_text(path, text):
    path.write_text(text)
    return path


WRITERS = {
    "ply_binary": lambda p, x, n: save_points_ply(p.with_suffix(".ply"), x, n) or p.with_suffix(".ply"),
    "ply_ascii": lambda p, x, n: write_ply_ascii(p.with_suffix(".ply"), x, n),
    "xyzn": lambda p, x, n: np.savetxt(p.with_suffix(".xyzn"), np.hstack([x, n])) or p.with_suffix(".xyzn"),
    "xyz_siren_layout": lambda p, x, n: np.savetxt(p.with_suffix(".xyz"), np.hstack([x, n]), fmt="%.8f")
    or p.with_suffix(".xyz"),
    "pts_with_count": lambda p, x, n: _write_text(
        p.with_suffix(".pts"), f"{len(x)}\n" + "\n".join(" ".join(f"{v:.9g}" for v in r) for r in np.hstack([x, n]))),
    "csv_txt": lambda p, x, n: np.savetxt(p.with_suffix(".txt"), np.hstack([x, n]), delimiter=",")
    or p.with_suffix(".txt"),
    "pcd_ascii": lambda p, x, n: _write_pcd(p.with_suffix(".pcd"), x, n, False) or p.with_suffix(".pcd"),
    "pcd_binary": lambda p, x, n: _write_pcd(p.with_suffix(".pcd"), x, n, True) or p.with_suffix(".pcd"),
    "npy": lambda p, x, n: np.save(p.with_suffix(".npy"), np.hstack([x, n])) or p.with_suffix(".npy"),
    "npz": lambda p, x, n: np.savez(p.with_suffix(".npz"), points=x, normals=n) or p.with_suffix(".npz"),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_point_formats_round_trip(tmp_path, sphere_points, fmt):
    pts, nrm = sphere_points
    pts = pts * 3.0 + 10.0
    path = WRITERS[fmt](tmp_path / "scan", pts, nrm)
    scan = load_scan(path)
    assert len(scan) == len(pts)
    assert not scan.normals_estimated
    np.testing.assert_allclose(scan.points, pts, atol=1e-5 * 13)
    np.testing.assert_allclose(scan.normals, nrm, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(scan.normals, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("suffix", [".obj", ".off", ".stl", ".ply"])
def test_mesh_formats_sample_the_surface(tmp_path, suffix):
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=2.0)
    mesh.apply_translation([5.0, 0.0, -1.0])
    path = tmp_path / f"ball{suffix}"
    if suffix == ".ply":
        write_ply_ascii(path, mesh.vertices, faces=mesh.faces)
    else:
        mesh.export(path)
    scan = load_scan(path, mesh_samples=5000)
    assert scan.from_mesh and len(scan) == 5000
    r = np.linalg.norm(scan.points - [5.0, 0.0, -1.0], axis=1)
    assert np.all(np.abs(r - 2.0) < 0.02)  # on the faceted sphere
    radial = (scan.points - [5.0, 0.0, -1.0]) / r[:, None]
    assert np.einsum("ij,ij->i", radial, scan.normals).min() > 0.95  # face normals, outward


def test_binary_ply_with_triangle_faces_and_quads(tmp_path):
    # A unit cube as 6 quads, binary big-endian: exercises the list parser and fan triangulation.
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float)
    quads = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [2, 3, 7, 6], [1, 2, 6, 5], [0, 4, 7, 3]]
    head = ("ply\nformat binary_big_endian 1.0\nelement vertex 8\nproperty double x\nproperty double y\n"
            "property double z\nelement face 6\nproperty list uchar int vertex_indices\nend_header\n")
    body = v.astype(">f8").tobytes() + b"".join(
        np.array([4], ">u1").tobytes() + np.array(q, ">i4").tobytes() for q in quads)
    path = tmp_path / "cube.ply"
    path.write_bytes(head.encode() + body)
    scan = load_scan(path, mesh_samples=6000)
    assert scan.points.min() >= -1e-9 and scan.points.max() <= 1 + 1e-9
    # every sample lies on a face of the cube, with that face's outward axis normal
    on_face = np.isclose(scan.points, 0, atol=1e-9) | np.isclose(scan.points, 1, atol=1e-9)
    assert on_face.any(axis=1).all()
    assert np.allclose(np.abs(scan.normals).max(axis=1), 1.0, atol=1e-6)
    outward = np.where(scan.points > 0.5, 1.0, -1.0)
    axis = np.abs(scan.normals).argmax(1)
    assert np.all(np.sign(scan.normals[np.arange(len(axis)), axis]) == outward[np.arange(len(axis)), axis])


def test_missing_normals_are_estimated_outward_with_a_warning(tmp_path, sphere_points, caplog):
    pts, nrm = sphere_points
    path = tmp_path / "nonormals.xyz"
    np.savetxt(path, pts)
    with caplog.at_level(logging.WARNING, logger="siren3d"):
        scan = load_scan(path)
    assert scan.normals_estimated
    assert any("estimating" in r.message for r in caplog.records)
    cos = np.einsum("ij,ij->i", scan.normals, nrm)
    assert np.mean(cos > 0.9) > 0.98  # consistent and outward


def test_bad_rows_are_dropped_with_counts(tmp_path, sphere_points, caplog):
    pts, nrm = (a.copy() for a in sphere_points)
    pts[:5] = np.nan
    nrm[10:13] = 0.0
    nrm[20:30] *= 3.0  # not unit: normalized, kept
    path = tmp_path / "dirty.npy"
    np.save(path, np.hstack([pts, nrm]))
    with caplog.at_level(logging.WARNING, logger="siren3d"):
        scan = load_scan(path)
    assert len(scan) == len(pts) - 8
    msgs = " ".join(r.message for r in caplog.records)
    assert "dropped 5 of" in msgs and "dropped 3 points" in msgs and "normalized" in msgs
    np.testing.assert_allclose(np.linalg.norm(scan.normals, axis=1), 1.0, atol=1e-6)


def test_large_scans_are_subsampled(tmp_path, sphere_points, caplog):
    pts, nrm = sphere_points
    path = tmp_path / "big.ply"
    save_points_ply(path, pts, nrm)
    with caplog.at_level(logging.WARNING, logger="siren3d"):
        scan = load_scan(path, max_points=1000)
    assert len(scan) == 1000
    assert any("random subset" in r.message for r in caplog.records)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"ply\nformat ascii 1.0\nelement vertex 10\nproperty float x\nproperty float y\nproperty float z\n"
     b"end_header\n1 2 3\n", "truncated"),
    (b"1 2 3\n4 5\n", "unequal width"),
    (b"1 2 3\n4 five 6\n", "non-numeric"),
])
def test_bad_files_raise_one_clear_error(tmp_path, content, message):
    suffix = ".ply" if content.startswith(b"ply") else ".xyz"
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(Siren3dError) as err:
        load_scan(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# The format table


#: The first bytes of a file of each format that has a signature (a new one must be added here).
SIGNATURES = {"PLY": b"ply\nformat ascii 1.0\n", "NumPy .npy": b"\x93NUMPY\x01\x00", "NumPy .npz (zip)": b"PK\x03\x04",
              "PCD": b"# .PCD v0.7\nVERSION 0.7\n", "LAS/LAZ": b"LASF\x00\x00", "E57": b"ASTM-E57\x00\x00"}


def test_every_format_is_in_the_table_once():
    from siren3d.io import FORMATS, MESH_SUFFIXES, SUPPORTED

    assert len(SUPPORTED) == len(set(SUPPORTED))
    for suffix in (".ply", ".xyz", ".xyzn", ".xyzrgb", ".pts", ".txt", ".pcd", ".npy", ".npz", ".las", ".laz", ".e57",
                   ".obj", ".off", ".stl"):
        assert suffix in SUPPORTED
    assert set(MESH_SUFFIXES) == {".obj", ".off", ".stl"}
    assert {f.name for f in FORMATS if f.magic is not None} == set(SIGNATURES)
    for f in FORMATS:
        assert all(s.startswith(".") and s == s.lower() for s in f.suffixes)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_a_file_is_refused_when_its_signature_names_another_format(tmp_path, name):
    from siren3d.io import FORMATS

    fmt = next(f for f in FORMATS if f.name == name)
    assert fmt.magic.match(SIGNATURES[name])
    other = ".xyz" if fmt.suffixes[0] != ".xyz" else ".ply"
    path = tmp_path / f"scan{other}"
    path.write_bytes(SIGNATURES[name] + b"\x00" * 64)
    with pytest.raises(Siren3dError) as err:
        load_scan(path)
    assert f"is a {name} file, but its name ends in '{other}'; rename it to '{fmt.suffixes[0]}'" in str(err.value)


def test_unknown_suffix_lists_what_is_supported(tmp_path):
    path = tmp_path / "scan.xyzw"
    path.write_text("1 2 3\n")
    with pytest.raises(Siren3dError, match=r"unknown scan format '\.xyzw'; supported: ") as err:
        load_scan(path)
    assert all(f" {s}" in str(err.value) for s in (".e57", ".las", ".laz", ".ply", ".stl"))
