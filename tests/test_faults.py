"""Interruptions and faults: signals, divergence, unwritable outputs, impossible sizes, hostile model files.

Signals are sent to a real `python -m siren3d.cli fit` child process; everything else runs the real
command through click's CliRunner or the library, on files written here.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from siren3d.checkpoint import FORMAT, load_checkpoint
from siren3d.cli import main
from siren3d.errors import Siren3dError
from siren3d.io import load_scan, save_points_ply
from siren3d.model import ModelConfig
from siren3d.training import FitConfig, fit

SIGNAL_FIT = ["--steps", "200", "--batch", "1024", "--width", "64", "--hidden-layers", "2", "--seed", "0",
              "--device", "cpu", "--checkpoint-every", "5", "-q"]
TINY_FIT = ["--steps", "2", "--batch", "64", "--width", "16", "--hidden-layers", "1", "--device", "cpu", "-q"]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "siren3d.cli", *map(str, args)]


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["weights"]


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory, sphere_points):
    pts, nrm = sphere_points
    path = tmp_path_factory.mktemp("scan") / "ball.ply"
    save_points_ply(path, pts * 40.0 + np.array([100.0, -50.0, 7.0]), nrm)
    return path


@pytest.fixture(scope="module")
def reference_run(scan_file, tmp_path_factory):
    """The same fit as the signal tests, never interrupted, in its own process."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = subprocess.run(_cli("fit", scan_file, *SIGNAL_FIT, "--out", out), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def tiny_model(scan_file, tmp_path_factory):
    """A real (2-step) model.pt made by the command line."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    r = CliRunner().invoke(main, ["fit", str(scan_file), *TINY_FIT, "--init", "sphere", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out / "model.pt"


# --------------------------------------------------------------------------------------------
# Signals


@pytest.mark.slow  # ~15-20 s each on 2 busy cores: three short fits in fresh processes
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_fit_saves_and_resume_matches_an_uninterrupted_run(tmp_path, scan_file, reference_run, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli("fit", scan_file, *SIGNAL_FIT, "--out", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "model.pt").exists():  # the step-5 checkpoint: training is under way
            assert proc.poll() is None, f"fit ended before it could be signalled: {proc.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        assert proc.poll() is None, "fit finished before the signal; make SIGNAL_FIT longer"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted at step" in stderr
    assert f"resume with: siren3d fit {scan_file} --out {out} --resume" in stderr, stderr
    ckpt = load_checkpoint(out / "model.pt")
    assert 5 <= ckpt.step < 200 and ckpt.train is not None
    assert not (out / "fit.json").exists()  # the run is not finished, and does not claim to be
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"

    r = subprocess.run(_cli("fit", scan_file, *SIGNAL_FIT, "--out", out, "--resume"), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed, full = _weights(out / "model.pt"), _weights(reference_run / "model.pt")
    assert resumed.keys() == full.keys()
    for k in full:
        assert torch.equal(resumed[k], full[k]), k
    hist = json.loads((out / "fit.json").read_text())["history"]["rows"]
    assert hist == json.loads((reference_run / "fit.json").read_text())["history"]["rows"]


# --------------------------------------------------------------------------------------------
# Divergence


def test_absurd_lr_diverges_cleanly_with_advice(tmp_path, scan_file):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["fit", str(scan_file), *TINY_FIT, "--steps", "50", "--lr", "1e6", "--lr-sparse", "1e6",
                                  "--out", str(out)])
    assert r.exit_code == 2, r.output
    line = _one_error_line(r.output)
    assert "diverged" in line and "lower lr (now 1e+06; try 100000)" in line, line
    # it diverged before any checkpoint was due: nothing was written, not even the folder
    assert "nothing was written" in line and not out.exists()


#: A small fit that collapses at lr 1e-2 and fits at 1e-3 (the collapse tests below).
COLLAPSE_FIT = ["--steps", "150", "--batch", "256", "--width", "64", "--hidden-layers", "2", "--grad", "fused",
                "--device", "cpu", "-q"]


def _final_normal(run) -> float:
    from siren3d.training import FAIL_WINDOW

    hist = json.loads((run / "fit.json").read_text())["history"]
    return float(np.asarray(hist["rows"])[-FAIL_WINDOW:, hist["columns"].index("normal")].mean())


def test_a_fit_that_collapsed_says_so_instead_of_leaving_it_to_the_mesher(tmp_path, scan_file):
    """Too high a learning rate that stays finite: the field collapses to one with no surface near
    the points (grad f uncorrelated with the normals). Without going back (--recover 0) the fit
    says so in one line and exits 2; the run is kept for inspection. The same fit at a sane lr ends
    far below the threshold."""
    from siren3d.training import FAIL_NORMAL

    small = [*COLLAPSE_FIT, "--recover", "0"]
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["fit", str(scan_file), *small, "--lr", "1e-2", "--lr-sparse", "1e-2", "--out", str(out)])
    assert r.exit_code == 2, r.output
    line = _one_error_line(r.output)
    assert "training failed" in line and "lower lr (now 0.01" in line and str(out) in line, line
    # kept for inspection, but not as model.pt: `siren3d mesh` and batch re-runs must not take it for a result
    assert "model-failed.pt" in line and (out / "model-failed.pt").exists() and (out / "loss.png").exists()
    assert not (out / "model.pt").exists()
    ok = tmp_path / "ok"
    r = CliRunner().invoke(main, ["fit", str(scan_file), *small, "--lr", "1e-3", "--lr-sparse", "1e-3", "--out", str(ok)])
    assert r.exit_code == 0, r.output
    assert _final_normal(ok) < FAIL_NORMAL / 10


def test_a_fit_that_collapses_goes_back_and_on_at_a_lower_rate(tmp_path, scan_file):
    """The collapsing fit above, with the default --recover: it goes back to its start at half the
    rate, again if it collapses again (measured: twice, fitting at a quarter), and fits. fit.json
    records each step back, and the run's config holds the rate it ended with, so a resume goes on
    at that rate."""
    from siren3d.training import FAIL_NORMAL

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["fit", str(scan_file), *COLLAPSE_FIT, "--lr", "1e-2", "--lr-sparse", "1e-2",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "the field collapsed by step" in r.output and "went back to step 0" in r.output
    doc = json.loads((out / "fit.json").read_text())
    backs = doc["recoveries"]
    assert 1 <= len(backs) <= 3 and all(b["resumed_from"] == 0 for b in backs)
    assert [b["lr"] for b in backs] == pytest.approx([1e-2 / 2 ** (i + 1) for i in range(len(backs))])
    assert doc["fit"]["lr"] == pytest.approx(backs[-1]["lr"]) and doc["fit"]["recover"] == 3
    assert len(doc["history"]["rows"]) == doc["step"] == 150  # the undone steps are not in the history
    assert _final_normal(out) < FAIL_NORMAL / 10
    assert load_checkpoint(out).step == 150


def test_a_collapse_mid_way_goes_back_to_the_last_healthy_snapshot(tmp_path, scan_file):
    """A rate that grows as the fit goes (a 'decay' to 20x the peak) fits well at first, then
    collapses. The fit goes back to a healthy state kept in memory (a multiple of GUARD_EVERY steps),
    not to its start, and goes on at half the peak with the same end rate (capped at the peak)."""
    from siren3d.training import FAIL_NORMAL, GUARD_EVERY

    scan = load_scan(scan_file)
    cfg = FitConfig(steps=300, batch=256, lr=1e-3, lr_sparse=1e-3, lr_final=20.0, warmup=0, seed=0, device="cpu",
                    grad="fused", checkpoint_every=0, model=ModelConfig(width=64, hidden_layers=2))
    run = tmp_path / "run"
    res = fit(scan, cfg, run, progress=False)
    (back,) = json.loads((run / "fit.json").read_text())["recoveries"]
    assert back["resumed_from"] > 0 and back["resumed_from"] % GUARD_EVERY == 0
    assert back["resumed_from"] < back["collapsed_at"] <= back["resumed_from"] + GUARD_EVERY + 100
    assert res.config.lr == pytest.approx(5e-4) and res.config.lr_final == 1.0
    assert len(res.history) == 300 and _final_normal(run) < FAIL_NORMAL / 10
    # Trained on for longer, the run keeps its record of that step back, and its budget: 2 are left.
    more = fit(scan, replace(cfg, steps=320), run, resume=True, progress=False)
    assert json.loads((run / "fit.json").read_text())["recoveries"] == [back]
    assert len(more.history) == 320 and more.config.lr == pytest.approx(5e-4)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, scan_file):
    """A learning rate scheduled to explode (cosine 'decay' to 1e10 x lr): the early steps are fine
    and checkpointed every 5 steps, then the loss turns inf; the fit stops and model.pt stays the
    last checkpoint whose weights were seen to give a finite loss."""
    scan = load_scan(scan_file)
    cfg = FitConfig(steps=40, batch=256, lr=1e-4, lr_final=1e10, seed=0, device="cpu", checkpoint_every=5,
                    model=ModelConfig(width=32, hidden_layers=1))
    run = tmp_path / "run"
    seen = []
    with pytest.raises(Siren3dError) as err:
        fit(scan, cfg, run, progress=False, callback=lambda step, v: seen.append(step))
    msg = str(err.value)
    assert "\n" not in msg and "diverged" in msg and "lower lr" in msg, msg
    last_ok = seen[-1]  # steps completed with a finite loss
    # The checkpoint of step k is written at step k + 1, once the weights after k steps gave a
    # finite loss: so the last one kept is the last multiple of 5 below last_ok, not at it.
    kept = (last_ok - 1) - (last_ok - 1) % 5
    assert f"at step {last_ok + 1}" in msg and f"last good checkpoint (step {kept})" in msg, msg
    ckpt = load_checkpoint(run / "model.pt")  # finite weights, or it would raise
    assert ckpt.step == kept > 0
    hist = ckpt.train["history"].numpy()
    assert hist.shape[0] == kept and np.isfinite(hist).all()
    with torch.no_grad():
        assert torch.isfinite(ckpt.model(torch.rand(1000, 3) * 2 - 1)).all()
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]  # no fit.json claiming success


# --------------------------------------------------------------------------------------------
# Unwritable output, impossible sizes


def test_output_under_a_file_fails_before_loading_or_training(tmp_path, scan_file):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    r = CliRunner().invoke(main, ["fit", str(scan_file), *TINY_FIT, "--out", str(blocker / "run")])
    assert r.exit_code == 2
    line = _one_error_line(r.output)
    assert str(blocker / "run") in line and "is a file" in line, line
    assert "loaded" not in r.output  # refused before the scan was even read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    # the library refuses it too, before the first step
    steps = []
    with pytest.raises(Siren3dError, match="is a file"):
        fit(load_scan(scan_file), FitConfig(steps=3, batch=64, device="cpu"), blocker / "run", progress=False,
            callback=lambda s, v: steps.append(s))
    assert steps == []


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """Root ignores file modes: drop its override capabilities (setpriv) so modes apply to it too."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be tested")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]


