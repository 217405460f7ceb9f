"""The ``siren3d`` command: a thin layer of click commands over the library API.

User errors (Siren3dError) become one line on stderr and exit status 2; Ctrl-C during ``fit``
saves a resumable checkpoint and exits 130 with the command that resumes it.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from dataclasses import fields, is_dataclass
from pathlib import Path

import click

from ._version import __version__
from .config import (QUALITY_LEVELS, FitConfig, LoadConfig, MeshConfig, ScoreConfig, describe_preset, fit_config,
                     with_overrides)
from .errors import Siren3dError
from .runs import resolve_model

EXIT_FAILED = 1  # siren3d batch: some scans failed (the others are done)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: setting path ('lr', 'model.w0') -> its option ('--lr', '--w0'), filled as the options are made
_FLAGS: dict[str, str] = {}


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
            flag = _FLAGS.get(getattr(e, "setting", None) or "")
            click.echo(f"error: {e}" + (f" (option {flag})" if flag else ""), err=True)
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


# --------------------------------------------------------------------------------------------
# Options made from the settings' dataclass fields (siren3d.config): one default, one help text


class _Parsed(click.ParamType):
    """A click type from a setting's ``parse`` function (ValueError -> a usage error)."""

    def __init__(self, parse, metavar: str | None):
        self.parse, self.name = parse, metavar or "VALUE"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _click_type(f, default):
    m = f.metadata
    if m.get("parse"):
        return _Parsed(m["parse"], m.get("metavar"))
    if m.get("choices"):
        return click.Choice(list(m["choices"]))
    # Ranges are checked by click (a usage error); 'positive' by siren3d.config.validate (one error line).
    lo, hi = m.get("min"), m.get("max")
    kind = type(default)
    if kind is int:
        return click.IntRange(min=lo, max=hi) if lo is not None or hi is not None else int
    if kind is float:
        return click.FloatRange(min=lo, max=hi) if lo is not None or hi is not None else float
    return str


def _setting_options(cfg, group: str, prefix: str = "", path: str = "", skip: tuple = ()) -> list:
    """click options for the command-line settings of ``cfg`` (nested configs recurse) but those in
    ``skip``; each option's Python name is GROUP__PATH (e.g. fit__model__width) and its default None
    (= not given)."""
    options = []
    for f in fields(cfg):
        m, default = f.metadata, getattr(cfg, f.name)
        if not m.get("cli", True) or f.name in skip:
            continue
        if is_dataclass(default):
            options += _setting_options(default, group, prefix + m.get("prefix", ""), f"{path}{f.name}__")
            continue
        flag = "--" + prefix + (m.get("flag") or f.name).replace("_", "-")
        name = f"{group}__{path}{f.name}"
        _FLAGS[f"{path}{f.name}".replace("__", ".")] = flag
        if isinstance(default, bool):
            if default:
                raise TypeError(f"setting {f.name}: only flags that default to False become options")
            options.append(click.option(flag, name, is_flag=True, default=None, help=m["help"]))
            continue
        options.append(click.option(flag, name, type=_click_type(f, default), default=None,
                                    metavar=m.get("metavar"), help=f"{m['help']}  [default: {_shown(default)}]"))
    return options


def _shown(default) -> str:
    if default is None:
        return "none"
    if isinstance(default, float):
        return f"{default:g}"
    return f"{default:,}" if isinstance(default, int) else str(default)


def setting_options(cfg, group: str, skip: tuple = ()):
    """Decorator: every command-line setting of the config instance ``cfg`` as an option (but ``skip``)."""

    def decorate(fn):
        for option in reversed(_setting_options(cfg, group, skip=skip)):
            fn = option(fn)
        return fn

    return decorate


def _group(settings: dict, group: str) -> dict:
    """The options of one group that were given, keyed by setting path (model__width)."""
    head = f"{group}__"
    return {k[len(head):]: v for k, v in settings.items() if k.startswith(head) and v is not None}


@main.command()
@click.argument("scan", type=click.Path(path_type=Path, readable=False))  # load_scan says what is wrong
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/<scan name>].")
@click.option("--quality", type=click.Choice(list(QUALITY_LEVELS)), default="default", show_default=True,
              help="Time against detail: " + "; ".join(f"'{q}' {describe_preset(q)}" for q in QUALITY_LEVELS
                                                     if q != "default") + ".")
@click.option("--preset", type=click.Choice(["paper"]), default=None,
              help="'paper' reproduces the SIREN paper's settings (slow on a CPU); overrides --quality.")
@setting_options(FitConfig(), "fit")
@setting_options(LoadConfig(), "load")
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from its checkpoint.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_user_errors
def fit(scan: Path, out: Path | None, quality: str, preset: str | None, resume: bool, quiet: bool, **settings) -> None:
    """Fit a SIREN signed distance field to SCAN (PLY, XYZ, PTS, PCD, NPY/NPZ, LAS/LAZ, E57, OBJ, OFF, STL)."""
    from .files import check_output_dir
    from .io import load_scan
    from .runs import default_run_dir
    from .system import resolve_device
    from .training import FitInterrupted, check_step_memory
    from .training import fit as run_fit

    config = fit_config(preset or quality, **_group(settings, "fit"))
    load = with_overrides(LoadConfig(), _group(settings, "load"))
    run_dir = out or default_run_dir(scan)
    # Refuse what cannot work before spending time on loading the scan (fit() checks again).
    check_output_dir(run_dir)
    check_step_memory(config, resolve_device(config.device))
    t0 = time.perf_counter()
    loaded = load_scan(scan, load, seed=config.seed)
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
               f"(surface {final[1]:.2e}, normal {final[2]:.2e}, eikonal {final[3]:.3f})", err=True)
    click.echo(f"wrote {result.run_dir}/model.pt, fit.json, loss.png", err=True)
    click.echo(f"next: siren3d mesh --run {result.run_dir}", err=True)


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--run", "run", type=click.Path(path_type=Path), default=None,
              help="Run folder or model.pt [default: the most recent run under runs/].")
