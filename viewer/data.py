"""What the viewer shows besides the field: the run's zero-level surface and its input points."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siren3d.checkpoint import load_checkpoint
from siren3d.errors import Siren3dError
from siren3d.model import Siren
from siren3d.normalization import Normalization

log = logging.getLogger(__name__)

#: Input points drawn at most (a random, seeded subset of the scan).
DISPLAY_POINTS = 100_000
#: Grid resolution for the zero-level surface when the run has no mesh-*.ply.
SURFACE_RES = 96


@dataclass
class RunView:
    """A loaded run, ready to display.

    surface: (vertices (V, 3) float64 scan coordinates, faces (F, 3) int64) or None.
    points: (N, 3) float64 scan coordinates (subsampled) or None.
    """

    model: Siren
    normalization: Normalization
    model_path: Path
    surface: tuple[np.ndarray, np.ndarray] | None = None
    surface_source: str = ""
    points: np.ndarray | None = None
    points_source: str = ""
    notes: list[str] = field(default_factory=list)
    support: object = None  # the scan's siren3d.support.ScanSupport, when model.pt has it

    @property
    def field(self):
        """What the viewer slices: the field as a distance in the whole box (siren3d.field.ScanField)
        when the model has the scan's support, else the network alone."""
        from siren3d.field import ScanField

        return self.model if self.support is None else ScanField(self.model, self.support)


def newest_mesh(run_dir: Path) -> Path | None:
    """The most recently written ``mesh-*.ply`` of a run folder (from ``siren3d mesh``), if any."""
    meshes = sorted(Path(run_dir).glob("mesh-*.ply"), key=lambda p: p.stat().st_mtime)
    return meshes[-1] if meshes else None


def input_path(run_dir: Path, meta: dict) -> str | None:
    """The scan a run was fitted to, as recorded in its fit.json (else in model.pt's metadata)."""
    doc = None
    fit_json = Path(run_dir) / "fit.json"
    if fit_json.is_file():
        try:
            doc = json.loads(fit_json.read_text())
        except (OSError, ValueError):
            doc = None
    for source in (doc, meta):
        path = (source or {}).get("input", {}).get("path") if isinstance(source, dict) else None
        if isinstance(path, str) and path:
            return path
    return None


def load_surface(model: Siren, normalization: Normalization, run_dir: Path, res: int = SURFACE_RES,
                 notes: list[str] | None = None, support=None) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """The run's newest mesh-*.ply (unless older than its model.pt), else the zero level set extracted
    at ``res`` (trimmed as ``siren3d mesh`` trims it, given the model's ``support``); (None, "") if neither."""
    notes = notes if notes is not None else []
    mesh_file = newest_mesh(run_dir)
    model_file = Path(run_dir) / "model.pt"
    if mesh_file is not None and model_file.exists() and mesh_file.stat().st_mtime < model_file.stat().st_mtime:
        notes.append(f"{mesh_file}: older than model.pt (the fit went on since); extracting the surface instead")
        mesh_file = None
    if mesh_file is not None:
        try:
            import trimesh

            tm = trimesh.load(mesh_file, process=False, force="mesh")
            if len(tm.faces):
                return (np.asarray(tm.vertices, dtype=np.float64), np.asarray(tm.faces, dtype=np.int64)), str(mesh_file)
            notes.append(f"{mesh_file}: has no faces; extracting the surface instead")
        except Exception as e:  # a damaged mesh file must not stop the viewer
            notes.append(f"{mesh_file}: cannot be read ({type(e).__name__}: {e}); extracting the surface instead")
    from siren3d.meshing import extract_mesh

    try:
        mesh = extract_mesh(model, normalization, res=res, support=support)
    except Siren3dError as e:
        notes.append(f"no zero-level surface: {e}")
        return None, ""
    return (mesh.vertices, mesh.faces), f"extracted at res {res}"


def load_points(path: str | None, max_points: int = DISPLAY_POINTS, notes: list[str] | None = None
                ) -> tuple[np.ndarray | None, str]:
    """The input scan's points (subsampled, seeded) if the file still exists; (None, why) otherwise."""
    notes = notes if notes is not None else []
    if not path:
        notes.append("the run does not record its input scan; not showing input points")
        return None, ""
    if not os.path.isfile(path):
        notes.append(f"{path}: the input scan is no longer there; not showing input points")
        return None, ""
    from siren3d.io import load_scan

    try:
        scan = load_scan(path, max_points=max_points)
    except Siren3dError as e:
        notes.append(f"input points not shown: {e}")
        return None, ""
    return scan.points, path


def load_run(model_path: str | os.PathLike, *, surface: bool = True, points: bool = True,
             surface_res: int = SURFACE_RES, max_points: int = DISPLAY_POINTS) -> RunView:
    """Load a model.pt and whatever else its run folder offers for display."""
    model_path = Path(model_path)
    ckpt = load_checkpoint(model_path)
    run_dir = model_path.parent if model_path.suffix else model_path
    view = RunView(model=ckpt.model, normalization=ckpt.normalization, model_path=model_path, support=ckpt.support)
    if surface:
        view.surface, view.surface_source = load_surface(ckpt.model, ckpt.normalization, run_dir, surface_res,
                                                         view.notes, support=ckpt.support)
    if points:
        view.points, view.points_source = load_points(input_path(run_dir, ckpt.meta), max_points, view.notes)
    return view