def test_read_only_output_folder_fails_before_loading(tmp_path, scan_file):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        r = subprocess.run(_as_unprivileged(_cli("fit", scan_file, *TINY_FIT, "--out", parent / "run")),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        line = _one_error_line(r.stderr)
        assert str(parent / "run") in line and "permission denied" in line, line
        assert "loaded" not in r.stderr
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_huge_batch_is_refused_before_allocating(tmp_path, scan_file):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["fit", str(scan_file), *TINY_FIT, "--batch", str(10**9), "--out", str(out)])
    assert time.perf_counter() - t0 < 10
    assert r.exit_code == 2
    line = _one_error_line(r.output)
    assert "batch 1,000,000,000 needs about" in line and "GiB" in line and "use batch" in line, line
    assert not out.exists()
    # and through the library, before the run folder is made
    with pytest.raises(Siren3dError, match="GiB"):
        fit(load_scan(scan_file), FitConfig(batch=10**9, device="cpu"), out, progress=False)
    assert not out.exists()


def test_step_memory_estimate_is_close_to_the_measured_peak():
    """The estimate behind the --batch refusal, against a real training step's peak memory.

    Anonymous memory (RssAnon) is sampled from a thread during the step: unlike the process's peak
    RSS it does not move when the kernel drops the library pages of a busy machine."""
    code = textwrap.dedent("""
        import json, threading, time, numpy as np
        from siren3d.config import FitConfig, ModelConfig
        from siren3d.training import Trainer, step_memory_bytes

        def anon():
            with open("/proc/self/status") as fh:
                return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("RssAnon:"))

        cfg = FitConfig(batch=60000, batch_start=1.0, grad="fused", model=ModelConfig(width=96, hidden_layers=2))
        rng = np.random.default_rng(0)
        normals = rng.normal(size=(20000, 3)); normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        trainer = Trainer(cfg, (0.5 * normals).astype(np.float32), normals.astype(np.float32))  # fit's own step
        base, peak, done = anon(), [0], threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], anon()); time.sleep(0.001)

        t = threading.Thread(target=watch); t.start()
        trainer.step()
        peak[0] = max(peak[0], anon()); done.set(); t.join()
        print(json.dumps({"measured": peak[0] - base, "estimate": step_memory_bytes(cfg)}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    ratio = res["estimate"] / res["measured"]
    print(f"step memory: estimate {res['estimate'] / 2**20:.0f} MiB, measured {res['measured'] / 2**20:.0f} MiB")
    assert 0.7 < ratio < 1.4, res


# --------------------------------------------------------------------------------------------
# Meshing refusals (the mesh command is owned elsewhere: tested only from outside)


def test_mesh_without_zero_crossing_writes_nothing(tmp_path, tiny_model):
    target = tmp_path / "out.ply"
    r = CliRunner().invoke(main, ["mesh", str(tiny_model), "--res", "16", "--level", "1e9", "-o", str(target)])
    assert r.exit_code == 2
    line = _one_error_line(r.output)
    assert "never reaches the level 1e+09" in line and "everywhere below" in line, line
    assert list(tmp_path.iterdir()) == []
    assert not list(tiny_model.parent.glob("mesh-*"))


def test_mesh_res_4096_is_refused_with_its_memory_need(tiny_model):
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["mesh", str(tiny_model), "--res", "4096"])
    assert time.perf_counter() - t0 < 30
    assert r.exit_code == 2
    assert "GiB" in _one_error_line(r.output)
    assert not (tiny_model.parent / "mesh-4096.ply").exists()
    assert not [p for p in tiny_model.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_mesh_on_cuda_without_a_gpu_is_refused(tmp_path, tiny_model):
    target = tmp_path / "out.ply"
    r = CliRunner().invoke(main, ["mesh", str(tiny_model), "--res", "16", "--device", "cuda", "-o", str(target)])
    assert r.exit_code == 2
    assert "no CUDA GPU" in _one_error_line(r.output)
    assert not target.exists()


# --------------------------------------------------------------------------------------------
# Untrusted model files


class _Touch:
    """Unpickling this runs `touch MARKER` (a stand-in for any code an attacker wants run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payload(evil) -> dict:
    return {"format": FORMAT, "version": 1, "meta": evil, "weights": {}}


def test_crafted_pickle_is_live(tmp_path):
    """Sanity check of the attack itself: loading it the unsafe way does run the code."""
    marker = tmp_path / "pwned"
    torch.save(_payload(_Touch(marker)), tmp_path / "model.pt")
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_model_file_runs_nothing(tmp_path, writer):
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pt"
    if writer == "torch.save":
        torch.save(_payload(_Touch(marker)), model)
    else:
        with open(model, "wb") as f:
            pickle.dump(_payload(_Touch(marker)), f)
    r = CliRunner().invoke(main, ["mesh", str(model), "--res", "16"])
    assert r.exit_code == 2
    line = _one_error_line(r.output)
    if writer == "torch.save":  # a zip archive: opened by the safe unpickler, which refuses the call
        assert f"error: {model}: refused to load" in line and "posix.system" in line, line
    else:  # a bare pickle: not torch's zip format, never unpickled at all
        assert f"error: {model}: not a readable siren3d model file (not a PyTorch zip" in line, line
    assert not marker.exists(), "the model file ran code"
    assert not (tmp_path / "mesh-16.ply").exists()


def _rewrite(src: Path, dst: Path, change) -> Path:
    payload = torch.load(src, map_location="cpu", weights_only=True)
    change(payload)
    torch.save(payload, dst)
    return dst


def _meta(payload, **model):
    meta = json.loads(payload["meta"])
    meta["model"].update(model)
    payload["meta"] = json.dumps(meta)


def _version(v):
    return lambda p: p.update(version=v)


def _first_weight(fn):
    def change(p):
        k = next(k for k in sorted(p["weights"]) if k.endswith("weight"))
        p["weights"][k] = fn(p["weights"][k])
    return change


BAD_MODELS = [
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", _version(99)), "version 99", id="future-version"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", _version("1")), "version '1'", id="version-not-int"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", lambda p: p.update(format="other")),
                 "format tag", id="wrong-format-tag"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", lambda p: _meta(p, width=17)),
                 "do not match the declared architecture", id="shapes-vs-declared-width"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", _first_weight(lambda w: w[:, :-1])),
                 "do not match the declared architecture", id="one-tensor-wrong-shape"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", lambda p: p["weights"].pop(sorted(p["weights"])[-1])),
                 "missing", id="missing-tensor"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", _first_weight(lambda w: w.fill_(float("nan")))),
                 "NaN/Inf", id="nan-weights"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", _first_weight(lambda w: w.fill_(float("inf")))),
                 "NaN/Inf", id="inf-weights"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", lambda p: _meta(p, width=-5)),
                 "metadata is invalid", id="negative-width"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", lambda p: _meta(p, width=10**9)),
                 "implausible architecture", id="huge-width"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", lambda p: p.update(meta="{not json")),
                 "metadata is invalid", id="meta-not-json"),
    pytest.param(lambda src, d: _rewrite(src, d / "model.pt", lambda p: p.update(weights=[1, 2])),
                 "no weight tensors", id="weights-not-a-dict"),
    pytest.param(lambda src, d: (d / "model.pt").write_bytes(np.random.default_rng(0).bytes(4096)) and d / "model.pt",
                 "not a readable siren3d model file", id="random-bytes"),
    pytest.param(lambda src, d: (d / "model.pt").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
                 and d / "model.pt", "not a readable siren3d model file", id="truncated"),
    pytest.param(lambda src, d: (d / "model.pt").write_bytes(b"") or d / "model.pt",
                 "not a readable siren3d model file", id="empty"),
    pytest.param(lambda src, d: torch.save(torch.zeros(3), d / "model.pt") or d / "model.pt",
                 "format tag", id="a-plain-tensor"),
    pytest.param(lambda src, d: _zip_with_junk(d / "model.pt"), "not a readable siren3d model file", id="zip-junk"),
]


def _zip_with_junk(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x05junk")
    return path


@pytest.mark.parametrize("make, keyword", BAD_MODELS)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_bad_model_file_is_one_clear_error(tmp_path, tiny_model, make, keyword):
    d = tmp_path / "m"
    d.mkdir()
    path = make(tiny_model, d)
    r = CliRunner().invoke(main, ["mesh", str(path), "--res", "16"])
    assert r.exit_code == 2, (r.output, r.exception)
    line = _one_error_line(r.output)
    assert str(path) in line and keyword in line, line
    assert sorted(p.name for p in d.iterdir()) == ["model.pt"]  # no mesh written


def test_resume_from_a_checkpoint_with_broken_training_state(tmp_path, scan_file, tiny_model):
    run = tmp_path / "run"
    run.mkdir()

    def break_train(p):
        p["train"]["optimizer"] = {"state": "nonsense"}

    _rewrite(tiny_model, run / "model.pt", break_train)
    r = CliRunner().invoke(main, ["fit", str(scan_file), *TINY_FIT, "--init", "sphere", "--out", str(run),
                                  "--resume"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "cannot resume" in _one_error_line(r.output)
