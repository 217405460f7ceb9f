"""Many scans at once: each scan fitted and meshed by a Ray task in its own worker process.

    rows = siren3d.batch.run(["scans/", "more/*.ply"], "results/", FitConfig(), {"res": 256})

Each scan gets ``out/<name>/``, the usual run folder (model.pt, fit.json, loss.png) plus
``mesh-<res>.ply`` and ``mesh-<res>.json`` (the mesh's statistics and the settings that made it);
``out/summary.csv`` and ``out/summary.json`` hold one row per scan. Ray starts locally (no
dashboard) unless an ``address`` names a running cluster.

Rerunning the same command continues a batch: a scan whose run folder holds a finished fit and a
mesh made from it with the same settings is skipped, an interrupted fit resumes from its checkpoint,
and a scan that failed is tried again. A run folder is reused with the settings it was started with
(``steps`` may be raised); use another ``out`` to refit with other settings.

One scan's failure (an unreadable file, no usable points, out of memory, a worker that died) is
its row's error and never stops the others. Ray is imported only here, and only when a batch runs.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from ._version import __version__
from .config import FitConfig, LoadConfig, MeshConfig
from .errors import Siren3dError
from .files import atomic_output, check_output_dir, file_sha256
from .io import SUPPORTED

log = logging.getLogger(__name__)

#: Torch threads per scan. On the 2-core development machine 2 workers x 1 thread finished a batch of
#: small scans sooner than 1 worker x 2 threads (README, "Many scans"): one fit uses two cores badly.
DEFAULT_THREADS = 1
#: Seconds that interrupted tasks get to save their checkpoints after Ctrl-C.
INTERRUPT_GRACE_S = 30.0
#: Seconds between rewrites of the summary while a batch runs (it is always written at the end).
SUMMARY_EVERY_S = 10.0

STATUSES = ("done", "skipped", "failed", "interrupted", "pending")
#: The summary's columns, in order (summary.json rows add a traceback to unexpected failures).
COLUMNS = ("name", "input", "status", "error", "points", "noise_ratio", "steps", "resumed_from", "fit_seconds",
           "mesh_seconds", "faces", "pieces", "watertight", "trimmed_area", "wall_seconds", "notes", "mesh")


class BatchInterrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the batch; ``rows`` is the summary as written."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        done = sum(r["status"] in ("done", "skipped") for r in rows)
        super().__init__(f"interrupted with {done} of {len(rows)} scans finished")


@dataclass(frozen=True)
class ScanJob:
    """One scan of a batch: where it is read from and the run folder it is written to."""

    name: str
    input: str
    run_dir: str


# ---------------------------------------------------------------------------------------------
# Inputs


def _is_scan_file(p: Path) -> bool:
    # Hidden files include atomic_output's temporaries (.name.XXXX.tmp.ply) of a writer still at work.
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUPPORTED


def collect_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The scan files that ``inputs`` name, in order, each once.

    A file is taken as it is (if it cannot be read, its row says so); a folder gives every file with
    a supported suffix directly inside it, sorted; anything else is a glob pattern (``**`` recurses),
    whose scan files are taken sorted. A folder or pattern with no scan file is an error.
    """
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        p = Path(text).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if _is_scan_file(f))
            if not files:
                raise Siren3dError(f"no scan files in this folder (looked for {' '.join(SUPPORTED)})", text)
        elif p.exists() or not glob.has_magic(text):
            files = [p]  # a missing file becomes a failed row, like an unreadable one
        else:
            files = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True)
                           if _is_scan_file(Path(m)))
            if not files:
                raise Siren3dError("no scan files match this pattern", text)
        found.extend(files)
    seen: set[str] = set()
    unique = []
    for f in found:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def plan(inputs: Iterable[str | os.PathLike], out: str | os.PathLike) -> list[ScanJob]:
    """A ScanJob per scan file: ``out/<stem>``, and ``<stem>-2``, ``-3``... for repeated stems.

    Names are given in input order, so the same command names the same folders; a run folder that
    turns out to hold another file's fit is refused when the scan runs (its input's SHA-256 differs).
    """
    out = Path(out).absolute()
    taken: set[str] = {"summary.csv", "summary.json"}
    jobs = []
    for f in collect_inputs(inputs):
        stem = f.stem or "scan"
        name, k = stem, 1
        while name.casefold() in taken:  # casefold: distinct folders on case-insensitive disks too
            k += 1
            name = f"{stem}-{k}"
        taken.add(name.casefold())
        jobs.append(ScanJob(name=name, input=str(f.absolute()), run_dir=str(out / name)))
    if not jobs:
        raise Siren3dError("no scans given")
    return jobs


