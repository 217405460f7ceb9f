"""siren3d batch: many scans on real Ray (a local instance, and a cluster the test starts), with a
broken scan among them, an interruption and the rerun that continues it."""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from siren3d.batch import COLUMNS, ScanJob, collect_inputs, plan, process_scan
from siren3d.checkpoint import load_checkpoint
from siren3d.errors import Siren3dError
from siren3d.io import save_points_ply
from siren3d.synthetic import sample_surface, sphere, torus

# 60 steps leave the surface a little off the points in places: trimming, which such a rough fit
# would set off, is not what these tests are about (tests/test_trim.py is)
TINY = ["--steps", "60", "--batch", "512", "--width", "32", "--hidden-layers", "1", "--init", "sphere",
        "--res", "32", "--trim", "off"]
VENV_BIN = Path(sys.executable).parent


def batch_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "siren3d.cli", "batch", *args]


def write_scans(folder: Path, names=("ball", "ring", "egg"), count: int = 2000) -> list[Path]:
    """Small real scans (unit normals, scan units away from the origin), one shape each."""
    shapes = {"ball": sphere(0.5), "ring": torus(0.5, 0.18), "egg": sphere(0.4, (0.1, 0.0, 0.0))}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        pts, nrm = sample_surface(shapes[name], count, res=48, seed=i)
        paths.append(folder / f"{name}.ply")
        save_points_ply(paths[-1], pts * 25.0 + np.array([10.0, -4.0, 30.0]), nrm)
    return paths


