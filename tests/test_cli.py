"""The command line as a user runs it: fit, then mesh, on a real file, in a fresh folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from siren3d.cli import main
from siren3d.io import load_scan

SMALL = ["--steps", "300", "--batch", "1024", "--width", "64", "--hidden-layers", "2", "--lr", "5e-4", "--lr-sparse", "5e-4",
         "--init", "sphere", "-q"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_help_lists_the_commands():
    runner = CliRunner()
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0 and "fit" in out.output and "mesh" in out.output
    for cmd in ("fit", "mesh"):
        sub = runner.invoke(main, [cmd, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output


def test_fit_then_mesh_writes_the_run_folder_and_a_mesh_in_scan_coordinates(in_tmp, sphere_scan_file):
    runner = CliRunner()
    r = runner.invoke(main, ["fit", str(sphere_scan_file), *SMALL])
    assert r.exit_code == 0, r.output
    run = in_tmp / "runs" / "ball"
    assert {"model.pt", "fit.json", "loss.png"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "fit.json").read_text())["step"] == 300

    r = runner.invoke(main, ["mesh", "--res", "64"])  # the most recent run, default output name
    assert r.exit_code == 0, r.output
    mesh = trimesh.load(run / "mesh-64.ply")
    scan = load_scan(sphere_scan_file)
    lo, hi = scan.points.min(0), scan.points.max(0)
    extent = (hi - lo).max()
    np.testing.assert_allclose(mesh.bounds[0], lo, atol=0.03 * extent)
    np.testing.assert_allclose(mesh.bounds[1], hi, atol=0.03 * extent)

    r = runner.invoke(main, ["mesh", "--run", str(run), "--res", "48", "-o", str(in_tmp / "out.obj")])
    assert r.exit_code == 0, r.output
    assert len(trimesh.load(in_tmp / "out.obj").faces) > 100


def test_errors_are_one_line_with_exit_status_2(in_tmp):
    runner = CliRunner()
    r = runner.invoke(main, ["fit", "nope.ply"])
    assert r.exit_code == 2 and r.output.strip() == "error: nope.ply: no such file"
    r = runner.invoke(main, ["mesh"])
    assert r.exit_code == 2 and "no fitted model found" in r.output and "Traceback" not in r.output


def test_console_script_runs_as_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "siren3d.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "siren3d" in out.stdout


def test_quality_levels_and_the_paper_preset_choose_their_settings():
    from siren3d.config import PRESETS, FitConfig, fit_config

    base = FitConfig()
    fast, high = fit_config("fast"), fit_config("high")
    assert fast.steps * fast.batch < base.steps * base.batch < high.steps * high.batch  # points seen
    assert fast.loss.normal < base.loss.normal  # fewer points per step: a lighter normal term (see PRESETS)
    paper = fit_config("paper", steps=7)
    assert paper.steps == 7 and paper.loss.sign == 0 and paper.near_ratio == 0 and paper.model.width == 256
    assert set(PRESETS) >= {"fast", "high", "paper"}
    r = CliRunner().invoke(main, ["fit", "x.ply", "--quality", "best"])
    assert r.exit_code == 2 and "'best' is not one of" in r.output


@pytest.mark.parametrize("noise_option, noisy_expected", [([], True), (["--noise", "low"], False)])
def test_a_noisy_scan_is_measured_and_trusts_its_normals_more(in_tmp, torus_points, noise_option, noisy_expected):
    """The noise of the scan is measured before training, reported on stderr and in fit.json, and
    a noisy scan trains with the noisy-scan normal and surface weights (unless --noise low); the
    model's saved config holds the weights that were used."""
    from siren3d.io import save_points_ply
    from siren3d.sampling import local_spacing
    from siren3d.config import FitConfig
    from siren3d.training import NOISY_LR_FINAL, NOISY_NORMAL_WEIGHT, NOISY_SURFACE_WEIGHT

    pts, nrm = torus_points
    spacing = float(np.median(local_spacing(pts, k=1)))
    noisy = pts + np.random.default_rng(1).normal(scale=3 * spacing, size=pts.shape)
    path = in_tmp / "noisy.ply"
    save_points_ply(path, noisy * 50.0, nrm)
    r = CliRunner().invoke(main, ["fit", str(path), "--steps", "5", "--batch", "256", "--width", "16",
                                  "--out", str(in_tmp / "run"), "-q", *noise_option])
    assert r.exit_code == 0, r.output
    doc = json.loads((in_tmp / "run" / "fit.json").read_text())
    weight = doc["fit"]["loss"]["normal"]
    if noisy_expected:
        assert "treated as noisy" in r.output
        assert doc["input"]["noise"]["noisy"] and doc["input"]["noise"]["ratio"] > 0.5
        assert weight == NOISY_NORMAL_WEIGHT
        # positions trusted less than on a clean scan
        assert doc["fit"]["loss"]["surface"] == NOISY_SURFACE_WEIGHT < FitConfig().loss.surface
        assert doc["input"]["noise"]["surface_weight"] == NOISY_SURFACE_WEIGHT
        # and the low rate of noisy scans, kept to the end (NOISY_LR_FINAL of it), which averages the noise
        assert doc["fit"]["lr"] == FitConfig().lr_sparse and doc["fit"]["lr_final"] == NOISY_LR_FINAL
    else:
        assert "scan noise" not in r.output and doc["input"]["noise"]["ratio"] is None
        assert weight == FitConfig().loss.normal and doc["fit"]["loss"]["surface"] == FitConfig().loss.surface