# ---------------------------------------------------------------------------------------------
# One scan: the function each Ray task runs


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _mesh_key(mesh: MeshConfig) -> dict:
    """The mesh settings as they read back from JSON (tuples become lists), for comparison."""
    return json.loads(json.dumps(mesh.to_dict(), sort_keys=True, default=_jsonable))


def _mesh_paths(job: ScanJob, mesh: MeshConfig) -> tuple[Path, Path]:
    run_dir = Path(job.run_dir)
    return run_dir / f"mesh-{mesh.res}.ply", run_dir / f"mesh-{mesh.res}.json"


def _check_same_input(job: ScanJob, recorded: dict) -> None:
    """Refuse a run folder made from another file (a renamed scan, or names that shifted)."""
    sha = recorded.get("sha256")
    if sha and Path(job.input).is_file() and file_sha256(job.input) != sha:
        raise Siren3dError(f"its run folder {job.run_dir} holds a fit of another file ({recorded.get('path')}); "
                           f"remove that folder or use another --out", job.input)


def _fit_state(job: ScanJob, config: FitConfig) -> tuple[dict | None, bool]:
    """(fit.json, finished): finished when fit.json reports the steps a resume would train to
    (:func:`siren3d.training.resume_steps`: the run's own with the default steps) and model.pt is there."""
    from .training import resume_steps

    run_dir = Path(job.run_dir)
    doc = _read_json(run_dir / "fit.json")
    run_steps = (doc or {}).get("fit", {}).get("steps")
    target = resume_steps(config.steps, run_steps) if isinstance(run_steps, int) else config.steps
    finished = bool(doc and (run_dir / "model.pt").is_file() and isinstance(doc.get("step"), int)
                    and doc["step"] >= target)
    return doc, finished


