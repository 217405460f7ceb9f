"""Third-party readers imported when a file needs them, with an install hint when they are missing."""

from __future__ import annotations

import importlib

from ...errors import Siren3dError


def require(module: str, package: str, what: str, path: str):
    """Import ``module``, or raise a Siren3dError saying which package reads ``what`` files."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Siren3dError(f"reading {what} files needs the Python package '{package}': "
                           f"pip install {package}", path) from None
