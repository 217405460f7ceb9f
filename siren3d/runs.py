"""Run folders: ``runs/<scan stem>/`` by default, and finding the most recent one."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import Siren3dError

DEFAULT_ROOT = Path("runs")


def default_run_dir(scan_path: str | os.PathLike, root: Path = DEFAULT_ROOT) -> Path:
    return Path(root) / (Path(scan_path).stem or "scan")


def latest_run(root: Path = DEFAULT_ROOT) -> Path:
    """The run folder whose model.pt was written last."""
    root = Path(root)
    models = sorted(root.glob("*/model.pt"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not models:
        raise Siren3dError(f"no fitted model found under {root}/; run 'siren3d fit SCAN' first, "
                           f"or pass --run DIR or a model.pt path")
    return models[-1].parent


def resolve_model(run: str | os.PathLike | None, root: Path = DEFAULT_ROOT) -> Path:
    """The model.pt for a run folder, a model file, or (None) the most recent run."""
    if run is None:
        return latest_run(root) / "model.pt"
    p = Path(run)
    if p.is_dir():
        p = p / "model.pt"
    if not p.exists():
        raise Siren3dError("no model.pt there; run 'siren3d fit SCAN' first", p)
    return p