def _row(job: ScanJob, status: str, error: str = "", **values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(name=job.name, input=job.input, status=status, error=error, **values)
    return row


def _row_from_files(job: ScanJob, fit_doc: dict, mesh_doc: dict, status: str, **values) -> dict:
    """A finished scan's row, from its fit.json and mesh-<res>.json."""
    inp = fit_doc.get("input", {})
    timings = fit_doc.get("timings", {})
    stats = mesh_doc.get("stats", {})
    fit_s = timings.get("train_s", 0.0) + timings.get("setup_s", 0.0)
    return _row(job, status,
                points=inp.get("points"), noise_ratio=(inp.get("noise") or {}).get("ratio"),
                steps=fit_doc.get("step"), fit_seconds=round(fit_s, 2),
                mesh_seconds=round(stats.get("seconds", 0.0), 2), faces=stats.get("faces"),
                pieces=stats.get("components"), watertight=stats.get("watertight"),
                trimmed_area=stats.get("trimmed_area"),  # reported by meshing versions that trim
                notes="; ".join(inp.get("notes") or []), mesh=mesh_doc.get("mesh"), **values)


def finished_row(job: ScanJob, config: FitConfig, mesh: MeshConfig) -> dict | None:
    """The 'skipped' row of a scan already done with these settings, else None (it has to run)."""
    fit_doc, fit_done = _fit_state(job, config)
    if not fit_done:
        return None
    ply, meta = _mesh_paths(job, mesh)
    mesh_doc = _read_json(meta)
    if not (ply.is_file() and mesh_doc and mesh_doc.get("model_step") == fit_doc["step"]
            and mesh_doc.get("options") == _mesh_key(mesh)):
        return None
    try:
        _check_same_input(job, fit_doc.get("input", {}))
    except Siren3dError:
        return None  # the task says why, in the failed row
    return _row_from_files(job, fit_doc, mesh_doc, "skipped", wall_seconds=0.0)


def _one_line(e: BaseException) -> str:
    if isinstance(e, Siren3dError):
        text = str(e)
    elif isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        text = f"out of memory ({type(e).__name__}{': ' + str(e) if str(e) else ''})"
    else:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    line = " ".join(text.split())  # one line, whatever the message held
    return line if len(line) <= 400 else line[:397] + "..."


def process_scan(job: ScanJob, config: FitConfig, mesh: MeshConfig | None = None, load: LoadConfig | None = None,
                 *, threads: int | None = None) -> dict:
    """Load, fit (or resume, or reuse), mesh and export one scan; its summary row. Never raises for
    a bad scan: the row's status is 'failed' and its error the one-line reason.

    ``mesh``: how to mesh (``res`` names the file); ``load``: how to read the scan; ``threads``:
    torch threads.
    """
    import torch

    from .checkpoint import load_checkpoint
    from .io import load_scan
    from .meshing import export_mesh, extract_mesh
    from .system import resolve_device
    from .training import FitInterrupted, fit

    mesh = mesh or MeshConfig()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    run_dir = Path(job.run_dir)
    existed = run_dir.exists()
    model_path = run_dir / "model.pt"
    row_values: dict = {}
    try:
        skipped = finished_row(job, config, mesh)
        if skipped is not None:
            return skipped
        fit_doc, fit_done = _fit_state(job, config)
        device = resolve_device(config.device)
        ckpt = None
        if fit_done:
            _check_same_input(job, fit_doc.get("input", {}))
            ckpt = load_checkpoint(model_path, device=device)
            if ckpt.step != fit_doc["step"]:
                ckpt = None  # training it further was interrupted after fit.json: finish that first
        if ckpt is not None:
            model, normalization, support = ckpt.model, ckpt.normalization, ckpt.support
        else:
            resume = model_path.is_file()
            if resume:
                prior = load_checkpoint(model_path)  # the step it resumes from, and whose scan it was
                _check_same_input(job, prior.meta.get("input", {}))
                row_values["resumed_from"] = prior.step
                del prior
            scan = load_scan(job.input, load, seed=config.seed)
            result = fit(scan, config, run_dir, resume=resume, progress=False)
            del scan
            model, normalization, support = result.model, result.normalization, result.support
            fit_doc = _read_json(run_dir / "fit.json") or {}
        ply, meta = _mesh_paths(job, mesh)
        mesh_result = extract_mesh(model, normalization, mesh, support=support)  # trimmed as `siren3d mesh` trims
        export_mesh(mesh_result, ply, support_property=mesh.write_support)
        mesh_doc = {"siren3d": __version__, "mesh": str(ply), "model_step": fit_doc.get("step"),
                    "options": _mesh_key(mesh), "stats": mesh_result.stats.to_dict()}
        with atomic_output(meta) as tmp:
            tmp.write_text(json.dumps(mesh_doc, indent=1, default=_jsonable))
        return _row_from_files(job, fit_doc, json.loads(json.dumps(mesh_doc, default=_jsonable)), "done",
                               wall_seconds=round(time.perf_counter() - t0, 2), **row_values)
    except FitInterrupted as e:
        return _row(job, "interrupted", f"interrupted at step {e.step}/{e.steps}; the checkpoint resumes it",
                    wall_seconds=round(time.perf_counter() - t0, 2), **row_values)
    except KeyboardInterrupt:
        return _row(job, "interrupted", "interrupted", wall_seconds=round(time.perf_counter() - t0, 2),
                    **row_values)
    except Exception as e:  # noqa: BLE001 - any scan's failure is its row, never the batch's
        row = _row(job, "failed", _one_line(e), wall_seconds=round(time.perf_counter() - t0, 2), **row_values)
        if not isinstance(e, Siren3dError):
            row["traceback"] = traceback.format_exc()
        if not existed:
            try:
                run_dir.rmdir()  # only if empty: a failure leaves no folder that looks like a run
            except OSError:
                pass
        return row


# ---------------------------------------------------------------------------------------------
# Summary


def write_summary(out: str | os.PathLike, rows: Sequence[dict], info: dict | None = None) -> tuple[Path, Path]:
    """``out/summary.csv`` (the COLUMNS) and ``out/summary.json`` (info + rows), each atomically."""
    out = Path(out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    with atomic_output(csv_path) as tmp:
        tmp.write_text(buf.getvalue())
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    doc = {**(info or {}), "counts": counts, "rows": list(rows)}
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=_jsonable))
    return csv_path, json_path


