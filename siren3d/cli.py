"""The ``siren3d`` command: a thin layer of click commands over the library API.

User errors (Siren3dError) become one line on stderr and exit status 2; Ctrl-C during ``fit``
saves a resumable checkpoint and exits 130 with the command that resumes it.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import Siren3dError
from .meshing import DEFAULT_MIN_COMPONENT, DEFAULT_REFINE
from .runs import resolve_model

EXIT_FAILED = 1  # siren3d batch: some scans failed (the others are done)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _LineFormatter(logging.Formatter):
    def format(self, record):
        return f"{record.levelname.lower()}: {record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each message (not the one at set-up)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("siren3d")
    if not any(getattr(h, "_siren3d", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_LineFormatter())
        handler._siren3d = True
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _user_errors(fn):
    """Run a command; a Siren3dError becomes 'error: ...' and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Siren3dError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="siren3d")
@click.option("-v", "--verbose", is_flag=True, help="More messages.")
def main(verbose: bool) -> None:
    """Turn a 3D scan into a watertight mesh through a neural signed distance field (SIREN).

    \b
    Typical use:
      siren3d fit scan.ply          # train; writes runs/scan/ (model.pt, fit.json, loss.png)
      siren3d mesh --res 512        # mesh the most recent run -> runs/scan/mesh-512.ply
      siren3d view                  # slice the learned distance field (--screenshot out.png: no window)
      siren3d eval runs/scan/mesh-512.ply --ref scan.ply    # Chamfer, normals, F-score, pieces
      siren3d batch scans/ --out results/   # many scans, one Ray task each -> results/summary.csv
    """
    _setup_logging(verbose)


@main.command()
@click.argument("scan", type=click.Path(path_type=Path, readable=False))  # load_scan says what is wrong
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/<scan name>].")
@click.option("--quality", type=click.Choice(["fast", "default", "high"]), default="default", show_default=True,
              help="Time against detail: 'fast' half the points per step, 'high' 3.3x the steps and 2x the batch.")
@click.option("--preset", type=click.Choice(["paper"]), default=None,
              help="'paper' reproduces the SIREN paper's settings (slow on a CPU); overrides --quality.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Scan points per step.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (Adam).")
@click.option("--seed", type=int, default=None, help="Random seed (CPU runs are reproducible).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=None, help="Units per hidden layer.")
@click.option("--hidden-layers", type=click.IntRange(min=0), default=None, help="Hidden sine layers.")
@click.option("--w0", type=float, default=None, help="First-layer frequency factor (paper: 30).")
@click.option("--init", type=click.Choice(["siren", "sphere"]), default=None,
              help="'siren': the paper's initialization; 'sphere': f = SIREN + sphere distance prior.")
@click.option("--grad", type=click.Choice(["auto", "fused", "fused-bf16", "analytic", "autograd"]), default=None,
              help="How grad f and the backward pass are computed (auto: fused-bf16 on CPUs with native bf16, "
                   "else fused).  [default: auto]")
@click.option("--noise", type=click.Choice(["auto", "low", "high"]), default=None,
              help="Treat the scan as clean (low) or noisy (high: trust normals more); auto measures it.  "
                   "[default: auto]")
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from its checkpoint.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=500, show_default=True,
              help="Steps between checkpoints (0: only at the end).")
