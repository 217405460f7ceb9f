"""Fuzzing load_scan: random bytes and mutated valid files in every text and binary format.

The only allowed outcomes are a usable scan (at least one point, finite coordinates, unit
normals) or a one-line Siren3dError. Anything else (IndexError, a numpy error, a hang) is a bug.

Examples are derandomized so CI is reproducible; FUZZ_EXAMPLES=2000 FUZZ_RANDOM=1 runs a longer,
fresh search locally.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from siren3d.errors import Siren3dError
from siren3d.io import MIN_POINTS, load_scan, save_points_ply

from conftest import write_ply_ascii

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _points(n=40, seed=0):
    rng = np.random.default_rng(seed)
    nrm = rng.normal(size=(n, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return nrm * 2.0 + 1.0, nrm


def _pcd(pts, nrm, binary):
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z normal_x normal_y normal_z\nSIZE 4 4 4 4 4 4\n"
            f"TYPE F F F F F F\nCOUNT 1 1 1 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
            f"POINTS {len(pts)}\n")
    data = np.hstack([pts, nrm]).astype("<f4")
    if binary:
        return (head + "DATA binary\n").encode() + data.tobytes()
    return (head + "DATA ascii\n" + "\n".join(" ".join(f"{v:.6g}" for v in r) for r in data) + "\n").encode()


def _seed_files(tmp):
    """One small valid file per format: {name: (suffix, bytes)}."""
    pts, nrm = _points()
    out = {}
    save_points_ply(tmp / "b.ply", pts, nrm)
    out["ply_binary"] = (".ply", (tmp / "b.ply").read_bytes())
    write_ply_ascii(tmp / "a.ply", pts, nrm)
    out["ply_ascii"] = (".ply", (tmp / "a.ply").read_bytes())
    out["xyz"] = (".xyz", "\n".join(" ".join(f"{v:.6g}" for v in r) for r in np.hstack([pts, nrm])).encode())
    out["pcd_ascii"] = (".pcd", _pcd(pts, nrm, False))
    out["pcd_binary"] = (".pcd", _pcd(pts, nrm, True))
    m = trimesh.creation.icosphere(subdivisions=1)
    out["off"] = (".off", trimesh.exchange.off.export_off(m).encode())
    out["obj"] = (".obj", trimesh.exchange.obj.export_obj(m).encode())
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(m.vertices)}\nproperty float x\n"
            f"property float y\nproperty float z\nelement face {len(m.faces)}\n"
            "property list uchar int vertex_indices\nend_header\n")
    faces = b"".join(np.array([3], "<u1").tobytes() + f.astype("<i4").tobytes() for f in m.faces)
    out["ply_mesh_binary"] = (".ply", head.encode() + m.vertices.astype("<f4").tobytes() + faces)
    return out


FORMATS = ["ply_binary", "ply_ascii", "xyz", "pcd_ascii", "pcd_binary", "off", "obj", "ply_mesh_binary"]

TOKENS = [b"nan", b"inf", b"-inf", b"1e999", b"-1e-400", b"0x1F", b"", b"abc", b"1_0", b"\xd9\xa1", b"-",
          b"1e308", b"3.4e38", b"99999999999999999999", b"-1", b"0", b"4294967295", b"\x00", b"\n", b" ",
          b"ply", b"end_header", b"element vertex 5", b"property list float int x", b"DATA binary",
          b"3 0 1 99", b"\xff\xfe", b"1,2,3", b"f 1 2", b"v 1 2"]


@st.composite
def mutations(draw, data: bytes):
    """A valid file with a few random edits: byte flips, token splices, cuts and duplications."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "token", "cut", "truncate", "dup", "insert"]))
        i = draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "token":
            j = min(len(b), i + draw(st.integers(0, 12)))
            b[i:j] = draw(st.sampled_from(TOKENS))
        elif op == "cut":
            del b[i:i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del b[i:]
        elif op == "dup":
            b[i:i] = b[i:i + draw(st.integers(1, 200))]
        else:
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
    return bytes(b)


def _check(path, data: bytes):
    path.write_bytes(data)
    try:
        scan = load_scan(path, mesh_samples=300)
    except Siren3dError as e:
        assert str(path) in str(e)
        return None
    assert len(scan) >= MIN_POINTS  # fewer is refused: a fit needs a neighbourhood
    assert scan.points.shape == (len(scan), 3) and scan.normals.shape == (len(scan), 3)
    assert np.isfinite(scan.points).all() and np.isfinite(scan.normals).all()
    np.testing.assert_allclose(np.linalg.norm(scan.normals, axis=1), 1.0, atol=1e-4)
    return scan


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return _seed_files(tmp_path_factory.mktemp("seeds"))


def test_seed_files_are_valid(tmp_path, seeds):
    """The unmutated files load: the mutations start from real, valid input."""
    for name in FORMATS:
        suffix, data = seeds[name]
        assert _check(tmp_path / f"{name}{suffix}", data) is not None, name


@pytest.mark.parametrize("name", FORMATS)
def test_mutated_files(tmp_path, seeds, name):
    suffix, data = seeds[name]

    @FUZZ
    @given(mutations(data))
    def run(blob):
        _check(tmp_path / f"fuzz{suffix}", blob)

    run()


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".pcd", ".off", ".obj", ".stl", ".npy", ".npz"])
def test_random_bytes(tmp_path, suffix):
    @FUZZ
    @given(st.binary(min_size=1, max_size=3000))
    @example(b",")  # found by this test: a text row of separators only
    def run(blob):
        _check(tmp_path / f"junk{suffix}", blob)

    run()


