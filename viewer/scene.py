"""The viewer's scene: slices of the field, contour lines, surface, input points, widgets, keys.

:class:`FieldViewer` builds everything on a :class:`pyvista.Plotter`; the same object serves the
interactive window (``show()``) and offscreen screenshots (``screenshot()``), so a screenshot shows
exactly what the window shows, minus the widgets.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from siren3d.errors import Siren3dError
from siren3d.normalization import Normalization

from .slices import DEFAULT_CHUNK, FieldEvaluator, axis_slice, box_section, evaluate_slice

#: Diverging colormap for signed distance: negative (inside) blue, positive (outside) red, white at 0.
DISTANCE_CMAP = "RdBu_r"
EIKONAL_CMAP = "magma"
EIKONAL_CLIM = (0.0, 0.5)
#: What the slices show, named where the user reads it: (scene title, colour bar title, window title).
#: The Eikonal error is a different quantity from the distance (unitless, >= 0), so it gets its own
#: names everywhere, never the distance's.
TITLES = {
    "distance": ("signed distance (scan units)", "signed distance\n(scan units)", "signed distance"),
    "eikonal": ("Eikonal error abs(norm(grad f) - 1): 0 where f is a distance", "Eikonal error\n(unitless)",
                "Eikonal error"),
}
SCREENSHOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

KEYS = (
    ("x / y / z", "toggle the slice across that axis"),
    ("o", "toggle the free slice (drag its plane widget to move, its arrow to rotate)"),
    ("m", "toggle the zero-level surface (mesh)"),
    ("i", "toggle the input points"),
    ("l", "toggle contour lines"),
    ("g", "colour slices by the Eikonal error abs(norm(grad f) - 1) instead of distance"),
    ("h", "toggle this help"),
    ("v / q", "isometric view / quit"),
)


def nice_step(x: float) -> float:
    """The 1-2-5 number at or above x > 0."""
    if not x > 0:
        return 1.0
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * 10 ** e >= x * (1 - 1e-9):
            return m * 10 ** e
    return 10 ** (e + 1)


def parse_slice(spec: str) -> tuple[str, float]:
    """'z=0.1' -> ('z', 0.1): an axis-aligned slice at a coordinate in scan units."""
    axis, sep, value = spec.partition("=")
    axis = axis.strip().lower()
    try:
        v = float(value)
    except ValueError:
        v = math.nan
    if not sep or axis not in ("x", "y", "z") or not math.isfinite(v):
        raise Siren3dError(f"--slice '{spec}': expected AXIS=VALUE with AXIS x, y or z and VALUE a coordinate "
                           f"in scan units, e.g. z=0.1")
    return axis, v


def parse_size(spec: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768)."""
    w, sep, h = spec.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or not (16 <= size[0] <= 8192 and 16 <= size[1] <= 8192):
        raise Siren3dError(f"--size '{spec}': expected WIDTHxHEIGHT in pixels (16 to 8192), e.g. 1024x768")
    return size


def check_image_path(path):
    """The path of a screenshot, if its suffix names an image format we write."""
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() not in SCREENSHOT_SUFFIXES:
        raise Siren3dError(f"cannot write '{path.suffix or '(no extension)'}' images; use one of "
                           f"{' '.join(SCREENSHOT_SUFFIXES)}", path)
    return path


@dataclass
class _SliceState:
    key: str
    origin: np.ndarray
    normal: np.ndarray
    res: int
    grid: object = None   # pv.StructuredGrid with point arrays 'distance' (+ 'eikonal')
    visible: bool = True
    ms: float = 0.0       # last evaluation time


