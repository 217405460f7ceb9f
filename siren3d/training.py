"""Fitting a SIREN to a scan: the training loop, checkpoints, resume and the run folder.

A run folder holds ``model.pt`` (see :mod:`siren3d.checkpoint`), ``fit.json`` (config, input,
per-step loss history, timings) and ``loss.png``. Training is deterministic on the CPU for a given
seed, and an interrupted run resumed with ``resume=True`` ends with the same weights as an
uninterrupted one: the model, the Adam moments, the sampler's RNG state and the history are all
in the checkpoint, and interrupts only take effect between steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .errors import Siren3dError
from .io import Scan, atomic_output, file_sha256
from .losses import TERMS, LossWeights, loss_terms, total_loss
from .model import ModelConfig, Siren
from .normalization import DEFAULT_MARGIN, Normalization
from .optim import Adam
from .sampling import Sampler, noise_ratio

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("total",) + TERMS
GRAD_METHODS = ("auto", "fused", "fused-bf16", "analytic", "autograd")
NOISE_MODES = ("auto", "low", "high")
#: noise_ratio at or above which a scan is treated as noisy (clean scans: 0.1-0.3; see noise_ratio).
NOISY_RATIO = 0.5
#: Normal-term weight for noisy scans. On the bunny with 0.5 % noise (benchmarks/quality.py's noisy
#: regime), normal weight 100 / 300 / 1000 / 2000 gave Chamfer 0.94x / 0.90x / 0.885x / 0.892x Poisson's
#: with seed 0, and 1000 / 2000 gave 0.912x / 0.878x with seed 1 (3000 left an inner shell, which
#: meshing drops, then 0.892x). On clean and sparse inputs 300 and 1000 left a ghost piece, so the
#: weight is raised only where the noise is measured.
NOISY_NORMAL_WEIGHT = 2e3


@dataclass
class FitConfig:
    """Everything that decides a fit; saved in model.pt and fit.json."""

    steps: int = 1200
    """Optimizer steps."""
    batch: int = 2048
    """Scan points per step (off-surface points come on top, see the ratios)."""
    uniform_ratio: float = 1.0
    """Uniform off-surface points per scan point."""
    near_ratio: float = 0.5
    """Near-surface off-surface points per scan point."""
    near_scale: float = 1.0
    """Near-surface noise, in units of the local point spacing."""
    sign_k: int = 8
    """Scan neighbours that vote on an off-surface point's side (used when loss.sign > 0)."""
    lr: float = 2e-4
    """Adam learning rate (peak)."""
    lr_final: float = 0.1
    """Learning rate at the last step as a fraction of lr (cosine decay; 1 = constant)."""
    warmup: int = 0
    """Steps of linear learning-rate warm-up."""
    seed: int = 0
    """Seeds the network initialization and the sampler."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    grad: str = "auto"
    """How grad f and its backward are computed: 'fused' (hand-written backward), 'fused-bf16' (its
    adjoint products in bfloat16), 'analytic' or 'autograd'; 'auto' is fused-bf16 on a CPU that
    multiplies bf16 natively (AVX512-BF16, AMX), else fused. The fit records the one it used."""
    noise: str = "auto"
    """'auto': measure the scan's noise (sampling.noise_ratio) and, at NOISY_RATIO or more, weight the
    normal term NOISY_NORMAL_WEIGHT (trust the normals more than the positions); 'low' or 'high':
    decide without measuring."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps (and at the end)."""
    margin: float = DEFAULT_MARGIN
    """Empty fraction of the unit box around the scan."""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        known = {f.name for f in fields(cls)} - {"model", "loss"}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.model = ModelConfig.from_dict(d.get("model", {}))
        cfg.loss = LossWeights.from_dict(d.get("loss", {}))
        return cfg

    def validate(self) -> None:
        if self.steps < 1:
            raise Siren3dError("--steps must be at least 1")
        if self.batch < 1:
            raise Siren3dError("--batch must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise Siren3dError("--lr must be a positive number")
        if self.grad not in GRAD_METHODS:
            raise Siren3dError(f"grad must be one of {', '.join(GRAD_METHODS)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise Siren3dError(f"unknown device '{self.device}': use auto, cpu or cuda")
        if self.noise not in NOISE_MODES:
            raise Siren3dError(f"unknown noise setting '{self.noise}': use {', '.join(NOISE_MODES)}")


PRESETS: dict[str, dict] = {
    # --quality fast / high around the defaults (benchmarks/quality.py measures each).
    # fast: half the points per step (600 steps instead left ghost pieces on the bunny).
    "fast": dict(batch=1024),
    "high": dict(steps=4000, batch=4096),
    # The SIREN paper's setting: 256 x 3 hidden, lr 1e-4, uniform off-surface points, large batches.
    "paper": dict(noise="low", steps=10000, batch=250_000, uniform_ratio=1.0, near_ratio=0.0, lr=1e-4,
                  lr_final=1.0, warmup=0, model=dict(width=256, hidden_layers=3, init="siren"), loss=dict(sign=0.0)),
}


def config_from_preset(name: str | None, **overrides) -> FitConfig:
    """A FitConfig from a named preset (None: the defaults) with keyword overrides applied."""
    base = FitConfig().to_dict()
    if name is not None:
        if name not in PRESETS:
            raise Siren3dError(f"unknown preset '{name}'; choose from: {', '.join(PRESETS)}")
        preset = dict(PRESETS[name])
        base["model"].update(preset.pop("model", {}))
        base["loss"].update(preset.pop("loss", {}))
        base.update(preset)
    for k, v in overrides.items():
        if v is None:
            continue
        if k in base["model"]:
            base["model"][k] = v
        elif k in base["loss"]:
            base["loss"][k] = v
        else:
            base[k] = v
    return FitConfig.from_dict(base)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise Siren3dError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def step_memory_bytes(config: FitConfig) -> int:
    """Rough working memory of one training step: activations kept for the two backward passes.

    Per point the fused kernel keeps about four (width,) vectors per sine layer (h, cos z, v, u),
    and its backward (which works in place where it can) a few more; within ~10 % of the measured
    peak on the CPU (tests/test_faults.py).
    """
    points = config.batch * (1 + config.uniform_ratio + config.near_ratio)
    layers = config.model.hidden_layers + 1
    return int(points * config.model.width * (4 * layers + 5) * 4)


def available_memory(device: torch.device | None = None) -> int | None:
    """Free memory in bytes: free GPU memory for CUDA, MemAvailable for the CPU (None: unknown)."""
    if device is not None and device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no answer is not an error
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_step_memory(config: FitConfig, device: torch.device) -> None:
    """Refuse a batch whose step cannot fit in memory, before anything is allocated."""
    need = step_memory_bytes(config)
    avail = available_memory(device)
    if avail is not None and need > avail:
        per_point = need / config.batch
        fits = int(0.8 * avail / per_point)
        raise Siren3dError(
            f"--batch {config.batch:,} needs about {need / 2**30:,.1f} GiB per training step but only "
            f"{avail / 2**30:,.1f} GiB is available on {device.type}; use --batch {max(fits, 1):,} or less")


def check_output_dir(run_dir: Path) -> None:
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


def lr_at(step: int, cfg: FitConfig) -> float:
    """Learning rate for a 0-based step: linear warm-up, then cosine decay to lr * lr_final."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    t = min(max(step - cfg.warmup, 0) / span, 1.0)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))


class FitInterrupted(Exception):
    """Training was interrupted (Ctrl-C / SIGTERM); a resumable checkpoint was saved."""

    def __init__(self, step: int, steps: int, path: str):
        self.step, self.steps, self.path = step, steps, path
        super().__init__(f"interrupted at step {step}/{steps}; checkpoint saved to {path}")


class FitDiverged(Siren3dError):
    """The loss became NaN/Inf; the last good state was saved."""


@dataclass
class FitResult:
    model: Siren
    normalization: Normalization
    config: FitConfig
    run_dir: Path
    history: np.ndarray  # (steps, 5): total, surface, normal, eikonal, offsurface
    seconds: float
    points_per_second: float

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.pt"


@contextlib.contextmanager
def _deferred_interrupts():
    """Turn SIGINT/SIGTERM into a flag checked between steps (a second Ctrl-C aborts at once)."""
    flag = {"hit": 0}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["hit"] += 1
        if flag["hit"] > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _train_state(optimizer: Adam, sampler: Sampler, history: list) -> dict:
    return {
        "optimizer": optimizer.state_dict(),
        "rng": sampler.get_state(),
        "history": torch.tensor(np.asarray(history, dtype=np.float32).reshape(-1, len(HISTORY_COLUMNS))),
    }


def resolve_grad(config: FitConfig, device: torch.device) -> FitConfig:
    """``grad='auto'`` made concrete for this device (see FitConfig.grad)."""
    if config.grad != "auto":
        return config
    from .kernels import cpu_has_fast_bf16

    return replace(config, grad="fused-bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fused")


def adapt_to_noise(config: FitConfig, points: np.ndarray) -> tuple[FitConfig, dict]:
    """The config to train with on these points, and what was decided: {"ratio", "noisy", "normal_weight"}.

    With ``noise='auto'`` the scan's noise_ratio decides; a noisy scan gets the normal term weighted
    NOISY_NORMAL_WEIGHT (never lowered). The returned config records the weights actually used.
    """
    ratio = noise_ratio(points) if config.noise == "auto" else None
    noisy = config.noise == "high" or (ratio is not None and ratio >= NOISY_RATIO)
    if noisy and config.loss.normal < NOISY_NORMAL_WEIGHT:
        config = replace(config, loss=replace(config.loss, normal=NOISY_NORMAL_WEIGHT))
    if ratio is not None:
        log.info("scan noise: %.2f x the point spacing (clean scans: 0.1-0.3): %s", ratio,
                 f"treated as noisy, normal weight {config.loss.normal:g} (--noise low to turn off)" if noisy
                 else "treated as clean")
    return config, {"ratio": None if ratio is None else round(ratio, 4), "noisy": noisy,
                    "normal_weight": config.loss.normal}


def fit(scan: Scan, config: FitConfig | None = None, run_dir: str | Path | None = None, *,
        resume: bool = False, progress: bool = True,
        callback: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train a SIREN on ``scan`` and write the run folder.

    With ``resume``, continue from ``run_dir/model.pt`` (same input, same config; ``config.steps``
    may be raised to train longer). Raises FitInterrupted after saving on Ctrl-C / SIGTERM, and
    FitDiverged after saving the last good state if the loss becomes NaN/Inf.
    """
    config = config or FitConfig()
    config.validate()
    run_dir = Path(run_dir or Path("runs") / (Path(scan.path).stem or "scan"))
    model_path = run_dir / "model.pt"
    device = resolve_device(config.device)
    t_setup = time.perf_counter()

    ckpt: Checkpoint | None = None
    noise = None  # a resumed fit keeps the weights its config already holds
    if resume:
        if not model_path.exists():
            raise Siren3dError("nothing to resume: no model.pt in the run folder", run_dir)
        ckpt = load_checkpoint(model_path)
        if ckpt.train is None:
            raise Siren3dError("the model file has no training state to resume from", model_path)
        try:
            old = FitConfig.from_dict(ckpt.meta["fit"])
        except (KeyError, TypeError, ValueError) as e:
            raise Siren3dError(f"the model file's fit settings are unusable ({e})", model_path) from None
        config = replace(old, steps=max(config.steps, old.steps), device=config.device,
                         checkpoint_every=config.checkpoint_every)
        normalization = ckpt.normalization
        if scan.path and ckpt.meta.get("input", {}).get("points") != len(scan):
            raise Siren3dError("resume needs the same scan the run was started with "
                               f"({ckpt.meta.get('input', {}).get('path')})", scan.path)
    else:
        normalization = Normalization.fit(scan.points, config.margin)
        config, noise = adapt_to_noise(config, scan.points)
    config = resolve_grad(config, device)

    check_step_memory(config, device)
    check_output_dir(run_dir)
    created_run_dir = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise Siren3dError(f"cannot write to the output folder ({e.strerror or e})", run_dir) from None

    torch.manual_seed(config.seed)
    model = Siren(config.model)
    if ckpt is not None:
        model.load_state_dict(ckpt.model.state_dict())
    model.to(device).train()
    optimizer = Adam(model.parameters(), lr=config.lr)
    sampler = Sampler(normalization.to_unit(scan.points), scan.normals, config.batch,
                      uniform_ratio=config.uniform_ratio, near_ratio=config.near_ratio,
                      near_scale=config.near_scale, seed=config.seed, device=device,
                      sign_k=config.sign_k if config.loss.sign > 0 else 0)
    history: list[list[float]] = []
    start = 0
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt.train["optimizer"])
            sampler.set_state(ckpt.train["rng"])
            history = ckpt.train["history"].tolist()
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise Siren3dError(f"the model file's training state is unusable, cannot resume "
                               f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})",
                               model_path) from None
        start = ckpt.step
    points_per_step = config.batch + sampler.n_uniform + sampler.n_near
    input_info = {"path": scan.path, "sha256": file_sha256(scan.path) if scan.path and Path(scan.path).is_file() else None,
                  "points": len(scan), "normals_estimated": scan.normals_estimated, "notes": scan.notes,
                  **({"noise": noise} if noise is not None else {})}
    prior_seconds = float(ckpt.meta.get("timings", {}).get("train_s", 0.0)) if ckpt else 0.0
    setup_s = time.perf_counter() - t_setup

    def meta(step: int, train_s: float) -> dict:
        return {"siren3d": __version__, "step": step, "fit": config.to_dict(), "input": input_info,
                "timings": {"train_s": prior_seconds + train_s}}

    saved = {"step": start if ckpt is not None else None}

    def save(step: int, train_s: float, rng: torch.Tensor | None = None) -> None:
        train = _train_state(optimizer, sampler, history)
        if rng is not None:
            train["rng"] = rng
        save_checkpoint(model_path, model, normalization, meta(step, train_s), train=train)
        saved["step"] = step

    def diverged(what: str, at_step: int) -> FitDiverged:
        # The file on disk is left as it is: it holds the last state whose loss was seen finite.
        if saved["step"] is not None:
            kept = f"the last good checkpoint (step {saved['step']}) is kept in {model_path}"
        else:
            kept = "no checkpoint had been saved yet, so nothing was written"
            if created_run_dir:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # only if empty: nothing half-written stays behind
        return FitDiverged(
            f"training diverged: {what} at step {at_step} (learning rate {lr_at(at_step - 1, config):.3g}); "
            f"{kept}. Refit with a lower --lr "
            f"(now {config.lr:g}; try {config.lr / 10:g}) or a smaller --w0 (now {config.model.w0:g})",
            run_dir)

    def weights_finite() -> bool:
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())

    bar = None
    if progress:
        from tqdm.auto import tqdm

        # Not a terminal (CI logs, files): a line every 10 % instead of a redrawn bar.
        interactive = sys.stderr.isatty()
        bar = tqdm(total=config.steps, initial=start, unit="step", dynamic_ncols=True, leave=True,
                   desc=f"fit {Path(scan.path).name or 'scan'}", file=sys.stderr,
                   mininterval=0.2 if interactive else 0, miniters=None if interactive else max(config.steps // 10, 1),
                   maxinterval=10 if interactive else float("inf"))  # else tqdm's monitor lowers miniters
    t0 = time.perf_counter()
    step = start
    try:
        with _deferred_interrupts() as interrupted:
            while step < config.steps:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, config)
                rng_before = sampler.get_state()  # the state a checkpoint of `step` steps holds
                batch = sampler.sample()
                off = torch.cat([batch.uniform, batch.near])
                x = torch.cat([batch.on, off])
                f, g = model.sdf_and_grad(x, method=config.grad)
                nb = len(batch.on)
                terms = loss_terms(f[:nb], g[:nb], batch.normals, f[nb:nb + len(batch.uniform)], g[nb:],
                                   config.loss.alpha, f[nb:], batch.off_sign)
                loss = total_loss(terms, config.loss)
                values = torch.stack([loss.detach()] + [terms[k].detach() for k in TERMS]).tolist()
                if not all(math.isfinite(v) for v in values):
                    raise diverged(f"the loss became {values[0]}", step + 1)
                # Periodic checkpoints are written here, once the weights after `step` steps have
                # shown a finite loss, so a checkpoint on disk is always a good one.
                if config.checkpoint_every and step > start and step % config.checkpoint_every == 0:
                    save(step, time.perf_counter() - t0, rng=rng_before)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.append(values)
                step += 1
                if callback is not None:
                    callback(step, dict(zip(HISTORY_COLUMNS, values)))
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step == config.steps:
                        rate = (step - start) * points_per_step / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix_str(
                            f"loss {values[0]:.3g} | surf {values[1]:.2e} norm {values[2]:.3f} "
                            f"eik {values[3]:.3f} off {values[4]:.3f} sign {values[5]:.1e} | {rate / 1e3:.0f}k pts/s", refresh=False)
                if interrupted["hit"]:
                    if not weights_finite():
                        raise diverged("the weights became NaN/Inf", step)
                    save(step, time.perf_counter() - t0)
                    raise FitInterrupted(step, config.steps, str(model_path))
    finally:
        if bar is not None:
            bar.close()
    train_s = time.perf_counter() - t0
    if not weights_finite():
        raise diverged("the weights became NaN/Inf", step)
    save(step, train_s)
    rate = (step - start) * points_per_step / max(train_s, 1e-9)
    hist = np.asarray(history, dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS))
    write_fit_json(run_dir, meta(step, train_s), hist, setup_s=setup_s, points_per_second=rate)
    try:
        plot_losses(hist, run_dir / "loss.png")
    except Exception as e:  # a plot must never fail a finished fit
        log.warning("could not write loss.png: %s", e)
    model.eval()
    return FitResult(model=model, normalization=normalization, config=config, run_dir=run_dir,
                     history=hist, seconds=prior_seconds + train_s, points_per_second=rate)


def write_fit_json(run_dir: Path, meta: dict, history: np.ndarray, *, setup_s: float,
                   points_per_second: float) -> None:
    doc = dict(meta)
    doc["timings"] = {**meta.get("timings", {}), "setup_s": setup_s, "points_per_second": points_per_second}
    doc["final_loss"] = dict(zip(HISTORY_COLUMNS, history[-1].tolist())) if len(history) else {}
    doc["history"] = {"columns": list(HISTORY_COLUMNS), "rows": np.round(history, 7).tolist()}
    with atomic_output(run_dir / "fit.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


def plot_losses(history: np.ndarray, path: Path) -> None:
    """Each unweighted loss term per step, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = np.arange(1, len(history) + 1)
    for i, name in enumerate(HISTORY_COLUMNS[1:], start=1):
        ax.plot(steps, np.maximum(history[:, i], 1e-12), label=name, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss term (unweighted)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
