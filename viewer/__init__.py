"""Interactive PyVista viewer of a fitted distance field (installed as siren3d.viewer).

    slices.py   evaluate_slice: the field on a plane, exact at every sample, in scan units (no PyVista)
    scene.py    FieldViewer: slices, contours, surface, points, widgets and keys on one plotter
    data.py     load_run: a model.pt plus its run folder's mesh and input points
    render.py   whether VTK can draw here (offscreen: EGL or OSMesa), as one-line errors
    app.py      view_run: what ``siren3d view`` does

Depends on siren3d; siren3d never imports it (the CLI's ``view`` command does, lazily).
"""

from .slices import FieldEvaluator, Slice, evaluate_slice, plane_basis  # noqa: F401  (no PyVista import)

__all__ = ["FieldEvaluator", "Slice", "evaluate_slice", "plane_basis"]
