"""Every setting of siren3d, in one place: its default, its help text and its valid range.

Each setting is a dataclass field made with :func:`setting`. The command line builds its options
from these fields (``siren3d.cli``), so a notebook calling ``siren3d.fit(scan, FitConfig(...))`` and
``siren3d fit --...`` share the same defaults, the same help and the same checks; a new setting is
one new field. Validation speaks of settings (``steps``), not of command-line flags.

This module imports neither torch nor numpy: ``siren3d --help`` reads it and nothing heavier.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable

from .errors import SettingError


def setting(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, choices: tuple = (),
            min: float | None = None, max: float | None = None, positive: bool = False, cli: bool = True,
            flag: str | None = None, metavar: str | None = None, parse: Callable[[str], Any] | None = None,
            prefix: str = "") -> Any:
    """A dataclass field carrying what the CLI and validation need.

    ``choices``/``min``/``max``/``positive`` are checked by :func:`validate` and become click types;
    ``cli=False`` keeps a setting out of the command line; ``flag`` overrides the option name (default:
    the field name with dashes); ``parse`` turns the option's text into the value (raising ValueError);
    ``prefix`` is put before the flags of a nested config's settings.
    """
    meta = dict(help=help, choices=tuple(choices), min=min, max=max, positive=positive, cli=cli, flag=flag,
                metavar=metavar, parse=parse, prefix=prefix)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# Generic helpers over the config dataclasses


def to_dict(cfg) -> dict:
    """A config as plain JSON-ready data (nested configs as dicts)."""
    return asdict(cfg)


def from_dict(cls, data: dict):
    """A config from :func:`to_dict` output; unknown keys (from other siren3d versions) are ignored."""
    data = data or {}
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        sub = _nested_type(cls, f)
        if sub is not None:
            value = from_dict(sub, value if isinstance(value, dict) else {})
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _nested_type(cls, f):
    """The dataclass type of a nested config field (model, loss), else None."""
    if f.default_factory is not MISSING:  # type: ignore[misc]
        probe = f.default_factory()  # type: ignore[misc]
        if is_dataclass(probe):
            return type(probe)
    return None


def validate(cfg, where: str = "") -> None:
    """Check every setting of ``cfg`` (and its nested configs) against its declared range/choices."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        name = f"{where}{f.name}"
        if is_dataclass(value):
            validate(value, f"{name}.")
            continue
        m = f.metadata
        if not m or value is None:
            continue
        if m.get("choices") and value not in m["choices"]:
            raise SettingError(f"{name} must be one of {', '.join(map(str, m['choices']))} (got {value!r})", name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise SettingError(f"{name} must be a finite number (got {value})", name)
            if m.get("positive") and not value > 0:
                raise SettingError(f"{name} must be positive (got {value})", name)
            if m.get("min") is not None and value < m["min"]:
                raise SettingError(f"{name} must be at least {m['min']:g} (got {value})", name)
            if m.get("max") is not None and value > m["max"]:
                raise SettingError(f"{name} must be at most {m['max']:g} (got {value})", name)


def with_overrides(cfg, overrides: dict):
    """A copy of ``cfg`` with settings replaced: keys are field names, dotted paths ('model.width') or
    the name of a field of a nested config ('width'); None values are skipped (not given)."""
    top = {f.name: f for f in fields(cfg)}
    nested = {f.name: getattr(cfg, f.name) for f in fields(cfg) if is_dataclass(getattr(cfg, f.name))}
    direct, inner = {}, {k: {} for k in nested}
    for key, value in overrides.items():
        if value is None:
            continue
        path = key.replace("__", ".").split(".", 1)
        if len(path) == 2 and path[0] in nested:
            inner[path[0]][path[1]] = value
        elif key in top and key not in nested:
            direct[key] = value
        else:
            owner = [n for n, sub in nested.items() if key in {f.name for f in fields(sub)}]
            if len(owner) != 1:
                raise SettingError(f"unknown setting '{key}'")
            inner[owner[0]][key] = value
    for name, values in inner.items():
        if values:
            direct[name] = with_overrides(nested[name], values)
    return replace(cfg, **direct)


class Settings:
    """Base of the config dataclasses: plain-data round trip and validation."""

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return from_dict(cls, d)

    def validate(self) -> None:
        validate(self)


# --------------------------------------------------------------------------------------------
# The settings


#: Fraction of the half-box left empty around the scan, so the surface never touches the box.
DEFAULT_MARGIN = 0.1
#: The finest meshing grid the vertex-merging keys can address.
MAX_RES = 2048


def parse_point(text: str) -> tuple[float, ...]:
    """'x,y,z' -> three floats (ValueError otherwise)."""
    try:
        nums = tuple(float(v) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        nums = ()
    if len(nums) != 3 or not all(math.isfinite(v) for v in nums):
        raise ValueError("expected three numbers: x,y,z (scan units)")
    return nums


OUTLIER_MODES = ("auto", "off")


@dataclass
class LoadConfig(Settings):
    """How a scan file becomes training points."""

    max_points: int = setting(2_000_000, "Subsample larger scans to this many points (seeded).", min=16)
    mesh_samples: int = setting(200_000, "Points sampled on the surface of a mesh given as input.", min=16,
                                cli=False)
    outliers: str = setting("auto", "Stray points: 'auto' drops isolated points far from the surface before "
                            "fitting (a scale-free nearest-neighbour test; see siren3d.io.outliers); 'off' keeps "
                            "all.", choices=OUTLIER_MODES)
    viewpoint: tuple | None = setting(None, "Where the scanner stood, in scan units: estimated normals are turned "
                                      "toward it (exact for a single view); overrides a sensor position in the "
                                      "file.", metavar="X,Y,Z", parse=parse_point)

    def __post_init__(self):
        if self.viewpoint is not None:  # 'x,y,z' or any three numbers; validate() refuses the rest
            try:
                self.viewpoint = parse_point(self.viewpoint) if isinstance(self.viewpoint, str) else \
                    tuple(float(v) for v in self.viewpoint)
            except (TypeError, ValueError):
                pass

    def validate(self) -> None:
        super().validate()
        vp = self.viewpoint
        if vp is not None and not (isinstance(vp, tuple) and len(vp) == 3
                                   and all(isinstance(v, float) and math.isfinite(v) for v in vp)):
            raise SettingError(f"viewpoint must be three finite numbers x,y,z (scan units), got {vp!r}", "viewpoint")


@dataclass
class ModelConfig(Settings):
    """Architecture of the SIREN; stored in every checkpoint."""

    width: int = setting(128, "Units per hidden layer.", min=1)
    hidden_layers: int = setting(4, "Hidden (width x width) sine layers after the first one (paper: 3).", min=0)
    w0: float = setting(30.0, "Frequency factor of the first layer (paper: 30).", positive=True)
    w0_hidden: float = setting(30.0, "Frequency factor of the hidden layers (paper: 30).", positive=True)
    init: str = setting("siren", "'siren': the paper's initialization; 'sphere': f = SIREN + sphere distance "
                        "prior, the learned part starting small.", choices=("siren", "sphere"))
    sphere_radius: float = setting(0.5, "Radius (unit box) of the sphere prior of init 'sphere'.", positive=True)

    def __post_init__(self):
        validate(self)


@dataclass
class LossWeights(Settings):
    """Weight of each loss term (see siren3d.losses), and the off-surface sharpness alpha."""

    surface: float = setting(1e4, "Weight of |f| on scan points (paper: 3e3; 1e4 with lr_final 0.01 brought the fitted "
                             "surface 10-39 % closer to the reference on Lucy, the dragon, the bunny, a CAD plate and "
                             "thin parts, clean and sparse; 3e4 was worse again). A scan measured noisy gets 3e3 in place of "
                             "this default.", min=0)
    normal: float = setting(1e3, "Weight of 1 - cos(grad f, n) on scan points (paper: 1e2; 1e3 keeps finer relief: "
                            "Lucy clean 1.075x -> 1.054x Poisson's Chamfer, a dragon's scales visible; 3e3 left "
                            "stray pieces on Lucy).", min=0)
    eikonal: float = setting(5e1, "Weight of | |grad f| - 1 | on all points.", min=0)
    offsurface: float = setting(1e2, "Weight of exp(-alpha |f|) on uniform points.", min=0)
    sign: float = setting(1e3, "Weight of the inside/outside term on off-surface points (0: off, as in the paper).",
                          min=0)
    distance: float = setting(0.0, "Weight of |f - s d| on off-surface points of known side s and distance d to the "
                              "scan (0: off, as in the paper; it costs surface detail, and siren3d.field.ScanField "
                              "makes the field a distance away from the scan instead; it is learnt on the uniform "
                              "points, so it wants --uniform-ratio 1 or more).", min=0)
    alpha: float = setting(100.0, "Sharpness of the off-surface term exp(-alpha |f|).", positive=True,
                           flag="offsurface-alpha")


GRAD_METHODS = ("auto", "fused", "fused-bf16", "analytic", "autograd")
NOISE_MODES = ("auto", "low", "high")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FitConfig(Settings):
    """Everything that decides a fit; saved in model.pt and fit.json."""

    steps: int = setting(1900, "Optimizer steps (the first half's smaller, see --batch-start; a noisy or sparse scan "
                         "takes 1,700 whole ones unless this is set).", min=1)
    batch: int = setting(1536, "Scan points per step (off-surface points come on top, see the ratios).", min=1)
    batch_start: float = setting(0.5, "Fraction of the batch the first step draws, growing linearly to the whole batch "
                                 "at --batch-ramp of the fit, the learning rate with its root (1: the whole batch "
                                 "throughout). Early steps shape the field coarsely and need fewer points: with 0.5 "
                                 "and 1,890 steps, about the time of 1,700 whole ones, the field came 1-9 % closer to "
                                 "the surface of Lucy, a dragon and the bunny (two fit seeds each).",
                                 positive=True, max=1.0)
    batch_ramp: float = setting(0.5, "Fraction of the fit over which the batch grows from --batch-start to --batch.",
                                min=0, max=1.0)
    uniform_ratio: float = setting(0.5, "Uniform off-surface points per scan point (with 1.0, and 1,200 steps for "
                                   "the same work, Lucy's Chamfer was 1.05x Poisson's instead of 1.04x).", min=0)
    near_ratio: float = setting(0.25, "Near-surface off-surface points per scan point: they keep the field a distance "
                                "next to the surface (0.5 and 1,500 steps before: the same work in more steps "
                                "fitted every clean shape with a reference mesh 5-10 % closer; with none, and "
                                "2,000 steps, 5-15 %, but within 1 % of the surface f/d was 1.07-1.10 and the "
                                "error 5-10x).", min=0)
    near_scale: float = setting(1.0, "Near-surface noise, in local point spacings.", positive=True)
    sign_k: int = setting(8, "Scan neighbours that vote on an off-surface point's side.", min=1)
    lr: float = setting(8e-4, "Peak learning rate (Adam) on dense clean scans (median point spacing up to 0.008 of "
                        "the unit box: 100k points of a statue).", positive=True)
    lr_sparse: float = setting(2e-4, "Peak learning rate on noisy scans and on sparse ones (median spacing 0.012 of the "
                               "unit box or more: 5k points of a statue), log-interpolated in between; never above "
                               "lr. Clean scans end at lr * lr_final either way.", positive=True)
    lr_final: float = setting(0.001, "Learning rate at the last step, as a fraction of lr (cosine decay; 1: constant). "
                              "Noisy scans end at 1 % of their own rate unless this is changed from the default. 0.01 "
                              "before: clean fits came 6-20 % farther from the reference; 0.03 before that: Lucy's "
                              "11 % farther still.", min=0)
    warmup: int = setting(100, "Steps of linear learning-rate warm-up, at most a tenth of the steps (at the full rate "
                          "from the first step, fits of Lucy were wrecked at 1e-3 and collapsed at 1.2e-3; with 100 "
                          "steps of warm-up 1.2e-3 fitted well).", min=0)
    adam_beta2: float = setting(0.98, "Adam's decay of its squared-gradient average (torch's default 0.999 averages "
                                "over about 1,000 steps: in a fit of 1,700 the early, large gradients then still "
                                "shrink the late steps; 0.98 fitted Lucy, the bunny and the dragon 4-20 % closer).",
                                positive=True, max=0.9999)
    seed: int = setting(0, "Seeds the network and the sampler (CPU runs are reproducible).")
    device: str = setting("auto", "'auto' (CUDA when available), 'cpu' or 'cuda'.", choices=DEVICES)
    grad: str = setting("auto", "How grad f and its backward are computed: 'fused' (hand-written backward), "
                        "'fused-bf16' (its adjoint products in bfloat16), 'analytic' or 'autograd'; 'auto': "
                        "the faster of fused and fused-bf16 on this CPU (timed once, cached), fused on CUDA.",
                        choices=GRAD_METHODS)
    grad_auto: dict | None = setting(None, "How grad 'auto' chose: the method, the points/s it measured for each "
                                     "and whether they came from the cache (siren3d.autotune); filled in by fit.",
                                     cli=False)
    noise: str = setting("auto", "Treat the scan as clean ('low') or noisy ('high': trust the normals more); "
                         "'auto' measures it.", choices=NOISE_MODES)
    denoise: int = setting(2, "Passes of smoothing a noisy scan's points along their normals before the fit "
                           "(siren3d.denoise; 0: off, which also keeps normals siren3d estimated as they are; "
                           "scans treated as clean are never smoothed; normals siren3d estimated are first "
                           "estimated again over more neighbours, and the fit uses those).", min=0)
    checkpoint_every: int = setting(500, "Steps between resumable checkpoints (0: only at the end).", min=0)
    recover: int = setting(3, "Times a fit whose field collapsed (grad f no longer follows the normals) goes back "
                           "to its last healthy state and on at half the peak learning rate (0: never; the fit "
                           "then fails at its end).", min=0)
    margin: float = setting(DEFAULT_MARGIN, "Empty fraction of the unit box around the scan.", min=0, max=0.9,
                            cli=False)
    model: ModelConfig = setting(default_factory=ModelConfig)
    loss: LossWeights = setting(default_factory=LossWeights, prefix="weight-")



def parse_bbox(text: str) -> tuple[float, ...]:
    """'x0,y0,z0,x1,y1,z1' -> six floats (ValueError otherwise)."""
    try:
        nums = tuple(float(v) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        nums = ()
    if len(nums) != 6:
        raise ValueError("expected six numbers: xmin,ymin,zmin,xmax,ymax,zmax (scan units)")
    return nums


TRIM_MODES = ("auto", "off")


def parse_trim(text) -> str | float:
    """'auto', 'off' or a positive distance in point spacings (ValueError otherwise)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        word = str(text).strip().lower()
        if word in TRIM_MODES:
            return word
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"expected auto, off or a distance in point spacings, got '{text}'") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"a trim distance must be a positive number of point spacings, got {text} "
                         f"('off' keeps everything)")
    return value


@dataclass
class MeshConfig(Settings):
    """How a fitted field becomes a mesh (``siren3d mesh`` and :func:`siren3d.extract_mesh`)."""

    res: int = setting(256, "Grid samples along the box's longest side.", min=8)
    method: str = setting("sparse", "'sparse': evaluate only near the surface, coarse to fine; 'dense': every grid "
                          "sample.", choices=("sparse", "dense"))
    backend: str = setting("mcubes", "Marching cubes implementation.", choices=("mcubes", "skimage"))
    level: float = setting(0.0, "Iso level in scan units: 0 is the surface, L > 0 the offset surface at distance L "
                           "outside, L < 0 inside.")
    refine: int = setting(0, "Newton steps moving each vertex onto the level set (0: off; on fitted scans they did "
                          "not change the Chamfer distance and cost 1-2 s per step at res 512).", min=0, max=10)
    min_component: float = setting(0.02, "Drop pieces with fewer faces than this fraction of the largest "
                                   "(0: keep all).", min=0, max=1)
    keep_inner: bool = setting(False, "Keep closed pieces inside the main surface (dropped by default: a scanner "
                               "cannot see them).")
    pad: float = setting(0.0, "Grow the meshing box by this fraction on every side (for surfaces that touch it).",
                         min=0, max=10)
    bbox: tuple | None = setting(None, "Mesh this box, in scan units, instead of the fitted box.",
                                 metavar="X0,Y0,Z0,X1,Y1,Z1", parse=parse_bbox)
    trim: str | float = setting("auto", "Remove the surface farther than this from every scan point: a distance in "
                                "point spacings; 'auto': only where the scan is open (the unseen side of a single "
                                "view; a complete scan stays closed); 'off': keep it all.",
                                metavar="auto|off|SPACINGS", parse=parse_trim)
    write_support: bool = setting(False, "Write each vertex's support distance (to the nearest scan point, in point "
                                  "spacings) as the PLY vertex property 'quality' (MeshLab's vertex quality).")
    normals: bool = setting(True, "Vertex normals from grad f.", cli=False)
    device: str = setting("auto", "Where the network is evaluated (auto: CUDA when available).", choices=DEVICES)
    block: int = setting(4, "Cells per side of the finest sparse blocks (marching cubes runs per block).", min=1,
                         cli=False)
    safety: float = setting(1.0, "Keep a sparse region if |f(centre) - level| <= safety * its reach. Factors "
                            "0.25-1.0 all gave the dense faces at res 256 (the surface-following growth repairs "
                            "what a small factor misses); 0.5 measured slower, so 1.0.", positive=True, cli=False)
    chunk: int = setting(8192, "Points per network call (on the CPU 8,192 evaluated 1.6x faster than 65,536: the "
                         "layers' activations stay in cache; meshing at 512 took 15.6 s instead of 20.8 s).",
                         min=1, cli=False)

    def __post_init__(self):
        if self.bbox is not None:
            self.bbox = tuple(float(v) for v in self.bbox)


    def validate(self) -> None:
        validate(self)
        try:
            parse_trim(self.trim)
        except ValueError as e:
            raise SettingError(f"trim: {e}", "trim") from None
        if self.res > MAX_RES:
            raise SettingError(f"res {self.res} is above the largest supported resolution, {MAX_RES}: a {self.res}^3 "
                               f"grid is {self.res ** 3 / 1e9:.0f} billion samples, "
                               f"{self.res ** 3 * 4 / 2 ** 30:.0f} GiB as float32", "res")
        if self.bbox is not None:
            b = self.bbox
            if len(b) != 6 or not all(math.isfinite(v) for v in b) or not all(b[i + 3] > b[i] for i in range(3)):
                raise SettingError(f"bbox must be xmin,ymin,zmin,xmax,ymax,zmax with max > min, got {tuple(b)}", "bbox")


@dataclass
class ScoreConfig(Settings):
    """How ``siren3d eval`` compares a mesh with a reference (see siren3d.metrics)."""

    samples: int = setting(200_000, "Points sampled on each surface (two samples of 200,000 points from one "
                           "surface differ by a Chamfer-L1 of about 0.001 of the diagonal).", min=100)
    seed: int = setting(0, "Seeds the surface sampling.")


# --------------------------------------------------------------------------------------------
# Presets

#: Named departures from the defaults (benchmarks/quality.py measures each).
PRESETS: dict[str, dict] = {
    # fast: half the points per step (600 steps instead left ghost pieces on the bunny), and the normal
    # term at 3e2: with 768 points per step the default 1e3 collapsed the fit of Lucy (seeds 0 and 1).
    "fast": {"batch": 768, "batch_start": 1.0, "steps": 1700, "loss.normal": 3e2},
    # high: 2.5x the steps of 4/3 the points (about 3.3x the default's work).
    "high": dict(steps=4300, batch=2048, batch_start=1.0),
    # The SIREN paper's setting: 256 x 3 hidden, lr 1e-4 (torch's Adam), uniform off-surface points, large batches.
    "paper": {"noise": "low", "steps": 10000, "batch": 250_000, "batch_start": 1.0, "uniform_ratio": 1.0, "near_ratio": 0.0,
              "lr": 1e-4, "lr_final": 1.0, "warmup": 0, "adam_beta2": 0.999, "model.width": 256, "model.hidden_layers": 3,
              "model.init": "siren", "loss.surface": 3e3, "loss.normal": 1e2, "loss.sign": 0.0, "loss.distance": 0.0},
}
QUALITY_LEVELS = ("fast", "default", "high")


def describe_preset(name: str) -> str:
    """What a preset changes, from PRESETS and the defaults (for help texts): 'batch 768 (default 1536)'."""
    if name in (None, "default"):
        return "the defaults"
    base = FitConfig()

    def default_of(path: str):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    return ", ".join(f"{k.replace('.', ' ')} {v:g} (default {default_of(k):g})" if isinstance(v, (int, float))
                     and not isinstance(v, bool) else f"{k} {v}" for k, v in PRESETS[name].items())


def fit_config(preset: str | None = None, **overrides) -> FitConfig:
    """A validated FitConfig: the defaults, then a named preset (None or 'default': none), then overrides
    (see :func:`with_overrides`)."""
    cfg = FitConfig()
    if preset not in (None, "default"):
        if preset not in PRESETS:
            raise SettingError(f"unknown preset '{preset}'; choose from: {', '.join(PRESETS)}")
        cfg = with_overrides(cfg, PRESETS[preset])
    cfg = with_overrides(cfg, overrides)
    cfg.validate()
    return cfg
