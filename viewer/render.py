"""Can VTK draw here? Offscreen (EGL or OSMesa, loaded by the vtk wheel at run time) and on screen.

The vtk wheel carries no OpenGL of its own: offscreen it opens the system's ``libEGL.so.1`` (with
Mesa's llvmpipe, e.g. Debian ``libegl1 libegl-mesa0 libgl1-mesa-dri``) or ``libOSMesa`` (Debian
``libosmesa6``). Where neither works VTK crashes the process instead of raising, so the check runs
in a short subprocess first and turns that into one line.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from siren3d.errors import Siren3dError

_PROBE = r"""
import sys
from vtkmodules.vtkCommonCore import vtkLogger
vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL window classes)
from vtkmodules.vtkRenderingCore import vtkRenderWindow, vtkRenderer
w = vtkRenderWindow()
w.SetOffScreenRendering(1)
w.SetSize(8, 8)
w.AddRenderer(vtkRenderer())
w.Render()
sys.stdout.write(w.GetClassName())
"""

INSTALL_HINT = ("install Mesa's EGL or OSMesa, e.g. 'apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri' "
                "or 'apt-get install libosmesa6'")


@functools.lru_cache(maxsize=1)
def offscreen_backend() -> str | None:
    """The VTK render window class that renders offscreen here ('vtkEGLRenderWindow', ...), or None."""
    env = dict(os.environ)
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    name = out.stdout.strip()
    return name if out.returncode == 0 and name.startswith("vtk") else None


def has_display() -> bool:
    """Whether an on-screen window can be opened (an X11/Wayland display on Linux)."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def require_offscreen() -> str:
    """Make VTK use the window class that works offscreen, or raise a one-line Siren3dError."""
    backend = offscreen_backend()
    if backend is None:
        raise Siren3dError(f"offscreen rendering is not possible here: VTK found no working OpenGL "
                           f"(EGL or OSMesa); {INSTALL_HINT}")
    if not has_display() and backend != "vtkXOpenGLRenderWindow":
        # skip VTK's attempt at an X connection (and its warning) when there is no display
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", backend)
    return backend


def require_display() -> None:
    if not has_display():
        raise Siren3dError("no display to open a window on (DISPLAY is not set); "
                           "render offscreen with --screenshot OUT.png instead")