# ---------------------------------------------------------------------------------------------
# Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise Siren3dError("siren3d batch needs Ray: pip install ray") from None
    return ray


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _RaySession:
    """ray.init for a batch: a new local instance (no dashboard, quiet, its own temp folder under
    /tmp, removed at the end) or, with ``address``, a running cluster. Shut down on exit, unless the
    caller had already connected (a notebook), whose connection is used and left as it was."""

    def __init__(self, address: str | None, num_cpus: int):
        self.address, self.num_cpus = address, num_cpus
        self.ray = _import_ray()
        self.owned = False
        self.temp_dir: str | None = None

    def __enter__(self):
        ray = self.ray
        if ray.is_initialized():
            return self
        kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            if self.address:
                self._check_reachable()
                ray.init(address=self.address, **kwargs)
            else:
                # "local": never attach to some other cluster found on this machine or in RAY_ADDRESS.
                self.temp_dir = tempfile.mkdtemp(prefix="siren3d-ray-", dir="/tmp")
                ray.init(address="local", num_cpus=self.num_cpus, object_store_memory=256 * 2**20,
                         _temp_dir=self.temp_dir, **kwargs)
        except BaseException as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            self.owned = True  # whatever ray.init left half-started is shut down
            self._cleanup()
            if not isinstance(e, Exception):
                raise  # Ctrl-C while Ray starts
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            hint = ""
            if "auth" in str(e).lower():
                hint = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token (the token in "
                        "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")
            elif self.address:
                hint = "; is it running (ray start --head) and reachable from here?"
            raise Siren3dError(f"cannot start or reach {where}: {_one_line(e).rstrip('.')}{hint}") from None
        self.owned = True
        return self

    def _check_reachable(self, timeout: float = 5.0) -> None:
        """Fail in seconds where nothing listens: Ray itself retries a dead address for many minutes."""
        try:
            from ray._private.services import canonicalize_bootstrap_address

            resolved = canonicalize_bootstrap_address(self.address)  # "auto": the cluster started here
        except ImportError:  # a Ray without this helper: let ray.init find out
            return
        if not resolved or resolved.startswith("ray://") or ":" not in resolved:
            return
        host, port = resolved.rsplit(":", 1)
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except (OSError, ValueError):
            raise ConnectionError(f"nothing answers at {resolved}") from None

    def _cleanup(self):
        if self.owned:
            self.ray.shutdown()
            self.owned = False
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def __exit__(self, *exc):
        self._cleanup()
        return False


class _SigtermAsInterrupt:
    """SIGTERM stops the batch the way Ctrl-C does (main thread only; Ray's own handler restored)."""

    def __enter__(self):
        self.old = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise KeyboardInterrupt
            self.old = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


def _task_failure(ray, job: ScanJob, e: Exception) -> dict:
    """The row of a task that Ray could not finish: the worker died, was killed for memory, cancelled."""
    if isinstance(e, ray.exceptions.TaskCancelledError):
        return _row(job, "interrupted", "interrupted")
    if isinstance(e, getattr(ray.exceptions, "OutOfMemoryError", ())):
        return _row(job, "failed", "out of memory: Ray stopped the worker to keep the node alive; "
                                   "use fewer --workers or a smaller --batch")
    if isinstance(e, ray.exceptions.WorkerCrashedError):
        return _row(job, "failed", "the worker process died (killed for memory, or a crash in native code)")
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return _row(job, "failed", " ".join(f"{type(e).__name__}: {first}".split())[:400])