def test_the_python_api_gives_the_faces_the_command_gives(in_tmp, sphere_scan_file):
    """README 'From Python': load_scan, fit, extract_mesh with their defaults give exactly the mesh
    that `siren3d fit` + `siren3d mesh` write (same settings, same clean-up, same faces)."""
    import siren3d

    scan = siren3d.load_scan(sphere_scan_file)
    config = siren3d.fit_config(steps=60, batch=512, width=32, init="sphere", lr=5e-4, lr_sparse=5e-4)
    result = siren3d.fit(scan, config, in_tmp / "run", progress=False)
    mesh = siren3d.extract_mesh(result.model, result.normalization, support=result.support)
    siren3d.export_mesh(mesh, in_tmp / "api.ply")

    r = CliRunner().invoke(main, ["mesh", "--run", str(in_tmp / "run"), "-q"])
    assert r.exit_code == 0, r.output
    cli = trimesh.load(in_tmp / "run" / f"mesh-{siren3d.MeshConfig().res}.ply", process=False)
    api = trimesh.load(in_tmp / "api.ply", process=False)
    assert len(api.faces) > 1000 and np.array_equal(api.faces, cli.faces)
    np.testing.assert_array_equal(api.vertices, cli.vertices)


def test_every_setting_is_an_option_with_the_same_default_and_help():
    """The fit and mesh options are made from the config fields: one default and one help text."""
    from dataclasses import fields, is_dataclass

    from siren3d.config import FitConfig, MeshConfig

    def leaves(cfg):
        for f in fields(cfg):
            value = getattr(cfg, f.name)
            if is_dataclass(value):
                yield from leaves(value)
            elif f.metadata.get("cli", True):
                yield f, value

    for command, cfg in (("fit", FitConfig()), ("mesh", MeshConfig())):
        params = {p.name.split("__")[-1]: p for p in main.commands[command].params}
        for f, default in leaves(cfg):
            p = params[f.name]
            assert p.help.startswith(f.metadata["help"]), (command, f.name)
            if not isinstance(default, bool):
                assert p.default is None  # not given -> the config's default (or the preset's) applies
    r = CliRunner().invoke(main, ["fit", "--help"])
    assert "--weight-distance" in r.output and "[default: 1,900]" in r.output


def test_quality_help_says_what_each_preset_changes():
    """The --quality help is made from PRESETS (it once said '2x the batch' for 4/3)."""
    from siren3d.config import PRESETS

    help_text = next(p for p in main.commands["fit"].params if p.name == "quality").help
    for name in ("fast", "high"):
        for key, value in PRESETS[name].items():
            assert f"{key.replace('.', ' ')} {value:g}" in help_text, (name, key)


def test_the_learning_rate_follows_the_scans_point_spacing(in_tmp):
    """A dense scan trains at lr, a sparse one at lr_sparse (the rate that does not carve bumps
    between sparse points), one in between at a rate in between; fit.json and the saved config say
    which. lr_sparse never raises a low lr (the paper preset's 1e-4 stays)."""
    import math

    from siren3d.config import FitConfig, fit_config
    from siren3d.io import save_points_ply
    from siren3d.training import DENSE_SPACING, SPARSE_SPACING, lr_for_spacing

    cfg = FitConfig()
    assert lr_for_spacing(cfg, DENSE_SPACING / 2) == cfg.lr > cfg.lr_sparse
    assert lr_for_spacing(cfg, SPARSE_SPACING * 2) == pytest.approx(cfg.lr_sparse)
    mid = lr_for_spacing(cfg, math.sqrt(DENSE_SPACING * SPARSE_SPACING))
    assert mid == pytest.approx(math.sqrt(cfg.lr * cfg.lr_sparse))
    paper = fit_config("paper")
    assert lr_for_spacing(paper, SPARSE_SPACING * 2) == paper.lr

    from siren3d.synthetic import sample_surface, torus

    pts, nrm = sample_surface(torus(0.5, 0.18), 150_000, res=64, seed=2)
    rates = {}
    for n in (len(pts), 300):  # a dense torus scan, then a sparse subset of it (both clean: --noise low)
        path = in_tmp / f"torus{n}.ply"
        save_points_ply(path, pts[:n] * 50.0, nrm[:n])
        r = CliRunner().invoke(main, ["fit", str(path), "--steps", "3", "--batch", "128", "--width", "16",
                                      "--out", str(in_tmp / f"run{n}"), "-q", "--noise", "low"])
        assert r.exit_code == 0, r.output
        doc = json.loads((in_tmp / f"run{n}" / "fit.json").read_text())
        rates[n] = (doc["input"]["noise"]["spacing"], doc["input"]["noise"]["lr"], doc["fit"]["lr"])
        if n == 300:  # a clean sparse scan starts lower and ends where a dense one ends
            assert doc["fit"]["lr"] * doc["fit"]["lr_final"] == pytest.approx(cfg.lr * cfg.lr_final)
    (dense_spacing, dense_lr, dense_saved), (sparse_spacing, sparse_lr, sparse_saved) = rates[len(pts)], rates[300]
    assert dense_spacing < sparse_spacing and sparse_spacing >= SPARSE_SPACING
    assert sparse_lr == sparse_saved == pytest.approx(cfg.lr_sparse)
    assert dense_saved == dense_lr == pytest.approx(lr_for_spacing(cfg, dense_spacing))
    assert dense_lr > sparse_lr