@setting_options(MeshConfig(), "mesh")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output mesh (.ply .obj .stl .off .glb) [default: RUN/mesh-RES.ply].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@_user_errors
def mesh(model: Path | None, run: Path | None, output: Path | None, quiet: bool, **settings) -> None:
    """Extract the surface of a fitted field as a mesh, in the scan's own coordinates.

    \b
    --level L meshes the offset surface at distance L (scan units) outside the surface (inside for L < 0).
    """
    from .checkpoint import load_checkpoint
    from .meshing import EXPORT_SUFFIXES, export_mesh, extract_mesh
    from .system import resolve_device

    config = with_overrides(MeshConfig(), _group(settings, "mesh"))
    config.validate()
    model_path = resolve_model(model or run)
    output = output or model_path.parent / f"mesh-{config.res}.ply"
    if output.suffix.lower() not in EXPORT_SUFFIXES:
        raise Siren3dError(f"cannot write '{output.suffix or '(no extension)'}' meshes; use one of "
                           f"{' '.join(EXPORT_SUFFIXES)}", output)
    ckpt = load_checkpoint(model_path, device=resolve_device(config.device))
    result = extract_mesh(ckpt.model, ckpt.normalization, config, support=ckpt.support,
                          progress=not quiet and sys.stderr.isatty())
    if ckpt.support is None and config.trim == "auto":
        click.echo("note: this model file has no scan support (written by an older siren3d), so nothing was "
                   "trimmed; refit to trim unsupported surface", err=True)
    export_mesh(result, output, support_property=config.write_support)
    click.echo(summary_line(result.stats), err=True)
    err = result.stats.level_error
    if err and "after_mean" in err:
        click.echo(f"refined: mean |f| at vertices {err['before_mean']:.2e} -> {err['after_mean']:.2e} scan units "
                   f"(max {err['before_max']:.2e} -> {err['after_max']:.2e})", err=True)
    click.echo(f"wrote {output}", err=True)


def summary_line(s) -> str:
    """One line for a MeshStats."""
    def count(n: int, word: str) -> str:
        return f"{n:,} {word}{'s' if n != 1 else ''}"

    return (f"mesh res {s.res} ({s.method}): {s.evaluations:,} evaluations "
            f"({s.evaluations / s.dense_evaluations:.1%} of dense) in {s.seconds:.1f} s; "
            f"{s.vertices:,} vertices, {s.faces:,} faces, {count(s.components, 'piece')}"
            + (f" ({s.dropped_components} small dropped)" if s.dropped_components else "")
            + (f" ({count(s.inner_shells_dropped, 'inner shell')} dropped; --keep-inner keeps them)"
               if s.inner_shells_dropped else "")
            + f", {'watertight' if s.watertight else 'open (not watertight)'}"
            + (f"; trimmed {s.trimmed_fraction:.1%} of the area ({s.trimmed_area:.4g} square scan units, "
               f"{count(s.trimmed_regions, 'unsupported region')}; --trim off keeps it)" if s.trimmed_regions else ""))


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
@setting_options(ScoreConfig(), "score")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@_user_errors
def eval_(mesh_path: Path, ref: Path, as_json: bool, **settings) -> None:
    """Score MESH against a reference: Chamfer-L1, Hausdorff, normal consistency, F-score, topology.

    Distances are in the files' units and as fractions of the reference's bounding-box diagonal.
    """
    import json

    from .metrics import format_table, score_mesh

    config = with_overrides(ScoreConfig(), _group(settings, "score"))
    scores = score_mesh(mesh_path, ref, n_samples=config.samples, seed=config.seed)
    click.echo(json.dumps(scores) if as_json else format_table(scores))


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="SCANS...")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="Results folder: <out>/<scan name>/ per scan, <out>/summary.csv and .json.")
@click.option("--quality", type=click.Choice(list(QUALITY_LEVELS)), default="default", show_default=True,
              help="Time against detail, as in 'siren3d fit'.")
@setting_options(FitConfig(), "fit", skip=("device",))
@setting_options(MeshConfig(), "mesh", skip=("device",))
@setting_options(LoadConfig(), "load")
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
def batch(inputs, out: Path, quality: str, workers, threads, gpus, address, quiet, **settings) -> None:
    """Fit and mesh many scans, one Ray task each: files, folders (their scan files) and globs.

    Every option of 'siren3d fit' and 'siren3d mesh' applies to each scan.

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

    config = fit_config(quality, **_group(settings, "fit"))
    mesh_config = with_overrides(MeshConfig(), _group(settings, "mesh"))
    load = with_overrides(LoadConfig(), _group(settings, "load"))
    t0 = time.perf_counter()
    try:
        rows = run(inputs, out, config, mesh_config, load, workers=workers, threads=threads, gpus=gpus,
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