HEADERS = {
    ".ply": b"ply\nformat binary_little_endian 1.0\nelement vertex 30\nproperty float x\nproperty float y\n"
            b"property float z\nproperty float nx\nproperty float ny\nproperty float nz\nend_header\n",
    ".pcd": b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 30\nHEIGHT 1\n"
            b"POINTS 30\nDATA binary\n",
}


@pytest.mark.parametrize("suffix", sorted(HEADERS))
def test_valid_header_random_body(tmp_path, suffix):
    """Past the header check, the body parser sees arbitrary bytes (NaNs, huge floats, garbage)."""
    @FUZZ
    @given(st.binary(min_size=0, max_size=30 * 24 + 40))
    def run(body):
        _check(tmp_path / f"body{suffix}", HEADERS[suffix] + body)

    run()


_XYZ20 = b"\n".join(b"%r %r %r" % tuple(r) for r in np.random.default_rng(0).random((20, 3)).tolist())
_TRI = (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        b"property float z\nelement face 1\n")


@pytest.mark.parametrize("name, data, outcome", [
    # each of these crashed load_scan (ValueError, IndexError, OverflowError) before being fixed
    ("list-count-float.ply", _TRI + b"property list float int vertex_indices\nend_header\n"
     + np.zeros(9, "<f4").tobytes() + np.array([np.nan], "<f4").tobytes(), "list counts and indices must be integers"),
    ("face-index-inf.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
     b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
     b"0 0 0\n1 0 0\n0 1 0\n3 0 1 inf\n", "non-numeric value in 'face' row 1"),
    ("count-zero.pcd", b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 0 1 1\nWIDTH 3\nHEIGHT 1\n"
     b"POINTS 3\nDATA binary\n" + np.zeros(9, "<f4").tobytes(), "SIZE or COUNT below 1"),
    ("separators-only.xyz", b",", "holds no points"),
    # and these were refused although they are fine
    ("empty-element.ply", b"ply\nformat ascii 1.0\nelement material 0\nproperty float r\nelement vertex 20\n"
     b"property float x\nproperty float y\nproperty float z\nend_header\n" + _XYZ20 + b"\n", None),
    ("byte-order-mark.xyz", "\ufeff".encode() + _XYZ20, None),
])
def test_inputs_that_used_to_crash(tmp_path, name, data, outcome):
    path = tmp_path / name
    if outcome is None:
        assert len(_check(path, data)) == 20
    else:
        path.write_bytes(data)
        with pytest.raises(Siren3dError, match=outcome):
            load_scan(path)