@click.option("--max-points", type=click.IntRange(min=16), default=None,
              help="Subsample larger scans to this many points [default: 2,000,000].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def fit(scan: Path, out: Path | None, quality, preset, steps, batch, lr, seed, device, width, hidden_layers, w0,
        init, grad, noise, resume, checkpoint_every, max_points, quiet) -> None:
    """Fit a SIREN signed distance field to SCAN (PLY, XYZ, PTS, PCD, NPY/NPZ, OBJ, OFF, STL)."""
    from .io import DEFAULT_MAX_POINTS, load_scan
    from .runs import default_run_dir
    from .training import FitInterrupted, check_output_dir, check_step_memory, config_from_preset, resolve_device
    from .training import fit as run_fit

    try:
        named = preset or (None if quality == "default" else quality)
        config = config_from_preset(named, steps=steps, batch=batch, lr=lr, seed=seed, device=device, noise=noise,
                                    width=width, hidden_layers=hidden_layers, w0=w0, init=init, grad=grad,
                                    checkpoint_every=checkpoint_every)
    except ValueError as e:  # e.g. --w0 0: the model settings say what is wrong
        raise Siren3dError(f"invalid settings: {e}") from None
    config.validate()
    run_dir = out or default_run_dir(scan)
    # Refuse what cannot work before spending time on loading the scan (fit() checks again).
    check_output_dir(run_dir)
    check_step_memory(config, resolve_device(config.device))
    t0 = time.perf_counter()
    loaded = load_scan(scan, max_points=max_points or DEFAULT_MAX_POINTS, seed=config.seed)
    click.echo(f"loaded {scan}: {len(loaded):,} points"
               f"{' (normals estimated)' if loaded.normals_estimated else ''} in {time.perf_counter() - t0:.1f} s",
               err=True)
    try:
        result = run_fit(loaded, config, run_dir, resume=resume, progress=not quiet)
    except FitInterrupted as e:
        click.echo(f"interrupted at step {e.step}/{e.steps}; checkpoint saved to {e.path}\n"
                   f"resume with: siren3d fit {scan} --out {run_dir} --resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    final = result.history[-1]
    click.echo(f"fitted {result.config.steps} steps in {result.seconds:.1f} s "
               f"({result.points_per_second / 1e3:.0f}k points/s); loss {final[0]:.4g} "
               f"(surface {final[1]:.2e}, normal {final[2]:.3f}, eikonal {final[3]:.3f})", err=True)
    click.echo(f"wrote {result.run_dir}/model.pt, fit.json, loss.png", err=True)
    click.echo(f"next: siren3d mesh --run {result.run_dir}", err=True)


def _parse_bbox(ctx, param, value):
    if value is None:
        return None
    try:
        nums = tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        nums = ()
    if len(nums) != 6:
        raise click.BadParameter("expected six numbers: xmin,ymin,zmin,xmax,ymax,zmax (scan units)")
    return nums


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--run", "run", type=click.Path(path_type=Path), default=None,
              help="Run folder or model.pt [default: the most recent run under runs/].")
@click.option("--res", type=click.IntRange(min=8), default=256, show_default=True,
              help="Grid samples along the box's longest side.")
@click.option("--method", type=click.Choice(["sparse", "dense"]), default="sparse", show_default=True,
              help="'sparse': evaluate only near the surface, coarse to fine; 'dense': every grid sample.")
@click.option("--backend", type=click.Choice(["mcubes", "skimage"]), default="mcubes", show_default=True,
              help="Marching cubes implementation.")
@click.option("--level", type=float, default=0.0, show_default=True,
              help="Iso level in scan units (0: the surface; >0: an offset surface outside).")
@click.option("--refine", type=click.IntRange(min=0, max=10), default=DEFAULT_REFINE, show_default=True,
              help="Newton steps moving each vertex onto the level set (0: off).")
@click.option("--min-component", type=click.FloatRange(min=0, max=1), default=DEFAULT_MIN_COMPONENT,
              show_default=True, help="Drop pieces with fewer faces than this fraction of the largest (0: keep all).")
@click.option("--keep-inner", is_flag=True,
              help="Keep closed pieces inside the main surface (dropped by default: a scanner cannot see them).")
@click.option("--pad", type=click.FloatRange(min=0, max=10), default=0.0, show_default=True,
              help="Grow the meshing box by this fraction on every side (for surfaces that touch it).")