def read_summary(out: Path) -> tuple[dict, dict]:
    """(rows of summary.csv by name, summary.json)."""
    with open(out / "summary.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = {r["name"]: r for r in reader}
    return rows, json.loads((out / "summary.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Without Ray


def test_inputs_are_files_folders_and_globs_and_repeated_stems_get_their_own_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b, a / "deeper"):
        d.mkdir()
    for p in (a / "scan.ply", a / "other.XYZ", b / "scan.ply", b / "scan.obj", a / "deeper" / "low.pts"):
        p.write_text("0 0 0\n")
    (a / "notes.md").write_text("not a scan")
    (a / ".scan.abc123.tmp.ply").write_text("a writer's temporary file")

    files = collect_inputs([a, str(b / "*.ply"), str(tmp_path / "**" / "*.pts"), a / "scan.ply", "missing.ply"])
    assert [p.relative_to(tmp_path).as_posix() if p.is_absolute() else str(p) for p in files] == [
        "a/other.XYZ", "a/scan.ply", "b/scan.ply", "a/deeper/low.pts", "missing.ply"]

    jobs = plan([a, b], tmp_path / "out")
    assert [(j.name, Path(j.input).relative_to(tmp_path).as_posix()) for j in jobs] == [
        ("other", "a/other.XYZ"), ("scan", "a/scan.ply"), ("scan-2", "b/scan.obj"), ("scan-3", "b/scan.ply")]
    assert {Path(j.run_dir) for j in jobs} == {tmp_path / "out" / n for n in ("other", "scan", "scan-2", "scan-3")}

    (tmp_path / "empty").mkdir()
    with pytest.raises(Siren3dError, match="no scan files in this folder"):
        collect_inputs([tmp_path / "empty"])
    with pytest.raises(Siren3dError, match="no scan files match"):
        collect_inputs([str(tmp_path / "*.stl")])


def test_a_broken_scan_is_a_failed_row_and_leaves_no_run_folder(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("nan nan nan\n" * 50)
    job = ScanJob(name="bad", input=str(bad), run_dir=str(tmp_path / "out" / "bad"))
    from siren3d.config import FitConfig, MeshConfig

    row = process_scan(job, FitConfig(steps=5), MeshConfig(res=16))
    assert row["status"] == "failed" and row["name"] == "bad"
    assert row["error"] == f"{bad}: all 50 points have NaN/Inf coordinates"
    assert not (tmp_path / "out" / "bad").exists()


def test_batch_help_does_not_import_ray():
    code = ("import sys; from click.testing import CliRunner; from siren3d.cli import main; "
            "r = CliRunner().invoke(main, ['batch', '--help']); "
            "print(r.exit_code, '--address' in r.output, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["0", "True", "False"], out.stderr


def test_an_address_where_no_cluster_answers_is_one_line_and_exit_2_without_output(tmp_path):
    write_scans(tmp_path / "scans", names=("ball",), count=200)
    port = free_port()  # closed again: nothing listens there
    t0 = time.monotonic()
    r = subprocess.run(batch_cmd(str(tmp_path / "scans"), "--out", str(tmp_path / "results"), "--address",
                                 f"127.0.0.1:{port}"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: cannot start or reach the Ray cluster at 127.0.0.1:{port}: ")
    assert "nothing answers" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 60  # not Ray's minutes of retries
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------
# Real Ray


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_local_batch_with_a_broken_scan_then_a_rerun_that_only_redoes_what_is_missing(tmp_path):
    scans = tmp_path / "scans"
    write_scans(scans, names=("ball", "ring"))
    (scans / "truncated.ply").write_text("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\n"
                                         "property float y\nproperty float z\nend_header\n1 2 3\n")
    out = tmp_path / "results"

    r = subprocess.run(batch_cmd(str(scans), "--out", str(out), "--workers", "2", *TINY), capture_output=True,
                       text=True, timeout=200)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    rows, doc = read_summary(out)
    assert list(rows) == ["ball", "ring", "truncated"]
    for name in ("ball", "ring"):
        row = rows[name]
        assert row["status"] == "done" and row["error"] == "", row
        assert row["points"] == "2000" and row["steps"] == "60" and row["watertight"] == "True"
        assert 0 < float(row["noise_ratio"]) < 0.5 and float(row["fit_seconds"]) > 0
        mesh = trimesh.load(out / name / "mesh-32.ply")
        assert len(mesh.faces) == int(row["faces"]) > 500 and row["pieces"] == "1"
        assert mesh.is_watertight
        lo, hi = mesh.bounds  # scan coordinates: the shapes were scaled by 25 and moved
        assert np.all(lo > np.array([10.0, -4.0, 30.0]) - 20) and np.all(hi < np.array([10.0, -4.0, 30.0]) + 20)
    assert rows["truncated"]["status"] == "failed"
    assert rows["truncated"]["error"] == (f"{scans / 'truncated.ply'}: PLY file is truncated: header declares 5 "
                                          f"'vertex' elements, the file holds only 1")
    assert not (out / "truncated").exists()
    assert f"failed: truncated: {scans / 'truncated.ply'}: PLY file is truncated" in r.stderr
    assert doc["counts"] == {"done": 2, "skipped": 0, "failed": 1, "interrupted": 0, "pending": 0}
    assert doc["workers"] == 2 and doc["ray_start_seconds"] > 0

    # The ring's mesh is lost: the rerun meshes it again from the model it has, skips the others.
    (out / "ring" / "mesh-32.ply").unlink()
    fit_json = {n: (out / n / "fit.json").read_bytes() for n in ("ball", "ring")}
    ball_mesh_mtime = (out / "ball" / "mesh-32.ply").stat().st_mtime_ns
    code = ("import json, sys; from siren3d.batch import run; from siren3d.config import fit_config, MeshConfig; "
            "c = fit_config(steps=60, batch=512, width=32, hidden_layers=1, init='sphere'); "
            f"rows = run([{str(scans)!r}], {str(out)!r}, c, MeshConfig(res=32, trim='off'), workers=2, progress=False); "
            "print(json.dumps(rows))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr
    returned = {row["name"]: row for row in json.loads(r.stdout)}
    assert {n: row["status"] for n, row in returned.items()} == {
        "ball": "skipped", "ring": "done", "truncated": "failed"}
    assert returned["ring"]["resumed_from"] is None and returned["ring"]["steps"] == 60
    assert (out / "ring" / "mesh-32.ply").is_file()
    assert {n: (out / n / "fit.json").read_bytes() for n in ("ball", "ring")} == fit_json  # nothing refitted
    assert (out / "ball" / "mesh-32.ply").stat().st_mtime_ns == ball_mesh_mtime
    rows, _ = read_summary(out)
    assert {n: r["status"] for n, r in rows.items()} == {n: r["status"] for n, r in returned.items()}
    assert rows["ball"]["faces"] == str(returned["ball"]["faces"]) != ""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ctrl_c_stops_the_batch_with_checkpoints_and_the_same_command_continues_it(tmp_path):
    scans = tmp_path / "scans"
    write_scans(scans)
    out = tmp_path / "results"
    steps = 1500  # a checkpoint every 100 steps: the first one says a fit is under way, long before its end
    cmd = batch_cmd(str(scans), "--out", str(out), "--workers", "2", *TINY, "--steps", str(steps),
                    "--checkpoint-every", "100", "-q")

    # SIGINT as a terminal's Ctrl-C delivers it, even when this test runs where SIGINT is ignored
    # (a shell's background job): an ignored signal would be inherited by the command.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and not all(
                (out / n / "model.pt").is_file() for n in ("ball", "egg")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "the same command continues the batch" in err and "Traceback" not in err
    rows, doc = read_summary(out)
    assert doc.get("interrupted") is True
    assert rows["ring"]["status"] == "pending" and not (out / "ring").exists()
    at = {}
    for name in ("ball", "egg"):
        assert rows[name]["status"] == "interrupted", rows[name]
        ckpt = load_checkpoint(out / name / "model.pt")
        at[name] = ckpt.step
        assert 100 <= ckpt.step < steps and ckpt.train is not None
        assert rows[name]["error"] == f"interrupted at step {ckpt.step}/{steps}; the checkpoint resumes it"
        assert not (out / name / "fit.json").exists() and not (out / name / "mesh-32.ply").exists()

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr
    rows, doc = read_summary(out)
    assert doc["counts"]["done"] == 3
    for name in ("ball", "egg"):
        assert rows[name]["status"] == "done" and rows[name]["resumed_from"] == str(at[name])
        fit = json.loads((out / name / "fit.json").read_text())
        assert fit["step"] == steps and len(fit["history"]["rows"]) == steps
    assert rows["ring"]["status"] == "done" and rows["ring"]["resumed_from"] == ""
    assert all((out / n / "mesh-32.ply").is_file() for n in ("ball", "egg", "ring"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_batch_joins_a_ray_cluster_started_with_ray_start(tmp_path):
    scans = tmp_path / "scans"
    write_scans(scans, names=("ball", "ring"))
    out = tmp_path / "results"
    port = free_port()
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    # Token authentication, with this test's own token (not ~/.ray/auth_token).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"siren3d-test-ray-{secrets.token_hex(4)}"  # short: Ray's socket paths
    # --block keeps 'ray start' in the foreground and stops its cluster when it is terminated:
    # unlike 'ray stop', which stops every Ray process on the machine, other tests' included.
    head = subprocess.Popen([str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                             f"--temp-dir={temp}", "--num-cpus=3", "--include-dashboard=false",
                             "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        assert head.poll() is None, head.stderr.read()

        r = subprocess.run(batch_cmd(str(scans), "--out", str(out), "--address", f"127.0.0.1:{port}", *TINY, "-q"),
                           capture_output=True, text=True, timeout=200, env=env)
        assert r.returncode == 0, r.stderr
        rows, doc = read_summary(out)
        assert {n: r["status"] for n, r in rows.items()} == {"ball": "done", "ring": "done"}
        assert doc["address"] == f"127.0.0.1:{port}"
        assert doc["workers"] == 3  # the cluster's 3 CPUs / 1 thread: not this 2-core machine's own count
        assert all(trimesh.load(out / n / "mesh-32.ply").is_watertight for n in rows)
        assert head.poll() is None  # a cluster that batch joined is left running
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