def run(inputs: Iterable[str | os.PathLike], out: str | os.PathLike = "results", config: FitConfig | None = None,
        mesh: MeshConfig | None = None, load: LoadConfig | None = None, *, workers: int | None = None,
        threads: int | None = None, gpus: float = 0.0, address: str | None = None, progress: bool = True) -> list[dict]:
    """Fit and mesh every scan that ``inputs`` name (files, folders, globs) into ``out/<name>/``.

    ``config``: the fit settings (FitConfig; its device is set per task: CUDA with ``gpus`` > 0,
    else the CPU). ``mesh``: the mesh settings (MeshConfig, default: those of ``siren3d mesh``; ``res``
    names the file); ``load``: how scans are read (LoadConfig). ``threads``: torch threads and CPUs reserved per scan (default DEFAULT_THREADS);
    ``workers``: scans at once (default: the CPUs of this machine, or of the cluster, / threads);
    ``gpus``: GPUs reserved per scan (fractions share one). ``address``: a Ray cluster
    ("auto", "host:port"); None starts Ray on this machine with workers x threads CPUs.

    Returns the summary rows (see COLUMNS), also written to ``out/summary.csv`` and ``.json``.
    Raises BatchInterrupted (after writing the summary) on Ctrl-C / SIGTERM, and Siren3dError when
    nothing can run (no inputs, an unwritable ``out``, no cluster, GPUs asked of a cluster without).
    """
    config = config or FitConfig()
    config.validate()
    mesh, load = mesh or MeshConfig(), load or LoadConfig()
    mesh.validate()
    load.validate()
    threads = int(threads or DEFAULT_THREADS)
    if threads < 1 or (workers is not None and workers < 1):
        raise Siren3dError("workers and threads must be at least 1")
    if not (gpus >= 0 and math.isfinite(gpus)):
        raise Siren3dError("gpus must be 0 or more")
    jobs = plan(inputs, out)
    out = Path(out)
    check_output_dir(out)
    config = replace(config, device="cuda" if gpus > 0 else "cpu")

    rows: list[dict] = [_row(job, "pending") for job in jobs]
    todo = []
    for i, job in enumerate(jobs):
        done = finished_row(job, config, mesh)
        if done is not None:
            rows[i] = done
        else:
            todo.append(i)
    t_start = time.perf_counter()
    info = {"siren3d": __version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "address": address,
            "workers": workers, "threads": threads, "gpus": gpus, "fit": config.to_dict(), "mesh": _mesh_key(mesh)}

    def summary(**extra):
        info.update(seconds=round(time.perf_counter() - t_start, 2), **extra)
        return write_summary(out, rows, info)

    if not todo:
        summary(ray_start_seconds=0.0)
        return rows
    local_workers = workers or max(1, machine_cpus() // threads)
    try:
        with _RaySession(address, local_workers * threads) as session, _SigtermAsInterrupt():
            ray = session.ray
            info["ray_start_seconds"] = round(time.perf_counter() - t_start, 2)
            resources = ray.cluster_resources()
            if gpus > 0 and resources.get("GPU", 0) < gpus:
                raise Siren3dError(f"--gpus {gpus:g} per scan was asked, but the Ray cluster has "
                                   f"{resources.get('GPU', 0):g} GPUs")
            if workers is None:
                workers = max(1, int(resources.get("CPU", 1) // threads))
            info["workers"] = workers
            # max_calls=1: a fresh worker process per scan, so nothing one scan leaks reaches the next;
            # max_retries=0: a scan that killed its worker fails once (rerun the command to retry it).
            task = ray.remote(num_cpus=threads, num_gpus=gpus, max_calls=1, max_retries=0)(process_scan)
            config_ref = ray.put(config)
            _drive(ray, task, jobs, todo, rows, config_ref, mesh, load, threads, workers, progress, summary)
    except KeyboardInterrupt:  # while Ray started (_drive handles the rest)
        summary(interrupted=True)
        raise BatchInterrupted(rows) from None
    summary()
    return rows


def _drive(ray, task, jobs, todo, rows, config_ref, mesh, load, threads, workers, progress, summary):
    """Keep ``workers`` tasks in flight until every scan has its row; on Ctrl-C cancel them, give them
    INTERRUPT_GRACE_S to checkpoint, write the summary and raise BatchInterrupted."""
    from tqdm.auto import tqdm

    pending = list(reversed(todo))
    inflight: dict = {}
    counts = {"done": 0, "failed": 0}
    skipped = len(jobs) - len(todo)
    # Not a terminal (CI logs, files): a line per finished scan instead of a redrawn bar.
    interactive = sys.stderr.isatty()
    bar = tqdm(total=len(jobs), initial=skipped, unit="scan", desc="batch", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, smoothing=0.1, mininterval=0.2 if interactive else 0,
               miniters=None if interactive else 1,
               maxinterval=10 if interactive else float("inf"))

    def show(refresh: bool = interactive):
        bar.set_postfix_str(f"done {counts['done']}, skipped {skipped}, failed {counts['failed']}, "
                            f"running {len(inflight)}", refresh=refresh)

    def collect(ref):
        i = inflight.pop(ref)
        try:
            rows[i] = ray.get(ref)
        except ray.exceptions.RayError as e:
            rows[i] = _task_failure(ray, jobs[i], e)
        return rows[i]

    last_summary = time.perf_counter()
    try:
        show()
        while pending or inflight:
            while pending and len(inflight) < workers:
                i = pending.pop()
                inflight[task.remote(jobs[i], config_ref, mesh, load, threads=threads)] = i
                show()
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                row = collect(ref)
                counts["failed" if row["status"] == "failed" else "done"] += 1
                show(refresh=False)
                bar.update(1)
            if time.perf_counter() - last_summary > SUMMARY_EVERY_S:
                summary()
                last_summary = time.perf_counter()
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupting: {len(inflight)} running scan(s) save their checkpoints...", file=sys.stderr)
        refs = list(inflight)
        for ref in refs:
            ray.cancel(ref)  # a KeyboardInterrupt in the task: fit saves a checkpoint and stops
        try:
            ray.wait(refs, num_returns=len(refs), timeout=INTERRUPT_GRACE_S)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: do not wait
        for ref in refs:
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                collect(ref)
            else:
                ray.cancel(ref, force=True)
                i = inflight.pop(ref)
                rows[i] = _row(jobs[i], "interrupted", "stopped before it saved a checkpoint")
        summary(interrupted=True)
        raise BatchInterrupted(rows) from None
    finally:
        bar.close()
