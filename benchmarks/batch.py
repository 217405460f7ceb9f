"""Many scans: ``siren3d batch`` against a loop of ``siren3d fit`` + ``siren3d mesh`` on the same scans.

Makes N scans the size of the bundled sample (data/make_sample.py's shape and frame, 20,000 points,
a different seed each), then, wall-clock timed as a user runs them (subprocesses, so interpreter
start-up is included):

- ``sequential``: for each scan ``siren3d fit SCAN --out DIR -q [fit args]`` then ``siren3d mesh --run
  DIR --res R -q``, one after the other, with torch's default threads (all cores) or
  ``--sequential-threads``;
- ``batch WxT``: ``siren3d batch SCANS/ --out DIR --workers W --threads T --res R -q [fit args]`` for
  each --layouts entry (a fresh results folder each time, so nothing is skipped).

Prints one JSON line per variant and round (the variants interleaved in each round, since the machine
is shared): ``seconds`` and ``speedup`` (sequential seconds / this variant's, same round). Batch lines
add Ray's start-up (``ray_start_seconds``: from the start of ``run`` until Ray answers), the time after
the summary (``after_summary_seconds``: Ray's shutdown and the interpreter's exit), the seconds spent
inside the scan tasks (``task_seconds``: load, fit, mesh, export) and ``spawn_seconds_per_scan``: the
remaining worker time per scan ((batch seconds - Ray start) x workers - task seconds) / scans: a new
worker process and its imports for every scan, and the idle tail of the last scans.

    python benchmarks/batch.py [--scans 4] [--points 20000] [--fit-args "--quality fast"] [--res 256]
        [--layouts 2x1 1x2] [--sequential-threads T] [--rounds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def siren3d_command() -> list[str]:
    script = Path(sys.executable).with_name("siren3d")
    return [str(script)] if script.exists() else [sys.executable, "-m", "siren3d.cli"]


def make_scans(folder: Path, count: int, points: int) -> list[Path]:
    sys.path.insert(0, str(ROOT / "data"))
    from make_sample import main as make_sample

    folder.mkdir(parents=True, exist_ok=True)
    return [make_sample(folder / f"sample-{i}.ply", count=points, seed=7 + i) for i in range(count)]


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return seconds


def sequential(scans: list[Path], work: Path, fit_args: list[str], res: int, threads: int | None) -> dict:
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's default
    t0 = time.perf_counter()
    per_scan = []
    for scan in scans:
        run_dir = work / scan.stem
        fit_s = timed([*siren3d_command(), "fit", str(scan), "--out", str(run_dir), "-q", *fit_args], env)
        mesh_s = timed([*siren3d_command(), "mesh", "--run", str(run_dir), "--res", str(res), "-q"], env)
        per_scan.append({"scan": scan.stem, "fit_seconds": round(fit_s, 2), "mesh_seconds": round(mesh_s, 2)})
    return {"variant": "sequential", "threads": threads or "default", "seconds": round(time.perf_counter() - t0, 2),
            "per_scan": per_scan}


def batch(scan_dir: Path, work: Path, fit_args: list[str], res: int, workers: int, threads: int) -> dict:
    seconds = timed([*siren3d_command(), "batch", str(scan_dir), "--out", str(work), "--workers", str(workers),
                     "--threads", str(threads), "--res", str(res), "-q", *fit_args])
    doc = json.loads((work / "summary.json").read_text())
    rows = doc["rows"]
    if any(r["status"] != "done" for r in rows):
        raise SystemExit(f"batch {workers}x{threads}: not every scan is done: {[r['status'] for r in rows]}")
    task_s = sum(r["wall_seconds"] for r in rows)
    spawn = ((doc["seconds"] - doc["ray_start_seconds"]) * workers - task_s) / len(rows)
    return {"variant": f"batch {workers}x{threads}", "workers": workers, "threads": threads,
            "seconds": round(seconds, 2), "ray_start_seconds": doc["ray_start_seconds"],
            "after_summary_seconds": round(seconds - doc["seconds"], 2), "task_seconds": round(task_s, 2),
            "spawn_seconds_per_scan": round(spawn, 2),
            "fit_seconds": [r["fit_seconds"] for r in rows], "mesh_seconds": [r["mesh_seconds"] for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=4, help="how many scans")
    ap.add_argument("--points", type=int, default=20_000, help="points per scan (the bundled sample: 20,000)")
    ap.add_argument("--fit-args", default="--quality fast", help="fit options for both, one quoted string")
    ap.add_argument("--res", type=int, default=256, help="mesh resolution for both")
    ap.add_argument("--layouts", nargs="+", default=["2x1", "1x2"], metavar="WxT",
                    help="siren3d batch --workers W --threads T variants")
    ap.add_argument("--no-sequential", action="store_true", help="only the batch layouts (no speedup)")
    ap.add_argument("--sequential-threads", type=int, default=None,
                    help="torch threads of the sequential loop (OMP_NUM_THREADS) [default: torch's, all cores]")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every variant, interleaved")
    ap.add_argument("--keep", type=Path, default=None, help="keep scans and results under this folder")
    args = ap.parse_args()

    fit_args = shlex.split(args.fit_args)
    layouts = [tuple(int(v) for v in s.lower().split("x")) for s in args.layouts]
    root = args.keep or Path(tempfile.mkdtemp(prefix="siren3d-bench-batch-"))
    try:
        scan_dir = root / "scans"
        scans = make_scans(scan_dir, args.scans, args.points)
        common = {"bench": "batch", "scans": len(scans), "points": args.points, "fit_args": fit_args, "res": args.res,
                  "cpus": len(os.sched_getaffinity(0))}
        for rnd in range(args.rounds):
            base = None
            variants = ([None] if not args.no_sequential else []) + layouts
            for v in variants:
                work = root / f"round{rnd}" / ("sequential" if v is None else f"batch-{v[0]}x{v[1]}")
                load = os.getloadavg()[0]
                line = (sequential(scans, work, fit_args, args.res, args.sequential_threads) if v is None
                        else batch(scan_dir, work, fit_args, args.res, *v))
                if v is None:
                    base = line["seconds"]
                elif base:
                    line["speedup"] = round(base / line["seconds"], 3)
                print(json.dumps({**common, "round": rnd, "load_before": round(load, 2), **line}), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