class FieldViewer:
    """The scene for one field.

    field: a Siren, a siren3d.field.ScanField (what ``siren3d view`` shows when the model has the
    scan's support: a distance in the whole box) or a callable unit-box points (N, 3) -> f (N,)
    (see :func:`evaluate_slice`).
    normalization: scan <-> unit box (None: identity). The box shown is the unit box in scan units.
    surface: (vertices, faces) in scan coordinates, or None; points: (N, 3) scan coordinates, or None.
    slices: [(axis, value in scan units)], default the three planes through the box centre.
    interactive: add the plane widget, slider, check boxes, keys and help (off for screenshots).
    """

    def __init__(self, field, normalization: Normalization | None = None, *, surface=None, points=None,
                 slices=None, off_screen: bool = False, window_size=(1024, 768), slice_res: int = 256,
                 free_res: int = 256, interactive: bool = True, show_surface: bool = True,
                 show_points: bool = True, level: float = 0.0, eikonal: bool = False, view: str = "iso",
                 title: str = "siren3d view", source: str = "", surface_res: int = 96):
        import pyvista as pv

        self.pv = pv
        self.field = FieldEvaluator(field, chunk=DEFAULT_CHUNK) if _is_siren(field) else field
        self.normalization = normalization
        # the scan frame <-> unit box, the identity when there is no normalization
        self.frame = normalization if normalization is not None else Normalization((0.0, 0.0, 0.0), 1.0)
        self.center = np.asarray(self.frame.center, dtype=np.float64)
        self.scale = float(self.frame.scale)
        s = self.scale
        self.bounds = tuple(float(v) for c in self.center for v in (c - s, c + s))
        self.kind = "eikonal" if eikonal else "distance"
        self.title = title
        self.contours_on = True
        self.level = float(level)
        self.surface_res = int(surface_res)
        self.interactive = interactive
        self.source = source

        # axis slices
        specs = slices if slices is not None else [(a, self.center["xyz".index(a)]) for a in "xyz"]
        self.slices: dict[str, _SliceState] = {}
        for axis, value in specs:
            k = "xyz".index(axis)
            if not (self.bounds[2 * k] <= value <= self.bounds[2 * k + 1]):
                raise Siren3dError(f"--slice {axis}={value:g} is outside the field's box "
                                   f"({self.bounds[2 * k]:.4g} to {self.bounds[2 * k + 1]:.4g} scan units)")
            origin, normal, _ = axis_slice(axis, value, normalization)
            key = axis if axis not in self.slices else f"{axis}{len(self.slices)}"
            self.slices[key] = _SliceState(key, origin, normal, int(slice_res))
        for st in self.slices.values():
            self._evaluate(st)
        # colour range: symmetric about 0, wide enough for the deepest inside value (so the inside shows
        # strongly) but not ruled by far corners of the box (those saturate): 0 stays white.
        d = (np.concatenate([st.grid["distance"] for st in self.slices.values()]) if self.slices
             else np.array([-0.5 * s, s]))
        self.dmax = nice_step(max(-float(d.min()), 0.3 * float(np.percentile(np.abs(d), 99)), 1e-6 * s))
        self.contour_step = nice_step(self.dmax / 4)

        # the window, once the user's slices are known to be valid; lines are drawn in front of the
        # polygons they lie on (contours on their slice)
        from vtkmodules.vtkRenderingCore import vtkMapper

        vtkMapper.SetResolveCoincidentTopologyToPolygonOffset()
        self.plotter = pv.Plotter(off_screen=off_screen, window_size=list(window_size), title=title)
        self.plotter.set_background("white")

        # free slice (shown in the window with its plane widget; off in screenshots)
        self.free = _SliceState("free", self.center.copy(), np.array([1.0, 1.0, 1.0]) / math.sqrt(3), int(free_res),
                                visible=False)

        # surface and points
        self.surface_data = surface
        self.surface_visible = bool(show_surface)
        self.points_data = points
        self.points_visible = show_points and points is not None
        self._surface_poly = None
        if points is not None and len(points):
            self.plotter.add_mesh(pv.PolyData(np.asarray(points, dtype=np.float64)), color="#202020",
                                  point_size=2, render_points_as_spheres=False, name="points",
                                  lighting=False)
            self.plotter.actors["points"].SetVisibility(self.points_visible)
        self._draw_surface()

        for st in self.slices.values():
            self._draw_slice(st)
        self.plotter.show_bounds(bounds=self.bounds, grid=False, location="outer", ticks="outside",
                                 xtitle="x", ytitle="y", ztitle="z", font_size=9, color="#555555")
        self._info = [line for line in (source, f"box {2 * s:.4g} scan units per side") if line]
        self._draw_titles()
        if interactive:
            self._add_interaction()
        self.set_view(view)

    # ------------------------------------------------------------------ evaluation and drawing

    def _evaluate(self, st: _SliceState) -> None:
        pv = self.pv
        t0 = time.perf_counter()
        free = st.key == "free"
        # an axis slice spans the box exactly; the free one spans the rectangle around its section of
        # the box, with the samples outside the box left unevaluated (NaN, drawn transparent)
        centre, size = st.origin, 2.0 * self.scale
        if free:
            section = box_section(st.origin, st.normal, self.center - self.scale, self.center + self.scale)
            if section is not None:
                centre, size = section
        sl = evaluate_slice(self.field, self.normalization, centre, st.normal, size, st.res,
                            eikonal=self.kind == "eikonal", clip_to_box=free)
        st.ms = (time.perf_counter() - t0) * 1e3
        nv, nu = sl.distance.shape
        if st.grid is None or st.grid.dimensions != (nu, nv, 1):
            st.grid = pv.StructuredGrid()
            st.grid.dimensions = (nu, nv, 1)
        pts = sl.points.reshape(-1, 3)
        st.grid.points = pts
        st.grid.point_data["distance"] = sl.distance.ravel()
        if free:  # samples outside the box (NaN) are hidden, and with them the cells they belong to
            st.grid.hide_points(np.isnan(sl.distance.ravel()))
        if sl.eikonal is not None:
            st.grid.point_data["eikonal"] = sl.eikonal.ravel()
        elif "eikonal" in st.grid.point_data:  # belonged to the plane before this one
            st.grid.point_data.remove("eikonal")

    def _clim(self):
        return (-self.dmax, self.dmax) if self.kind == "distance" else EIKONAL_CLIM

    def _cmap(self):
        return DISTANCE_CMAP if self.kind == "distance" else EIKONAL_CMAP

    def _draw_slice(self, st: _SliceState) -> None:
        p = self.plotter
        name = f"slice-{st.key}"
        if self.kind == "eikonal" and "eikonal" not in st.grid.point_data:
            self._evaluate(st)
        # Opaque: no NaN opacity (a lookup table with any transparent colour makes VTK draw the whole
        # slice as translucent, and then every slice and contour behind it shows through). The free
        # slice's samples outside the box are hidden points instead (see _evaluate).
        p.add_mesh(st.grid, scalars=self.kind, cmap=self._cmap(), clim=self._clim(), show_scalar_bar=False,
                   lighting=False, name=name)
        p.actors[name].SetVisibility(st.visible)
        self._draw_contours(st)

    def _draw_contours(self, st: _SliceState) -> None:
        p = self.plotter
        for suffix in ("zero", "lines", "level"):
            p.remove_actor(f"contour-{suffix}-{st.key}", render=False)
        if not (st.visible and self.contours_on):
            return
        g, step = st.grid, self.contour_step
        d = g["distance"]
        if np.isnan(d).all():
            return
        lo, hi = float(np.nanmin(d)), float(np.nanmax(d))
        self._add_lines(g.contour([0.0], scalars="distance") if lo < 0 < hi else None,
                        f"contour-zero-{st.key}", "black" if self.kind == "distance" else "#00d8ff", 3)
        # distance contours only over a distance map: over the Eikonal error they would read as
        # lines of that error (the surface f = 0 and the iso level's line stay: they are places)
        levels = [k * step for k in range(int(lo / step) - 1, int(hi / step) + 2) if k != 0]
        inside = [v for v in levels if lo < v < hi] if self.kind == "distance" else []
        self._add_lines(g.contour(inside, scalars="distance") if inside else None,
                        f"contour-lines-{st.key}", "#606060", 1)
        if self.level != 0 and lo < self.level < hi:
            self._add_lines(g.contour([self.level], scalars="distance"), f"contour-level-{st.key}", "#00a000", 3)

    def _add_lines(self, lines, name: str, color: str, width: float) -> None:
        if lines is None or lines.n_points == 0:
            return
        self.plotter.add_mesh(lines, color=color, line_width=width, lighting=False, name=name,
                              render_lines_as_tubes=False)

    def _draw_titles(self) -> None:
        """Name what the slices show, in the scene, on the colour bar and in the window's title."""
        p = self.plotter
        scene_title, bar_title, window_title = TITLES[self.kind]
        # first line of the corner text: clear of the key list (upper left) and above the colour bar
        p.add_text("\n".join([scene_title, *self._info]), position="upper_right", font_size=8, color="#333333",
                   name="info")
        p.title = f"{self.title} - {window_title}"
        if p.render_window is not None:
            p.render_window.SetWindowName(p.title)
        for title in list(p.scalar_bars.keys()):
            p.remove_scalar_bar(title, render=False)
        actor = next((p.actors[f"slice-{k}"] for k in list(self.slices) + ["free"] if f"slice-{k}" in p.actors), None)
        if actor is None:
            return
        p.add_scalar_bar(title=bar_title, mapper=actor.mapper, vertical=True, position_x=0.84, position_y=0.3,
                         width=0.06, height=0.5, color="black", title_font_size=12, label_font_size=11,
                         n_labels=5, fmt="%.3g")

    def _draw_surface(self) -> None:
        p, pv = self.plotter, self.pv
        p.remove_actor("surface", render=False)
        data = self.surface_data
        if self.level != 0:
            data = self._offset_surface(self.level)
        if data is None:
            return
        v, f = data
        faces = np.hstack([np.full((len(f), 1), 3, dtype=np.int64), np.asarray(f, dtype=np.int64)]).ravel()
        self._surface_poly = pv.PolyData(np.asarray(v, dtype=np.float64), faces)
        p.add_mesh(self._surface_poly, color="#d9c7a0", opacity=0.35, smooth_shading=True, name="surface",
                   specular=0.2)
        p.actors["surface"].SetVisibility(self.surface_visible)

    def _offset_surface(self, level: float):
        """The ``level`` set (scan units) as ``siren3d mesh --level`` makes it (at ``surface_res``, every
        piece kept: stray blobs of a field that is not a distance are worth seeing here), or None."""
        from siren3d.meshing import extract_mesh

        meshing_log = logging.getLogger("siren3d.meshing")
        quiet, meshing_log.disabled = meshing_log.disabled, True  # an offset reaching the box is no news here
        try:
            mesh = extract_mesh(self.field, self.frame, res=self.surface_res, level=level, normals=False,
                                min_component=0.0, keep_inner=True)
        except Siren3dError:  # the field does not reach this level in the box
            return None
        finally:
            meshing_log.disabled = quiet
        return mesh.vertices, mesh.faces

    # ------------------------------------------------------------------ state changes (keys, widgets)

    def toggle_slice(self, key: str, state: bool | None = None) -> None:
        st = self.free if key == "free" else self.slices.get(key)
        if st is None:
            return
        st.visible = (not st.visible) if state is None else bool(state)
        if st.grid is None:
            self._evaluate(st)
        if f"slice-{key}" not in self.plotter.actors:
            self._draw_slice(st)
        self.plotter.actors[f"slice-{key}"].SetVisibility(st.visible)
        self._draw_contours(st)
        if key == "free" and self._plane_widget is not None:
            self._plane_widget.SetEnabled(int(st.visible))
        self._sync_checkbox(key, st.visible)

    def toggle_surface(self, state: bool | None = None) -> None:
        self.surface_visible = (not self.surface_visible) if state is None else bool(state)
        if "surface" in self.plotter.actors:
            self.plotter.actors["surface"].SetVisibility(self.surface_visible)
        self._sync_checkbox("surface", self.surface_visible)

    def toggle_points(self, state: bool | None = None) -> None:
        self.points_visible = (not self.points_visible) if state is None else bool(state)
        if "points" in self.plotter.actors:
            self.plotter.actors["points"].SetVisibility(self.points_visible)
        self._sync_checkbox("points", self.points_visible)

    def toggle_contours(self, state: bool | None = None) -> None:
        self.contours_on = (not self.contours_on) if state is None else bool(state)
        for st in self._all_slices():
            self._draw_contours(st)
        self._sync_checkbox("contours", self.contours_on)

    def set_eikonal(self, state: bool | None = None) -> None:
        on = (self.kind != "eikonal") if state is None else bool(state)
        self.kind = "eikonal" if on else "distance"
        for st in self._all_slices():
            self._draw_slice(st)
        self._draw_titles()
        self._sync_checkbox("eikonal", on)

    def set_level(self, level: float) -> None:
        self.level = float(level)
        if self._slider is not None and abs(self._slider.GetRepresentation().GetValue() - self.level) > 1e-12:
            self._slider.GetRepresentation().SetValue(self.level)
        self._draw_surface()
        for st in self._all_slices():
            self._draw_contours(st)

    def move_free_slice(self, normal, origin) -> float:
        """Re-evaluate the free slice on a new plane; returns the evaluation time in ms."""
        st = self.free
        st.normal = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
        st.origin = np.asarray(origin, dtype=np.float64)
        self._evaluate(st)
        if st.visible:
            self._draw_slice(st)
        if self.interactive:
            self.plotter.add_text(f"free slice {st.res}x{st.res}: {st.ms:.0f} ms", position="lower_right",
                                  font_size=8, color="#333333", name="timing")
        return st.ms

    def _all_slices(self):
        return [st for st in (*self.slices.values(), self.free) if st.grid is not None]

    def set_view(self, view: str) -> None:
        p = self.plotter
        if view == "iso":
            p.view_isometric()
        elif view in ("x", "y", "z"):
            {"x": p.view_yz, "y": p.view_zx, "z": p.view_xy}[view]()
            p.enable_parallel_projection()
        else:
            raise Siren3dError(f"unknown view '{view}'; use iso, x, y or z")
        p.reset_camera(bounds=self.bounds)
        p.camera.zoom(1.25 if view == "iso" else 1.1)

    # ------------------------------------------------------------------ interaction

    _plane_widget = None
    _slider = None
    _checkboxes: dict = {}
    _help_actor = None

    def _add_interaction(self) -> None:
        p = self.plotter
        self._checkboxes = {}
        self._plane_widget = p.add_plane_widget(
            lambda normal, origin: self.move_free_slice(normal, origin), normal=tuple(self.free.normal),
            origin=tuple(self.free.origin), bounds=self.bounds, normal_rotation=True, implicit=True,
            interaction_event="always", outline_translation=False, color="#444444", factor=1.0,
            outline_opacity=0.3)
        # the widget's own plane stays pickable (drag it to move the slice) but nearly invisible:
        # the free slice drawn under it is what the user looks at
        w = self._plane_widget
        rep = w.GetRepresentation() if hasattr(w, "GetRepresentation") else w
        rep.GetPlaneProperty().SetOpacity(0.05)
        rep.GetSelectedPlaneProperty().SetOpacity(0.1)
        self._plane_widget.SetEnabled(0)
        self.free.visible = False
        span = 0.5 * self.dmax
        self._slider = p.add_slider_widget(self.set_level, rng=(-span, span), value=self.level,
                            title="iso level (scan units)", pointa=(0.70, 0.13), pointb=(0.97, 0.13),
                            style="modern", fmt="%.3g", interaction_event="end", title_height=0.02,
                            color="black")
        boxes = [(k, f"{k} slice", self.slices[k].visible, lambda on, k=k: self.toggle_slice(k, on))
                 for k in self.slices]
        boxes += [("free", "free slice", False, lambda on: self.toggle_slice("free", on)),
                  ("surface", "surface", self.surface_visible, self.toggle_surface),
                  ("points", "input points", self.points_visible, self.toggle_points),
                  ("contours", "contours", self.contours_on, self.toggle_contours),
                  ("eikonal", "Eikonal error", self.kind == "eikonal", self.set_eikonal)]
        for i, (key, label, on, cb) in enumerate(boxes):
            y = 10 + 32 * (len(boxes) - 1 - i)
            w = p.add_checkbox_button_widget(cb, value=on, position=(10, y), size=24, border_size=2,
                                             color_on="#3070c0", color_off="#d0d0d0", background_color="#808080")
            self._checkboxes[key] = w
            p.add_text(label, position=(42, y + 4), font_size=9, color="black", name=f"label-{key}")
        keys = [("x", lambda: self.toggle_slice("x")), ("y", lambda: self.toggle_slice("y")),
                ("z", lambda: self.toggle_slice("z")), ("o", lambda: self.toggle_slice("free")),
                ("m", self.toggle_surface), ("i", self.toggle_points), ("l", self.toggle_contours),
                ("g", self.set_eikonal), ("h", self.toggle_help)]
        for key, cb in keys:
            p.add_key_event(key, lambda cb=cb: (cb(), self.plotter.render()))
        text = "keys\n" + "\n".join(f"  {k:<6} {what}" for k, what in KEYS)
        self._help_actor = p.add_text(text, position="upper_left", font_size=9, color="black", name="help")

    def toggle_help(self) -> None:
        if self._help_actor is not None:
            self._help_actor.SetVisibility(not self._help_actor.GetVisibility())

    def _sync_checkbox(self, key: str, on: bool) -> None:
        w = self._checkboxes.get(key)
        if w is not None and bool(w.GetRepresentation().GetState()) != bool(on):
            w.GetRepresentation().SetState(int(bool(on)))

    # ------------------------------------------------------------------ output

    def show(self) -> None:
        self.plotter.show()

    def image(self) -> np.ndarray:
        """The scene as it is now, rendered: an (H, W, 3) uint8 array."""
        self._render()
        return self.plotter.screenshot(return_img=True)

    def _render(self) -> None:
        # pyvista's screenshot() renders only the first time; later it returns the last frame drawn,
        # which misses every change made since without a render (a check box, a colour bar, a title)
        self.plotter.render()

    def screenshot(self, path) -> None:
        """Render and write an image file atomically (PNG, JPEG, BMP, TIFF by suffix)."""
        from siren3d.files import atomic_output

        path = check_image_path(path)
        self._render()
        try:
            with atomic_output(path) as tmp:
                self.plotter.screenshot(str(tmp))
        except OSError as e:
            raise Siren3dError(f"cannot write the image ({e.strerror or e})", path) from None

    def world_to_pixel(self, point) -> tuple[int, int]:
        """(row, column) in :meth:`image` of a point in scan coordinates (for tests and overlays)."""
        ren = self.plotter.renderer
        ren.SetWorldPoint(*np.asarray(point, dtype=float), 1.0)
        ren.WorldToDisplay()
        x, y, _ = ren.GetDisplayPoint()
        h = self.plotter.window_size[1]
        return int(round(h - 1 - y)), int(round(x))

    def close(self) -> None:
        self.plotter.close()


def _is_siren(field) -> bool:
    from siren3d.field import ScanField
    from siren3d.model import Siren

    return isinstance(field, (Siren, ScanField))
