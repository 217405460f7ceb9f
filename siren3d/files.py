"""Writing files safely: atomic outputs, checked output folders, content hashes.

Every file siren3d writes (models, meshes, fit.json, images, summaries) goes through
:func:`atomic_output`, so an interrupted or failed write never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import Siren3dError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash, Ctrl-C or full disk leaves the previous file (or none), never a half-written one.
    The temporary name keeps the suffix so writers that dispatch on it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_output_dir(run_dir: str | os.PathLike) -> None:
    """Fail early, without creating anything, if ``run_dir`` cannot be created or written."""
    p = Path(run_dir)
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        raise Siren3dError(f"cannot create the output folder: {p} is a file, not a folder", run_dir)
    if p.exists() and not os.access(p, os.W_OK | os.X_OK):
        raise Siren3dError(f"cannot write to the output folder (permission denied on {p})", run_dir)
