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

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _LineFormatter(logging.Formatter):
    def format(self, record):
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("siren3d")
    if not any(getattr(h, "_siren3d", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
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
      siren3d mesh --res 256        # mesh the most recent run -> runs/scan/mesh-256.ply
    """
    _setup_logging(verbose)


@main.command()
@click.argument("scan", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/<scan name>].")
@click.option("--preset", type=click.Choice(["paper"]), default=None,
              help="Named settings; 'paper' reproduces the SIREN paper (slow on a CPU).")
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
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from its checkpoint.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=500, show_default=True,
              help="Steps between checkpoints (0: only at the end).")
@click.option("--max-points", type=click.IntRange(min=16), default=None,
              help="Subsample larger scans to this many points [default: 2,000,000].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def fit(scan: Path, out: Path | None, preset, steps, batch, lr, seed, device, width, hidden_layers, w0,
        init, resume, checkpoint_every, max_points, quiet) -> None:
    """Fit a SIREN signed distance field to SCAN (PLY, XYZ, PTS, PCD, NPY/NPZ, OBJ, OFF, STL)."""
    from .io import DEFAULT_MAX_POINTS, load_scan
    from .runs import default_run_dir
    from .training import FitInterrupted, config_from_preset
    from .training import fit as run_fit

    config = config_from_preset(preset, steps=steps, batch=batch, lr=lr, seed=seed, device=device,
                                width=width, hidden_layers=hidden_layers, w0=w0, init=init,
                                checkpoint_every=checkpoint_every)
    config.validate()
    run_dir = out or default_run_dir(scan)
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


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--run", "run", type=click.Path(path_type=Path), default=None,
              help="Run folder or model.pt [default: the most recent run under runs/].")
@click.option("--res", type=click.IntRange(min=8), default=256, show_default=True,
              help="Grid samples per axis.")
@click.option("--backend", type=click.Choice(["mcubes", "skimage"]), default="mcubes", show_default=True,
              help="Marching cubes implementation.")
@click.option("--level", type=float, default=0.0, show_default=True,
              help="Iso level in scan units (0: the surface; >0: an offset surface outside).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output mesh (.ply .obj .stl .off .glb) [default: RUN/mesh-RES.ply].")
@_user_errors
def mesh(model: Path | None, run: Path | None, res: int, backend: str, level: float, output: Path | None) -> None:
    """Extract the surface of a fitted field as a mesh, in the scan's own coordinates."""
    from .checkpoint import load_checkpoint
    from .meshing import EXPORT_SUFFIXES, export_mesh, extract_mesh
    from .runs import resolve_model

    model_path = resolve_model(model or run)
    output = output or model_path.parent / f"mesh-{res}.ply"
    if output.suffix.lower() not in EXPORT_SUFFIXES:
        raise Siren3dError(f"cannot write '{output.suffix or '(no extension)'}' meshes; use one of "
                           f"{' '.join(EXPORT_SUFFIXES)}", output)
    ckpt = load_checkpoint(model_path)
    result = extract_mesh(ckpt.model, ckpt.normalization, res=res, backend=backend, level=level)
    export_mesh(result, output)
    s = result.stats
    click.echo(f"mesh res {res}: {s['vertices']:,} vertices, {s['faces']:,} faces, "
               f"{s['evaluations']:,} evaluations in {s['seconds']:.1f} s -> {output}", err=True)


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


if __name__ == "__main__":  # pragma: no cover
    main()
