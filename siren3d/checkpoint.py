"""One self-describing, versioned model file: ``model.pt``.

The file holds plain tensors and a JSON string, nothing else:

    {"format": "siren3d-model", "version": 1,
     "meta": "<JSON: model config, normalization, fit config, step, input, summary>",
     "weights": {name: tensor},
     "support": {"points", "spacing"[, "colors"]},  # optional: the scan's support (siren3d.support)
     "train": {...}}            # optional: optimizer moments, RNG state, loss history (resume)

It is written atomically (temp file + rename) and read with ``torch.load(weights_only=True)``,
which refuses any pickle that would construct objects: a shared model file cannot run code.
Its tensors are checked against the declared architecture before use. Files written before the
support was stored load with ``support=None`` (their meshes are not trimmed).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import Siren3dError
from .files import atomic_output
from .model import Siren
from .normalization import Normalization
from .support import ScanSupport

FORMAT = "siren3d-model"
VERSION = 1
#: Largest model file we agree to read (a default model is well under 1 MB).
MAX_FILE_BYTES = 2 << 30


@dataclass
class Checkpoint:
    model: Siren
    normalization: Normalization
    meta: dict
    train: dict | None = None
    path: str = ""
    support: ScanSupport | None = None  # the scan's support: trimming, colours (None in older files)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def save_checkpoint(path: str | os.PathLike, model: Siren, normalization: Normalization, meta: dict,
                    train: dict | None = None, support: ScanSupport | None = None) -> None:
    meta = dict(meta)
    meta["model"] = model.config.to_dict()
    meta["normalization"] = normalization.to_dict()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta": json.dumps(meta),
        "weights": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    if train is not None:
        payload["train"] = train
    if support is not None:
        payload["support"] = support.to_tensors()
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a model file; raise Siren3dError for anything that is not a siren3d model."""
    spath = os.fspath(path)
    p = Path(spath)
    if p.is_dir():
        p = p / "model.pt"
        spath = str(p)
    if not p.exists():
        raise Siren3dError("no such model file", spath)
    if not p.is_file():
        raise Siren3dError("is not a regular file", spath)
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise Siren3dError("model file is implausibly large; refusing to read it", spath)
    if size == 0:
        raise Siren3dError("not a readable siren3d model file (it is empty)", spath)
    try:
        with open(spath, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise Siren3dError(f"cannot read the model file ({e.strerror or e})", spath) from None
    if magic != b"PK\x03\x04":
        # siren3d only ever writes torch's zip format; anything else (a bare pickle, random bytes)
        # is not ours, and is never handed to an unpickler.
        raise Siren3dError("not a readable siren3d model file (not a PyTorch zip archive)", spath)
    try:
        payload = torch.load(spath, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f"it asks to run {found.group(1)}" if found else _torch_reason(e)
        raise Siren3dError(
            "refused to load: the file holds Python objects or code, not plain tensors "
            f"({what}); only siren3d model files can be loaded", spath) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, TypeError,
            KeyError, IndexError) as e:
        raise Siren3dError(f"not a readable siren3d model file ({_torch_reason(e)})", spath) from None
    return _validate(payload, spath, device)


def _torch_reason(e: Exception) -> str:
    """The informative part of a torch.load error, on one short line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # torch's weights-only errors open with a paragraph about defaults; the reason comes later
    useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Please file an issue",
                                                        "Check the documentation"))]
    text = (useful or lines or [type(e).__name__])[0]
    text = text.removeprefix("WeightsUnpickler error:").strip() or type(e).__name__
    return text.split(". ")[0][:120].rstrip(". ")


def _validate(payload, path: str, device) -> Checkpoint:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise Siren3dError("not a siren3d model file (format tag missing)", path)
    version = payload.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise Siren3dError(f"model file format version {version!r} is not supported by this siren3d "
                           f"(reads version {VERSION}); upgrade siren3d", path)
    try:
        meta = json.loads(payload["meta"])
        config = ModelConfig.from_dict(meta["model"])
        normalization = Normalization.from_dict(meta["normalization"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise Siren3dError(f"model file metadata is invalid ({e})", path) from None
    if config.width > 4096 or config.hidden_layers > 64:
        raise Siren3dError(f"model declares an implausible architecture ({config.width} wide, "
                           f"{config.hidden_layers} hidden layers)", path)
    weights = payload.get("weights")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise Siren3dError("model file has no weight tensors", path)
    model = Siren(ModelConfig(**{**config.to_dict(), "init": "siren"}))
    model.config = config
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        detail = "; ".join(s for s in (
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(extra)}" if extra else "",
            ", ".join(f"{k} is {found[k]} not {expected[k]}" for k in wrong)) if s)
        raise Siren3dError(f"weights do not match the declared architecture ({detail})", path)
    if not all(torch.isfinite(v).all() for v in weights.values()):
        raise Siren3dError("model weights contain NaN/Inf", path)
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    model.to(device).eval()
    support = None
    if "support" in payload:
        try:
            support = ScanSupport.from_tensors(payload["support"])
        except ValueError as e:
            raise Siren3dError(f"model file's scan support is invalid ({e})", path) from None
    train = payload.get("train")
    return Checkpoint(model=model, normalization=normalization, meta=meta,
                      train=train if isinstance(train, dict) else None, path=path, support=support)