@click.option("--bbox", callback=_parse_bbox, default=None, metavar="X0,Y0,Z0,X1,Y1,Z1",
              help="Mesh this box, in scan units, instead of the fitted box.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output mesh (.ply .obj .stl .off .glb) [default: RUN/mesh-RES.ply].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the network is evaluated (auto: CUDA when available).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_user_errors
def mesh(model: Path | None, run: Path | None, res: int, method: str, backend: str, level: float, refine: int,
         min_component: float, keep_inner: bool, pad: float, bbox, output: Path | None, device: str,
         quiet: bool) -> None:
    """Extract the surface of a fitted field as a mesh, in the scan's own coordinates."""
    from .checkpoint import load_checkpoint
    from .meshing import EXPORT_SUFFIXES, export_mesh, extract_mesh
    from .training import resolve_device

    model_path = resolve_model(model or run)
    output = output or model_path.parent / f"mesh-{res}.ply"
    if output.suffix.lower() not in EXPORT_SUFFIXES:
        raise Siren3dError(f"cannot write '{output.suffix or '(no extension)'}' meshes; use one of "
                           f"{' '.join(EXPORT_SUFFIXES)}", output)
    ckpt = load_checkpoint(model_path, device=resolve_device(device))
    result = extract_mesh(ckpt.model, ckpt.normalization, res=res, method=method, backend=backend, level=level,
                          refine=refine, min_component=min_component, drop_inner=not keep_inner, pad=pad, bbox=bbox,
                          progress=not quiet and sys.stderr.isatty())
    export_mesh(result, output)
    s = result.stats
    click.echo(f"mesh res {res} ({method}): {s['evaluations']:,} evaluations "
               f"({s['evaluations'] / s['dense_evaluations']:.1%} of dense) in {s['seconds']:.1f} s; "
               f"{s['vertices']:,} vertices, {s['faces']:,} faces, {s['components']} "
               f"component{'s' if s['components'] != 1 else ''}"
               + (f" ({s['dropped_components']} small dropped)" if s["dropped_components"] else "")
               + (f" ({s['inner_shells_dropped']} inner shell{'s' if s['inner_shells_dropped'] != 1 else ''} "
                  f"dropped; --keep-inner keeps them)" if s["inner_shells_dropped"] else "")
               + f", {'watertight' if s['watertight'] else 'NOT watertight'}", err=True)
    err = s.get("level_error")
    if err and "after_mean" in err:
        click.echo(f"refined: mean |f| at vertices {err['before_mean']:.2e} -> {err['after_mean']:.2e} scan units "
                   f"(max {err['before_max']:.2e} -> {err['after_max']:.2e})", err=True)
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--run", "run", type=click.Path(path_type=Path), default=None,
              help="Run folder or model.pt [default: the most recent run under runs/].")
@click.option("--screenshot", type=click.Path(path_type=Path), default=None,
              help="Render offscreen (no window) and write this image (.png .jpg .bmp .tif).")
@click.option("--slice", "slices", multiple=True, metavar="AXIS=VALUE",
              help="Axis slice at a coordinate in scan units, e.g. z=0.1; repeatable "
                   "[default: x, y and z through the centre of the box].")
@click.option("--size", default="1024x768", show_default=True, metavar="WxH",
              help="Window or image size in pixels.")
@click.option("--res", type=click.IntRange(min=2, max=4096), default=256, show_default=True,
              help="Samples per side of each slice (the field is evaluated at every one).")
@click.option("--level", type=float, default=0.0, show_default=True,
              help="Iso level of the surface shown, in scan units (the slider's start).")
@click.option("--eikonal", is_flag=True, help="Colour slices by Eikonal error |‖∇f‖ − 1| instead of distance.")
@click.option("--view", "view", type=click.Choice(["iso", "x", "y", "z"]), default="iso", show_default=True,
              help="Camera: isometric, or looking down an axis.")
@click.option("--no-surface", is_flag=True, help="Do not show the zero-level surface.")
@click.option("--no-points", is_flag=True, help="Do not show the input points.")
@_user_errors
def view(model: Path | None, run: Path | None, screenshot: Path | None, slices, size: str, res: int, level: float,
         eikonal: bool, view: str, no_surface: bool, no_points: bool) -> None:
    """Explore a fitted field: slices coloured by signed distance, contours, surface, input points.

    \b
    Opens an interactive window (keys: x y z o m i l g h; h shows the list), or with --screenshot
    renders the same scene offscreen into an image, e.g.
      siren3d view --screenshot field.png --slice z=0.1 --size 1024x768
    """
    from .runs import resolve_model
    from .viewer.app import view_run

    model_path = resolve_model(model or run)
    out = view_run(model_path, screenshot=screenshot, slices=slices, size=size, res=res, level=level,
                   eikonal=eikonal, view=view, surface=not no_surface, points=not no_points,
                   echo=lambda msg: click.echo(msg, err=True))
    if out is not None:
        click.echo(f"wrote {out}", err=True)


