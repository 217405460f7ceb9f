"""Scoring meshes against references: analytic cases with known answers, files, and the eval command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from scipy.special import erfcx

from siren3d.cli import main
from siren3d.errors import Siren3dError
from siren3d.io import Scan, save_points_ply
from siren3d.metrics import score_mesh as evaluate

N = 50_000


def sphere(radius=1.0, center=(0.0, 0.0, 0.0)):
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    mesh.apply_translation(center)
    return mesh


def expected_nn_distance(h, mesh, n):
    """Mean distance from a point at height h above a surface to the nearest of n uniform samples on it.

    The samples are a Poisson process of density rho = n / area, so the squared lateral distance to the
    nearest one is exponential with rate lam = pi rho, and E[sqrt(h^2 + S)] has a closed form.
    """
    lam = np.pi * n / mesh.area
    return h + 0.5 * np.sqrt(np.pi / lam) * erfcx(h * np.sqrt(lam))


@pytest.fixture(scope="module")
def ball():
    return sphere()


def test_a_mesh_against_itself_scores_perfectly_up_to_the_sampling_floor(ball):
    s = evaluate(ball, ball, n_samples=N, seed=3)
    # Independent samples: the floor is the mean nearest-neighbour gap between two samplings.
    assert s["chamfer_l1"] == pytest.approx(expected_nn_distance(0.0, ball, N), rel=0.05)
    assert s["chamfer_l1_rel"] < 0.003
    assert s["fscore_1pct"] == 1.0 and s["fscore_0.5pct"] > 0.97
    assert s["normal_consistency"] > 0.999
    assert s["components"] == 1 and s["watertight"] is True
    assert s["reference_kind"] == "mesh"
    assert s["reference_diagonal"] == pytest.approx(2 * np.sqrt(3), rel=1e-3)
    assert s["samples_mesh"] == s["samples_reference"] == N
    # The sampling floor alone (what benchmarks/quality.py asks): the same sampled scores, no surface ones.
    floor = evaluate(ball, ball, n_samples=N, seed=3, surface=False)
    assert floor["chamfer_l1"] == s["chamfer_l1"] and "surface_chamfer_l1" in s
    assert not any(k.startswith("surface_") for k in floor)


def test_surface_scores_have_no_sampling_floor_and_measure_a_known_offset_exactly(ball):
    far = (1e4, -2e4, 3e4)  # far-off coordinates: the float32 distances must keep their precision
    s = evaluate(sphere(center=far), sphere(center=far), n_samples=N, seed=3)
    assert s["chamfer_l1_rel"] > 5e-4  # the sampled score's floor
    assert s["surface_chamfer_l1_rel"] < 1e-5 and s["surface_hausdorff_rel"] < 1e-4
    # A sphere 0.2 % larger: every point lies 0.002 from the other surface (up to the facets).
    s = evaluate(sphere(1.002, far), sphere(center=far), n_samples=N, seed=3)
    assert s["surface_accuracy"] == pytest.approx(0.002, rel=0.05)
    assert s["surface_completeness"] == pytest.approx(0.002, rel=0.05)
    assert s["surface_chamfer_l1_rel"] == pytest.approx(0.002 / s["reference_diagonal"], rel=0.05)
    assert s["chamfer_l1"] > 2 * s["surface_chamfer_l1"]  # what the floor adds to such a small offset


def test_a_point_cloud_reference_has_no_surface_scores(ball):
    cloud = Scan(points=np.asarray(ball.vertices), normals=np.asarray(ball.vertex_normals))
    s = evaluate(ball, cloud, n_samples=5000)
    assert s["reference_kind"] == "points" and not any(k.startswith("surface_") for k in s)


def test_the_same_seed_gives_the_same_scores_and_another_seed_other_samples(ball):
    a = evaluate(ball, sphere(1.01), n_samples=5000, seed=11)
    assert evaluate(ball, sphere(1.01), n_samples=5000, seed=11) == a
    assert evaluate(ball, sphere(1.01), n_samples=5000, seed=12)["chamfer_l1"] != a["chamfer_l1"]


def test_concentric_spheres_one_percent_apart_give_the_analytic_chamfer(ball):
    s = evaluate(ball, sphere(1.01), n_samples=N)
    # The surfaces are 0.01 apart everywhere; point samples add a lateral gap with a known mean.
    assert s["chamfer_l1"] == pytest.approx(expected_nn_distance(0.01, ball, N), rel=0.01)
    assert s["accuracy"] == pytest.approx(s["completeness"], rel=0.01)
    dense = evaluate(ball, sphere(1.01), n_samples=400_000)
    assert dense["chamfer_l1"] == pytest.approx(0.01, rel=0.06)  # -> 0.01 as samples grow
    assert dense["chamfer_l1"] < s["chamfer_l1"]
    assert s["chamfer_l1_rel"] == pytest.approx(s["chamfer_l1"] / s["reference_diagonal"])
    assert s["normal_consistency"] > 0.999
    # 0.5 % of the diagonal (0.0174) is above the 0.01 gap plus most lateral gaps, 1 % above nearly all.
    assert s["fscore_1pct"] > 0.99 and s["fscore_0.5pct"] > s["fscore_1pct"] - 0.1


def test_a_shifted_copy_gives_the_analytic_chamfer_and_hausdorff(ball):
    d = 0.05
    s = evaluate(ball, sphere(center=(d, 0, 0)), n_samples=N)
    # A point at polar angle t on one sphere lies d |cos t| from the other; |cos t| is uniform on [0, 1].
    u = (np.arange(1000) + 0.5) / 1000
    expected = expected_nn_distance(d * u, ball, N).mean()
    assert s["accuracy"] == pytest.approx(expected, rel=0.02)
    assert s["completeness"] == pytest.approx(expected, rel=0.02)
    assert d <= s["hausdorff"] < d + 0.01
    assert s["hausdorff_rel"] == pytest.approx(s["hausdorff"] / s["reference_diagonal"])
    # ... so the fraction within t of the other sphere is t / d (a little less: the sampling gap adds to d |cos t|).
    for name in ("0.5pct", "1pct"):
        share = s[f"threshold_{name}"] / d
        assert share - 0.07 < s[f"precision_{name}"] < share
        assert share - 0.07 < s[f"recall_{name}"] < share


def test_a_ghost_piece_raises_hausdorff_components_and_far_accuracy_but_not_completeness(ball):
    ghost = trimesh.util.concatenate([ball, sphere(0.05, center=(3.0, 0, 0))])
    clean = evaluate(ball, ball, n_samples=N)
    s = evaluate(ghost, ball, n_samples=N)
    assert s["components"] == 2 and clean["components"] == 1
    assert s["watertight"] is True  # two closed pieces are still watertight
    assert s["hausdorff"] == pytest.approx(2.05, abs=0.03)
    assert clean["hausdorff"] < 0.05
    assert s["completeness"] == pytest.approx(clean["completeness"], rel=0.1)
    assert s["precision_1pct"] < 1.0 and s["recall_1pct"] == 1.0
    # All of the accuracy beyond 1 % is the ghost's: its share of the samples times its distance.
    far = 1 - s["precision_1pct"]
    assert s["accuracy_beyond_1pct"] == pytest.approx(far * 2.0, rel=0.05)
    assert s["accuracy"] - s["accuracy_beyond_1pct"] == pytest.approx(clean["accuracy"] * (1 - far), rel=0.1)
    assert clean["accuracy_beyond_1pct"] == 0.0
    assert s["accuracy_beyond_0.5pct_rel"] == pytest.approx(s["accuracy_beyond_0.5pct"] / s["reference_diagonal"])


def test_accuracy_and_completeness_measure_opposite_directions(ball):
    # A hemisphere built where the reference is (accurate) but only half of it (incomplete).
    half = ball.copy()
    half.update_faces(half.triangles_center[:, 2] > 0)
    half.remove_unreferenced_vertices()
    s = evaluate(half, ball, n_samples=N)
    assert s["watertight"] is False
    assert s["accuracy"] < 0.01 < 0.2 < s["completeness"]
    assert s["precision_1pct"] == 1.0 and s["recall_1pct"] == pytest.approx(0.5, abs=0.03)
    swapped = evaluate(ball, half, n_samples=N)
    assert swapped["completeness"] < 0.01 < 0.2 < swapped["accuracy"]


def test_a_point_cloud_with_normals_is_a_reference(ball, tmp_path):
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(80_000, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    scan = Scan(points=1.01 * normals, normals=normals.astype(np.float32))  # exact sphere, radius 1.01
    s = evaluate(ball, scan, n_samples=N)
    assert s["reference_kind"] == "points"
    assert s["samples_reference"] == N  # a larger cloud is subsampled to n_samples
    assert s["chamfer_l1"] == pytest.approx(expected_nn_distance(0.01, ball, N), rel=0.02)
    assert s["normal_consistency"] > 0.999
    # A file without faces is read as a point cloud; with faces, as a mesh.
    save_points_ply(tmp_path / "ref.ply", scan.points, scan.normals)
    ball.export(tmp_path / "ball.ply")
    from_files = evaluate(tmp_path / "ball.ply", tmp_path / "ref.ply", n_samples=N)
    assert from_files["reference_kind"] == "points" and from_files["components"] == 1
    assert from_files["chamfer_l1"] == pytest.approx(s["chamfer_l1"], rel=0.02)


def test_meshes_that_cannot_be_scored_raise_siren3d_errors(ball, tmp_path):
    save_points_ply(tmp_path / "cloud.ply", ball.vertices, ball.vertex_normals)
    with pytest.raises(Siren3dError, match="no faces"):
        evaluate(tmp_path / "cloud.ply", ball)
    flat = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]], process=False)
    with pytest.raises(Siren3dError, match="degenerate"):
        evaluate(flat, ball)
    with pytest.raises(Siren3dError, match="mesh or a point cloud"):
        evaluate(ball, np.zeros((10, 3)))


EVAL_KEYS = {
    "reference_kind", "reference_diagonal", "samples_mesh", "samples_reference", "seed",
    "chamfer_l1", "chamfer_l1_rel", "accuracy", "accuracy_rel", "completeness", "completeness_rel",
    "hausdorff", "hausdorff_rel", "normal_consistency", "normal_accuracy", "normal_completeness",
    "fscore_0.5pct", "precision_0.5pct", "recall_0.5pct", "threshold_0.5pct",
    "accuracy_beyond_0.5pct", "accuracy_beyond_0.5pct_rel",
    "fscore_1pct", "precision_1pct", "recall_1pct", "threshold_1pct",
    "accuracy_beyond_1pct", "accuracy_beyond_1pct_rel",
    "components", "watertight", "vertices", "faces",
    "surface_chamfer_l1", "surface_chamfer_l1_rel", "surface_accuracy", "surface_accuracy_rel",
    "surface_completeness", "surface_completeness_rel", "surface_hausdorff", "surface_hausdorff_rel",
}


def test_eval_command_prints_json_with_every_key_and_a_table(ball, tmp_path):
    ball.export(tmp_path / "pred.ply")
    sphere(1.01).export(tmp_path / "ref.obj")
    runner = CliRunner()
    r = runner.invoke(main, ["eval", str(tmp_path / "pred.ply"), "--ref", str(tmp_path / "ref.obj"),
                             "--samples", "20000", "--json"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert set(scores) == EVAL_KEYS
    assert scores["samples_mesh"] == 20_000 and scores["watertight"] is True
    assert scores["chamfer_l1"] == pytest.approx(expected_nn_distance(0.01, ball, 20_000), rel=0.03)

    r = runner.invoke(main, ["eval", str(tmp_path / "pred.ply"), "--ref", str(tmp_path / "ref.obj"),
                             "--samples", "20000"])
    assert r.exit_code == 0, r.output
    assert "chamfer-l1" in r.stdout and "F-score @ 1.0%" in r.stdout and "watertight" in r.stdout
    assert "accuracy beyond 0.5%" in r.stdout and "surface-chamfer-l1" in r.stdout
    assert f"{scores['chamfer_l1']:.6g}" in r.stdout


@pytest.mark.parametrize("make_args", [
    lambda p: ["eval", str(p / "missing.ply"), "--ref", str(p / "ref.obj")],
    lambda p: ["eval", str(p / "cloud.ply"), "--ref", str(p / "ref.obj")],
    lambda p: ["eval", str(p / "ref.obj"), "--ref", str(p / "garbage.xyz")],
], ids=["missing-mesh", "point-cloud-as-mesh", "garbage-reference"])
def test_eval_command_errors_are_one_line_with_exit_status_2(ball, tmp_path, make_args):
    ball.export(tmp_path / "ref.obj")
    save_points_ply(tmp_path / "cloud.ply", ball.vertices, ball.vertex_normals)
    (tmp_path / "garbage.xyz").write_text("not numbers at all\n")
    r = CliRunner().invoke(main, make_args(tmp_path))
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
