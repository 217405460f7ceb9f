"""``siren3d view``: load a run, then open the window or write a screenshot."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from siren3d.errors import Siren3dError

from .render import require_display, require_offscreen
from .scene import check_image_path, parse_size, parse_slice

log = logging.getLogger("siren3d.viewer")


def view_run(model_path: str | os.PathLike, *, screenshot: str | os.PathLike | None = None, slices=(),
             size: str | tuple[int, int] = (1024, 768), res: int = 256, level: float = 0.0, eikonal: bool = False,
             view: str = "iso", surface: bool = True, points: bool = True, echo=print) -> Path | None:
    """Show a fitted model (a model.pt) in a window, or with ``screenshot`` write the scene to an image.

    slices: ['z=0.1', ...] axis slices at coordinates in scan units (default: through the centre).
    Everything the user gave is checked before anything slow happens.
    """
    from .data import load_run
    from .scene import FieldViewer

    window_size = parse_size(size) if isinstance(size, str) else tuple(size)
    parsed = [parse_slice(s) for s in slices] or None
    if not 2 <= int(res) <= 4096:
        raise Siren3dError(f"--res {res}: slices need 2 to 4096 samples per side")
    if screenshot is not None:
        screenshot = check_image_path(screenshot)
        backend = require_offscreen()
        log.debug("offscreen rendering through %s", backend)
    else:
        require_display()
    run = load_run(model_path, surface=surface, points=points)
    for note in run.notes:
        echo(f"note: {note}")
    viewer = FieldViewer(run.field, run.normalization, surface=run.surface, points=run.points, slices=parsed,
                         off_screen=screenshot is not None, window_size=window_size, slice_res=res, free_res=res,
                         interactive=screenshot is None, show_surface=surface, show_points=points, level=level,
                         eikonal=eikonal, view=view, source=_short(model_path), title=f"siren3d view {model_path}")
    try:
        if screenshot is not None:
            viewer.screenshot(screenshot)
            return screenshot
        viewer.show()
        return None
    finally:
        viewer.close()


def _short(model_path) -> str:
    """'runs/scan/model.pt' -> 'scan/model.pt': enough to recognize the run in a corner of the window."""
    p = Path(model_path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name