@main.command("eval")
@click.argument("mesh_path", metavar="MESH", type=click.Path(path_type=Path))
@click.option("--ref", "ref", required=True, type=click.Path(path_type=Path),
              help="Reference: a mesh (sampled on its faces) or a point cloud with normals.")
@click.option("--samples", type=click.IntRange(min=100), default=200_000, show_default=True,
              help="Points sampled on each surface.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the surface sampling.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@_user_errors
def eval_(mesh_path: Path, ref: Path, samples: int, seed: int, as_json: bool) -> None:
    """Score MESH against a reference: Chamfer-L1, Hausdorff, normal consistency, F-score, topology.

    Distances are in the files' units and as fractions of the reference's bounding-box diagonal.
    """
    import json

    from .metrics import evaluate, format_table

    scores = evaluate(mesh_path, ref, n_samples=samples, seed=seed)
    click.echo(json.dumps(scores) if as_json else format_table(scores))


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="SCANS...")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Results folder: <out>/<scan name>/ per scan, <out>/summary.csv and .json.")
# Fit and mesh settings: FitConfig overrides and extract_mesh keyword arguments, as in fit and mesh.
@click.option("--quality", type=click.Choice(["fast", "default", "high"]), default="default", show_default=True,
              help="Time against detail, as in 'siren3d fit'.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Scan points per step.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (Adam).")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Units per hidden layer.")
@click.option("--hidden-layers", type=click.IntRange(min=0), default=None, help="Hidden sine layers.")
@click.option("--init", type=click.Choice(["siren", "sphere"]), default=None, help="Initialization, as in fit.")
@click.option("--res", type=click.IntRange(min=8), default=256, show_default=True,
              help="Mesh grid samples along the box's longest side.")
# Ray
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Scans at once [default: CPUs / threads, of this machine or the cluster].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads (and CPUs reserved) per scan [default: 1].")
@click.option("--gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs reserved per scan (0.5: two scans share one); >0 fits and meshes on CUDA.")
@click.option("--address", default=None,
              help="A running Ray cluster: 'auto' or HOST:PORT (see 'ray start --head') "
                   "[default: Ray on this machine].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def batch(inputs, out: Path, quality, steps, batch, lr, seed, width, hidden_layers, init, res, workers, threads,
          gpus, address, quiet) -> None:
    """Fit and mesh many scans, one Ray task each: files, folders (their scan files) and globs.

    \b
    Each scan gets OUT/<name>/ (model.pt, fit.json, mesh-RES.ply, mesh-RES.json); OUT/summary.csv
    and summary.json have a row per scan. Rerunning the same command continues it: finished scans
    are skipped, interrupted fits resume, failed scans are tried again. Exit status 1 when a scan
    failed, 130 when interrupted (Ctrl-C).
    \b
      siren3d batch scans/ more/*.ply --out results --res 512
      siren3d batch scans/ --address auto      # a cluster started with 'ray start --head'
    """
    from .batch import BatchInterrupted, run
    from .training import config_from_preset

    try:
        config = config_from_preset(None if quality == "default" else quality, steps=steps, batch=batch, lr=lr,
                                    seed=seed, width=width, hidden_layers=hidden_layers, init=init)
    except ValueError as e:
        raise Siren3dError(f"invalid settings: {e}") from None
    t0 = time.perf_counter()
    try:
        rows = run(inputs, out, config, {"res": res}, workers=workers, threads=threads, gpus=gpus,
                   address=address, progress=not quiet)
    except BatchInterrupted as e:
        click.echo(f"{e}; wrote {out}/summary.csv; the same command continues the batch", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # before any scan started
        click.echo("interrupted before any scan started", err=True)
        sys.exit(EXIT_INTERRUPTED)
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        click.echo(f"failed: {r['name']}: {r['error']}", err=True)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    click.echo(f"{len(rows)} scans in {time.perf_counter() - t0:.1f} s: {counts['done']} done, "
               f"{counts['skipped']} skipped, {counts['failed']} failed; wrote {out}/summary.csv", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
