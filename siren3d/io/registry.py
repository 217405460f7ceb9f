"""The table of file formats: every module in :mod:`siren3d.io.formats` lists its formats in a
module-level ``FORMATS`` tuple, and this module gathers them. Adding a format is one new file there.

A :class:`Format` says which suffixes it reads, the leading bytes that identify its files (so a
file named after another format is refused with the right name instead of misparsed), and the
loader: ``load(path, options) -> RawScan``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import Siren3dError
from .scan import RawScan, ReadOptions


@dataclass(frozen=True)
class Format:
    """One file format (or family sharing a reader)."""

    name: str                                   #: how messages call it ("PLY", "LAS/LAZ")
    suffixes: tuple[str, ...]                   #: lower-case, with the dot; the first is the usual one
    load: Callable[[str, ReadOptions], RawScan]
    magic: re.Pattern | None = None             #: matches the start of every file of this format
    mesh: bool = False                          #: its files are meshes (surface sampled), never point clouds


def _discover() -> tuple[Format, ...]:
    from . import formats

    found: list[Format] = []
    for info in sorted(pkgutil.iter_modules(formats.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{formats.__name__}.{info.name}")
        found.extend(getattr(module, "FORMATS", ()))
    claimed: dict[str, str] = {}
    for fmt in found:
        for suffix in fmt.suffixes:
            if suffix in claimed:
                raise RuntimeError(f"suffix {suffix} is claimed by both {claimed[suffix]} and {fmt.name}")
            claimed[suffix] = fmt.name
    # Point formats first, then meshes (the order of the 'supported:' list in messages).
    return tuple(sorted(found, key=lambda f: (f.mesh, f.suffixes[0])))


FORMATS: tuple[Format, ...] = _discover()
BY_SUFFIX: dict[str, Format] = {s: f for f in FORMATS for s in f.suffixes}
#: Suffixes of formats that only hold meshes (a PLY may hold either).
MESH_SUFFIXES: tuple[str, ...] = tuple(s for f in FORMATS if f.mesh for s in f.suffixes)
SUPPORTED: tuple[str, ...] = tuple(s for f in FORMATS for s in f.suffixes)
#: Bytes read to recognise a file by its content.
MAGIC_BYTES = 256


def format_for(path: str, suffix: str, head: bytes) -> Format:
    """The format that reads ``path``, from its suffix, checked against its first bytes ``head``."""
    fmt = BY_SUFFIX.get(suffix)
    if fmt is None:
        raise Siren3dError(
            f"unknown scan format '{suffix or '(no extension)'}'; supported: {' '.join(SUPPORTED)}", path)
    for other in FORMATS:
        if other is not fmt and other.magic is not None and other.magic.match(head):
            raise Siren3dError(f"is a {other.name} file, but its name ends in '{suffix}'; "
                               f"rename it to '{other.suffixes[0]}'", path)
    return fmt
