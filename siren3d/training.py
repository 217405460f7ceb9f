"""Fitting a SIREN to a scan: the training step, the loop, checkpoints, resume and the run folder.

:class:`Trainer` owns the network, the optimizer and the sampler, and its :meth:`Trainer.step` is
the only training step: :func:`fit` loops over it, ``benchmarks/train_step.py`` times it and the
tests exercise it. A run folder holds ``model.pt`` (see :mod:`siren3d.checkpoint`), ``fit.json``
(config, input, per-step loss history, timings) and ``loss.png``. Training is deterministic on the
CPU for a given seed, and an interrupted run resumed with ``resume=True`` ends with the same weights
as an uninterrupted one: the model, the Adam moments, the sampler's RNG state and the history are
all in the checkpoint, and interrupts only take effect between steps. (One exception: a fit whose
field collapses goes back to a snapshot kept in memory, see _CollapseGuard; a resumed run starts its
snapshots afresh from the checkpoint, so where a collapse falls after the resume, it may go back to
another step than the uninterrupted run did.)
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ._version import __version__
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import FitConfig, LossWeights
from .denoise import MIN_POINTS as DENOISE_MIN_POINTS, denoise_along_normals, normals_to_smooth_along
from .errors import SettingError, Siren3dError
from .files import atomic_output, check_output_dir, file_sha256
from .io import Scan
from .losses import TERMS, loss_terms, total_loss
from .model import Siren
from .normalization import Normalization
from .optim import Adam
from .sampling import Sampler, scan_sampling
from .support import ScanSupport
from .system import available_memory, keep_freed_memory, resolve_device

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("total",) + TERMS
#: Noise ratio at or above which a scan is treated as noisy (clean scans: 0.1-0.3; see scan_sampling).
NOISY_RATIO = 0.5
#: Normal-term weight for noisy scans. On the bunny with 0.5 % noise (benchmarks/quality.py's noisy
#: regime), normal weight 100 / 300 / 1000 / 2000 gave Chamfer 0.94x / 0.90x / 0.885x / 0.892x Poisson's
#: with seed 0, and 1000 / 2000 gave 0.912x / 0.878x with seed 1 (3000 left an inner shell, which
#: meshing drops, then 0.892x). On clean and sparse inputs 300 and 1000 left a ghost piece then (a
#: 2-hidden-layer network); with 4 hidden layers and the rate by scan 1e3 is the default for every
#: scan (LossWeights.normal) and a noisy one gets this much.
NOISY_NORMAL_WEIGHT = 2e3
#: Surface-term weight for noisy scans, in place of the default (LossWeights.surface, 1e4; a weight set
#: on purpose is kept): a noisy scan's positions are trusted less than its normals. With noise of 0.5 %
#: of the diagonal, 1e4 put the fitted surface of the bunny 9 % and of the CAD plate 12 % farther from
#: the reference than 3e3 (Lucy 2 % closer, the dragon 2 % farther; distances to the reference
#: surface, both with lr_final 0.01).
NOISY_SURFACE_WEIGHT = 3e3
#: Final learning rate of noisy scans, as a fraction of their own peak, in place of the default
#: (FitConfig.lr_final; a fraction set on purpose is kept): a low rate kept to the end averages the
#: noise, and lower still it did not help (with Adam's beta2 0.98, ending at 0.1 % instead of 1 %:
#: noisy Lucy 4 % farther from the reference, the noisy dragon 1 % closer).
NOISY_LR_FINAL = 0.01
#: The peak learning rate follows the scan's median point spacing in the unit box (100k points of a
#: statue: 0.003-0.004, of the raw gargoyle scan 0.007; 5k points: 0.012-0.018): ``lr`` at
#: DENSE_SPACING or finer, ``lr_sparse`` at SPARSE_SPACING or coarser, log-interpolated between, and
#: the rate decays to the same final rate either way (lr * lr_final). benchmarks/quality.py, Chamfer /
#: Poisson's at lr 8e-4 against 2e-4: Lucy clean 1.06x / 1.18x, the gargoyle clean 1.10x / 1.18x
#: (spacing 0.0071; at 4e-4 ending at 1.2e-5 it was 1.26x), but Lucy sparse 1.27x / 0.79x and the
#: bunny's 1.10x / 0.86x: on sparse points a high rate carves detail the points do not hold into
#: bumps between them; sparse fits ending at 6e-6 instead of 2.4e-5 gave the bunny 0.92x / 0.87x,
#: Lucy 0.85x / 0.81x. Noisy scans (their spacing is raised by the noise too: 0.0085 on the
#: bunny's 100k) train at ``lr_sparse`` ending at a fraction of it (NOISY_LR_FINAL): with the spacing rule and
#: the dense end rate the bunny, cad plate and thin parts gave 0.94x / 0.85x / 1.03x, with a rate of
#: 2-3e-4 ending at 6-8e-6 0.83x / 0.83x / 0.97x (a low final rate averages the noise).
DENSE_SPACING, SPARSE_SPACING = 0.008, 0.012
#: Steps of a default fit whose scan is noisy or not dense (median spacing over DENSE_SPACING):
#: such a fit draws the whole batch at every step (``batch_start`` 1, where it is the default), as
#: before the growing batch, and so takes the steps it took then, the time of the
#: default's growing ones. The growing batch did not help them (the quality benchmark, thirteenth
#: session: noisy inputs 0.3-0.8 % farther from the reference than before on the bunny, Lucy, the
#: gargoyle and the plate; sparse Lucy 0.737x -> 0.775x Poisson's Chamfer, the sparse gargoyle
#: 0.807x -> 1.157x, a pocket inside the body kept), while every clean input came closer.
WHOLE_BATCH_STEPS = 1700


def step_memory_bytes(config: FitConfig) -> int:
    """Rough working memory of one training step: activations kept for the two backward passes.

    Per point the fused kernel keeps about four (width,) vectors per sine layer (h, cos z, v, u),
    and its backward (which works in place where it can) a few more; within ~10 % of the measured
    peak on the CPU (tests/test_faults.py).
    """
    points = config.batch * (1 + config.uniform_ratio + config.near_ratio)
    layers = config.model.hidden_layers + 1
    return int(points * config.model.width * (4 * layers + 5) * 4)


def check_step_memory(config: FitConfig, device: torch.device) -> None:
    """Refuse a batch whose step cannot fit in memory, before anything is allocated."""
    need = step_memory_bytes(config)
    avail = available_memory(device)
    if avail is not None and need > avail:
        per_point = need / config.batch
        fits = int(0.8 * avail / per_point)
        raise SettingError(
            f"batch {config.batch:,} needs about {need / 2**30:,.1f} GiB per training step but only "
            f"{avail / 2**30:,.1f} GiB is available on {device.type}; use batch {max(fits, 1):,} or less", "batch")


#: A growing batch takes sizes in steps of this many scan points: every new shape of its matrix
#: products costs a kernel set-up (the bf16 products ran 3x slower when each step had a new size).
BATCH_QUANTUM = 128


def batch_at(step: int, cfg: FitConfig) -> int:
    """Scan points drawn at a 0-based step: ``batch_start`` of the batch at the first step, growing
    linearly to the whole batch at ``batch_ramp`` of the fit, in steps of BATCH_QUANTUM."""
    if cfg.batch_start >= 1.0 or cfg.batch_ramp <= 0:
        return cfg.batch
    t = step / max(cfg.batch_ramp * cfg.steps, 1.0)
    if t >= 1.0:  # the whole batch, a multiple of the quantum or not
        return cfg.batch
    size = cfg.batch * (cfg.batch_start + (1.0 - cfg.batch_start) * t)
    return min(cfg.batch, max(BATCH_QUANTUM, int(size // BATCH_QUANTUM) * BATCH_QUANTUM))


def lr_at(step: int, cfg: FitConfig) -> float:
    """Learning rate for a 0-based step: linear warm-up (``warmup`` steps, at most a tenth of the
    fit, so a short fit is not mostly warm-up), then cosine decay to lr * lr_final; while the batch
    grows (:func:`batch_at`) times the root of the fraction drawn, Adam's rule for a smaller batch
    (at the full rate, half-size early steps made Lucy's fit collapse with both seeds tried, and a
    fourth root left one fit at twice the surface error)."""
    warmup = min(cfg.warmup, cfg.steps // 10)
    grow = math.sqrt(batch_at(step, cfg) / cfg.batch)
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup * grow
    span = max(cfg.steps - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t))) * grow


class FitInterrupted(Exception):
    """Training was interrupted (Ctrl-C / SIGTERM); a resumable checkpoint was saved."""

    def __init__(self, step: int, steps: int, path: str):
        self.step, self.steps, self.path = step, steps, path
        super().__init__(f"interrupted at step {step}/{steps}; checkpoint saved to {path}")


class FitDiverged(Siren3dError):
    """The loss became NaN/Inf; the last good state was saved."""


class FitFailed(Siren3dError):
    """Training ran to the end without fitting the scan (see fit_failure); the run was saved for inspection."""


#: A fit whose grad f ends this far from the scan's normals (mean 1 - cos over the last FAIL_WINDOW
#: steps) has not fitted the scan: it collapsed to a field with no surface near the points (seen at
#: lr 1.2e-3 on Lucy, whose mesh step then searched the whole box for 5 minutes to say so). Fits that
#: work end far below: under 0.05 on clean scans (4e-4 on the bundled sample at normal weight 1e3),
#: noisy ones a few tenths; 1 is no agreement at all.
FAIL_NORMAL = 0.7
FAIL_WINDOW = 50
#: A collapse is caught while training, too: the fit goes back to its last healthy state (see
#: _CollapseGuard), kept in memory every GUARD_EVERY steps while the normal term's mean over the last
#: FAIL_WINDOW steps is under HEALTHY_NORMAL (noisy Lucy, smoothed, ran at 0.14-0.21 after step 200).
GUARD_EVERY = 100
HEALTHY_NORMAL = FAIL_NORMAL / 2


def fit_failure(history: np.ndarray, config: FitConfig) -> str | None:
    """Why the fit with this loss history (HISTORY_COLUMNS rows) did not fit its scan, or None."""
    if len(history) < FAIL_WINDOW or config.loss.normal <= 0:  # (without the normal term: nothing to judge by)
        return None
    normal = float(np.mean(history[-FAIL_WINDOW:, HISTORY_COLUMNS.index("normal")]))
    if not normal > FAIL_NORMAL:
        return None
    return (f"training failed: the field does not follow the scan (over the last {FAIL_WINDOW} steps grad f "
            f"agrees with the normals only to a mean 1 - cos of {normal:.2f}; fits that work end far below "
            f"{FAIL_NORMAL:g}: under 0.05 on clean scans, a few tenths on noisy ones). "
            f"The learning rate is probably too high for this scan: refit with a lower lr (now {config.lr:g}; "
            f"try {config.lr / 3:.2g})")


@dataclass
class FitResult:
    model: Siren
    normalization: Normalization
    config: FitConfig
    run_dir: Path
    history: np.ndarray  # (steps, len(HISTORY_COLUMNS)): the total, then each loss term
    seconds: float
    points_per_second: float
    support: ScanSupport | None = None  # the scan's support, as stored in model.pt (for extract_mesh)

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


def resolve_grad(config: FitConfig, device: torch.device) -> FitConfig:
    """``grad='auto'`` made concrete for this device: the method whose :meth:`Trainer.step` runs
    faster here, timed once per machine and network size, then cached (:mod:`siren3d.autotune`);
    ``grad_auto`` records how it was chosen. A batch too large for memory is not timed: fit refuses it."""
    if config.grad != "auto":
        return config
    from . import autotune

    try:
        check_step_memory(config, device)
    except SettingError:
        return replace(config, grad="fused", grad_auto={"method": "fused", "reason": "not timed: too large for memory"})
    method, record = autotune.resolve(config, device, lambda cfg, dev: autotune.measure(cfg, dev, Trainer))
    return replace(config, grad=method, grad_auto=record)


def cautious_lr(config: FitConfig) -> float:
    """The peak rate of sparse and noisy scans: ``lr_sparse``, which only ever lowers the rate (a low
    ``lr``, as the paper preset's, stays as it is)."""
    return min(config.lr, config.lr_sparse)


def is_dense(spacing: float) -> bool:
    """Whether a scan of this median point spacing (unit box) is dense: measured (over 0), and at
    DENSE_SPACING or finer. A dense clean scan gets ``lr`` and the growing batch."""
    return 0 < spacing <= DENSE_SPACING


def lr_for_spacing(config: FitConfig, spacing: float) -> float:
    """The peak learning rate for a scan of this median point spacing (unit box): see DENSE_SPACING;
    at SPARSE_SPACING or coarser, and when it cannot be measured, :func:`cautious_lr`."""
    if is_dense(spacing):
        return config.lr
    sparse = cautious_lr(config)
    if spacing <= 0:  # too few points to measure: the cautious rate
        return sparse
    t = (math.log(spacing) - math.log(DENSE_SPACING)) / (math.log(SPARSE_SPACING) - math.log(DENSE_SPACING))
    if t <= 0 or t >= 1:  # exactly the setting, not exp(log(...))
        return config.lr if t <= 0 else sparse
    return math.exp((1 - t) * math.log(config.lr) + t * math.log(sparse))


def adapt_to_scan(config: FitConfig, unit_points: np.ndarray) -> tuple[FitConfig, dict]:
    """The config to train with on these points (unit box), and what was decided, for fit.json:
    {"ratio", "noisy", "normal_weight", "surface_weight", "spacing", "lr", "batch_start", "steps"}.

    With ``noise='auto'`` the scan's noise ratio (:func:`siren3d.sampling.scan_sampling`) decides; a
    noisy scan gets the normal term weighted NOISY_NORMAL_WEIGHT (never lowered) and the surface term
    NOISY_SURFACE_WEIGHT (where it is the default; a weight set on purpose is kept). The peak learning
    rate follows the point spacing (:func:`lr_for_spacing`) and a noisy scan's ends at NOISY_LR_FINAL
    of it (where ``lr_final`` is the default); only a noisy scan keeps ``denoise`` (its
    points smoothed along their normals before the fit), and only with at least
    :data:`siren3d.denoise.MIN_POINTS` points. A noisy scan, or one not dense (spacing over
    DENSE_SPACING), draws the whole batch at every step and takes WHOLE_BATCH_STEPS (where
    ``batch_start`` and ``steps`` are the defaults). The returned config holds what is used.
    """
    spacing, measured = scan_sampling(unit_points)
    ratio = measured if config.noise == "auto" else None
    noisy = config.noise == "high" or (ratio is not None and ratio >= NOISY_RATIO)
    if noisy:  # the surface weight only when it is the default: a weight set on purpose is kept
        surface = NOISY_SURFACE_WEIGHT if config.loss.surface == LossWeights().surface else config.loss.surface
        config = replace(config, loss=replace(config.loss, normal=max(config.loss.normal, NOISY_NORMAL_WEIGHT),
                                              surface=surface))
    smooth = noisy and len(unit_points) >= DENOISE_MIN_POINTS
    if config.denoise and not smooth:
        if noisy:
            log.info("%d points: too few to smooth along the normals (%d or more)", len(unit_points),
                     DENOISE_MIN_POINTS)
        config = replace(config, denoise=0)  # the config says what was done
    noisy_weights = (f"treated as noisy, normal weight {config.loss.normal:g}, surface weight "
                     f"{config.loss.surface:g}")
    if ratio is not None:
        log.info("scan noise: %.2f x the point spacing (clean scans: 0.1-0.3): %s", ratio,
                 f"{noisy_weights} (--noise low to turn off)" if noisy else "treated as clean")
    elif noisy:
        log.info("--noise high: %s", noisy_weights)
    lr = cautious_lr(config) if noisy else lr_for_spacing(config, spacing)
    if lr != config.lr:
        kind = ("noisy" if noisy else "sparse" if spacing >= SPARSE_SPACING else "between dense and sparse")
        log.info("point spacing %.4f of the unit box, %s: peak learning rate %.3g (--lr %g on dense clean scans, "
                 "--lr-sparse %g on sparse or noisy ones)", spacing, kind, lr, config.lr, config.lr_sparse)
    # A sparse clean scan starts lower and ends where a dense one ends (lr * lr_final); a noisy one
    # keeps its low rate to the end, which averages the noise (see DENSE_SPACING, NOISY_LR_FINAL).
    if noisy:
        final = NOISY_LR_FINAL if config.lr_final == FitConfig().lr_final else config.lr_final
    elif lr != config.lr:
        final = min(1.0, config.lr_final * config.lr / lr)
    else:
        final = config.lr_final
    config = replace(config, lr=lr, lr_final=final)
    defaults = FitConfig()
    if (noisy or not is_dense(spacing)) and config.batch_start == defaults.batch_start:
        steps = WHOLE_BATCH_STEPS if config.steps == defaults.steps else config.steps  # steps set on purpose kept
        why = "a noisy scan" if noisy else f"point spacing {spacing:.4f} of the unit box, over the dense {DENSE_SPACING:g}"
        log.info("%s: the whole batch at every step, %d steps (a growing batch helps dense clean scans only)", why, steps)
        config = replace(config, batch_start=1.0, steps=steps)
    return config, {"ratio": None if ratio is None else round(ratio, 4), "noisy": noisy,
                    "normal_weight": config.loss.normal, "surface_weight": config.loss.surface,
                    "spacing": round(spacing, 6), "lr": lr, "batch_start": config.batch_start,
                    "steps": config.steps}


class _NonFiniteLoss(Exception):
    def __init__(self, value: float):
        self.value = value


class Trainer:
    """The network, its optimizer and its sampler, and the one training step.

    points: (N, 3) float32 scan points in the unit box; normals: (N, 3) unit. ``config.grad`` must be
    concrete (see :func:`resolve_grad`). ``history`` holds one row of HISTORY_COLUMNS per step taken.
    """

    def __init__(self, config: FitConfig, points: np.ndarray, normals: np.ndarray,
                 device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.model = Siren(config.model).to(self.device).train()
        self.optimizer = Adam(self.model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2))
        self.sampler = Sampler(points, normals, config.batch, uniform_ratio=config.uniform_ratio,
                               near_ratio=config.near_ratio, near_scale=config.near_scale, seed=config.seed,
                               device=self.device,
                               sign_k=config.sign_k if config.loss.sign > 0 or config.loss.distance > 0 else 0)
        self.history: list[list[float]] = []
        self.points_drawn = 0  # by the steps this trainer took (a growing batch draws fewer early on)

    @property
    def steps_done(self) -> int:
        return len(self.history)

    @property
    def points_per_step(self) -> int:
        """Points of a step that draws the whole batch (an early step of a growing batch draws fewer)."""
        return self.config.batch + self.sampler.n_uniform + self.sampler.n_near

    def step(self, on_finite_loss: Callable[[torch.Tensor], None] | None = None) -> list[float]:
        """One optimizer step; returns [total, *terms] (unweighted terms) before the update.

        ``on_finite_loss(rng_state)`` is called once the loss of the current weights is known to be
        finite, before they change, with the sampler state that drew this step's batch: the moment a
        checkpoint of the current weights is known to be good. Raises _NonFiniteLoss otherwise.
        """
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.steps_done, cfg)
        rng_before = self.sampler.get_state()
        batch = self.sampler.sample(batch_at(self.steps_done, cfg))
        x = torch.cat([batch.on, batch.uniform, batch.near])
        self.points_drawn += len(x)
        f, g = self.model.sdf_and_grad(x, method=cfg.grad)
        nb, nu = len(batch.on), len(batch.uniform)
        terms = loss_terms(f[:nb], g[:nb], batch.normals, f[nb:nb + nu], g[nb:], cfg.loss.alpha,
                           f[nb:], batch.off_sign, batch.off_distance)
        loss = total_loss(terms, cfg.loss)
        values = torch.stack([loss.detach()] + [terms[k].detach() for k in TERMS]).tolist()
        if not all(math.isfinite(v) for v in values):
            raise _NonFiniteLoss(values[0])
        if on_finite_loss is not None:
            on_finite_loss(rng_before)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.history.append(values)
        return values

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def state(self, rng: torch.Tensor | None = None) -> dict:
        """The resumable training state (optimizer moments, sampler RNG, history) as plain tensors."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "rng": self.sampler.get_state() if rng is None else rng,
            "history": torch.tensor(np.asarray(self.history, dtype=np.float32).reshape(-1, len(HISTORY_COLUMNS))),
        }

    def load_state(self, weights: dict, train: dict) -> None:
        """Continue from a checkpoint: weights and :meth:`state` output (ValueError/KeyError/... if unusable)."""
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(train["optimizer"])
        self.sampler.set_state(train["rng"])
        # Runs of earlier versions logged fewer terms: their rows get NaN for the new ones.
        self.history = [row + [math.nan] * (len(HISTORY_COLUMNS) - len(row)) for row in train["history"].tolist()]


class _CollapseGuard:
    """Catches a fit whose field collapses mid-way and sends it back to its last healthy state.

    At a peak rate near the edge a fit can run well for hundreds of steps and then collapse (Lucy
    with 5,000 steps at 8e-4, where 1,500 fit well): grad f stops following the normals. Once the
    normal term's mean over the last FAIL_WINDOW steps exceeds FAIL_NORMAL, the weights, Adam's
    moments, the sampler and the history go back to the last snapshot, and the fit goes on at half
    the peak rate with the same end rate (capped at the new peak), ``config.recover`` times in all
    (``earlier``: the steps back a resumed run already took); then the fit fails at its end as
    before (fit_failure). A resumed run starts its snapshots afresh from the checkpoint.
    """

    def __init__(self, trainer: Trainer, earlier: list[dict] | None = None):
        self.trainer = trainer
        self.recoveries: list[dict] = list(earlier or [])
        budget = trainer.config.recover - len(self.recoveries)
        self.left = max(budget, 0) if trainer.config.loss.normal > 0 else 0
        self.column = HISTORY_COLUMNS.index("normal")
        self.base = trainer.steps_done  # where the current run of steps started
        self.snapshot = None
        window = self._window_mean()
        if self.left and (window is None or window < HEALTHY_NORMAL):
            self._take()

    def _window_mean(self) -> float | None:
        h = self.trainer.history
        if len(h) < FAIL_WINDOW:
            return None
        return sum(row[self.column] for row in h[-FAIL_WINDOW:]) / FAIL_WINDOW

    def _take(self) -> None:
        t = self.trainer
        self.snapshot = ({k: v.detach().clone() for k, v in t.model.state_dict().items()}, t.state())

    def check(self) -> FitConfig | None:
        """After a step: the new config when the fit went back (a lower rate), else None."""
        t = self.trainer
        if not self.left or t.steps_done - self.base < FAIL_WINDOW:
            return None
        mean = self._window_mean()
        if mean > FAIL_NORMAL and self.snapshot is not None:
            weights, state = self.snapshot
            collapsed_at = t.steps_done
            t.load_state(weights, state)
            cfg = t.config
            t.config = replace(cfg, lr=cfg.lr / 2, lr_final=min(1.0, cfg.lr_final * 2))
            self.left -= 1
            self.base = t.steps_done
            self.recoveries.append({"collapsed_at": collapsed_at, "resumed_from": t.steps_done,
                                    "lr": t.config.lr})
            log.warning("the field collapsed by step %d (grad f no longer follows the normals); went back to "
                        "step %d and on at peak rate %.3g", collapsed_at, t.steps_done, t.config.lr)
            return t.config
        if t.steps_done % GUARD_EVERY == 0 and mean < HEALTHY_NORMAL:
            self._take()
        return None


class _RunFolder:
    """Writes a fit's checkpoints and explains a divergence; nothing half-written is ever left."""

    def __init__(self, run_dir: Path, trainer: Trainer, normalization: Normalization, meta: Callable[[int, float], dict],
                 saved_step: int | None, support: ScanSupport | None = None):
        self.run_dir, self.trainer, self.normalization, self.meta = run_dir, trainer, normalization, meta
        self.support = support
        self.model_path = run_dir / "model.pt"
        self.saved_step = saved_step
        self.created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise Siren3dError(f"cannot write to the output folder ({e.strerror or e})", run_dir) from None

    def save(self, step: int, train_s: float, rng: torch.Tensor | None = None) -> None:
        save_checkpoint(self.model_path, self.trainer.model, self.normalization, self.meta(step, train_s),
                        train=self.trainer.state(rng), support=self.support)
        self.saved_step = step

    def diverged(self, what: str, at_step: int) -> "FitDiverged":
        # The file on disk is left as it is: it holds the last state whose loss was seen finite.
        if self.saved_step is not None:
            kept = f"the last good checkpoint (step {self.saved_step}) is kept in {self.model_path}"
        else:
            kept = "no checkpoint had been saved yet, so nothing was written"
            if self.created:
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()  # only if empty: nothing half-written stays behind
        cfg = self.trainer.config
        return FitDiverged(
            f"training diverged: {what} at step {at_step} (learning rate {lr_at(at_step - 1, cfg):.3g}); "
            f"{kept}. Refit with a lower lr (now {cfg.lr:g}; try {cfg.lr / 10:g}) or a smaller w0 "
            f"(now {cfg.model.w0:g})", self.run_dir)


def _progress_bar(config: FitConfig, start: int, name: str):
    from tqdm.auto import tqdm

    # Not a terminal (CI logs, files): a line every 10 % instead of a redrawn bar.
    interactive = sys.stderr.isatty()
    return tqdm(total=config.steps, initial=start, unit="step", dynamic_ncols=True, leave=True,
                desc=f"fit {name}", file=sys.stderr, mininterval=0.2 if interactive else 0,
                miniters=None if interactive else max(config.steps // 10, 1),
                maxinterval=10 if interactive else float("inf"))  # else tqdm's monitor lowers miniters


def _resume_config(config: FitConfig, scan: Scan, run_dir: Path) -> tuple[FitConfig, Checkpoint]:
    """The run's own config (steps may be raised) and its checkpoint, checked against the scan."""
    model_path = run_dir / "model.pt"
    if not model_path.exists():
        raise Siren3dError("nothing to resume: no model.pt in the run folder", run_dir)
    ckpt = load_checkpoint(model_path)
    if ckpt.train is None:
        raise Siren3dError("the model file has no training state to resume from", model_path)
    try:
        # A run written before siren3d smoothed noisy scans did not smooth its scan: neither does its
        # resume; one written before adam_beta2 trained with torch's 0.999 (which its Adam state keeps);
        # one written before batch_start drew the whole batch at every step.
        old = FitConfig.from_dict({"denoise": 0, "adam_beta2": 0.999, "batch_start": 1.0, **ckpt.meta["fit"]})
    except (KeyError, TypeError, ValueError) as e:
        raise Siren3dError(f"the model file's fit settings are unusable ({e})", model_path) from None
    if scan.path and ckpt.meta.get("input", {}).get("points") != len(scan):
        raise Siren3dError("resume needs the same scan the run was started with "
                           f"({ckpt.meta.get('input', {}).get('path')})", scan.path)
    steps = resume_steps(config.steps, old.steps)
    # The batch grows over the run's own first steps: raised steps must not shrink it again.
    ramp = old.batch_ramp * old.steps / steps if old.batch_start < 1.0 else old.batch_ramp
    return replace(old, steps=steps, batch_ramp=ramp, device=config.device,
                   checkpoint_every=config.checkpoint_every), ckpt


def resume_steps(asked: int, run: int) -> int:
    """The steps a resumed run trains to: its own (``run``) when ``asked`` is the default (a default
    noisy or sparse fit takes WHOLE_BATCH_STEPS, not the default), else the larger of the two."""
    return run if asked == FitConfig().steps else max(asked, run)


def fit(scan: Scan, config: FitConfig | None = None, run_dir: str | Path | None = None, *,
        resume: bool = False, progress: bool = True,
        callback: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train a SIREN on ``scan`` and write the run folder.

    With ``resume``, continue from ``run_dir/model.pt`` (same input, same config; ``config.steps``
    may be raised to train longer). Raises FitInterrupted after saving on Ctrl-C / SIGTERM,
    FitDiverged after saving the last good state if the loss becomes NaN/Inf, and FitFailed when
    training ran to the end without fitting the scan (see fit_failure; model.pt then becomes
    model-failed.pt). ``callback(step,
    values)`` is called after every step with the loss values by HISTORY_COLUMNS name (after a
    collapse the fit goes back, see _CollapseGuard, and steps come again).
    """
    config = config or FitConfig()
    config.validate()
    run_dir = Path(run_dir or Path("runs") / (Path(scan.path).stem or "scan"))
    device = resolve_device(config.device)
    keep_freed_memory()
    t_setup = time.perf_counter()

    ckpt, noise = None, None  # a resumed fit keeps the weights its config already holds
    if resume:
        config, ckpt = _resume_config(config, scan, run_dir)
        normalization = ckpt.normalization
        noise = ckpt.meta.get("input", {}).get("noise")  # what the first run decided, for fit.json
    else:
        normalization = Normalization.fit(scan.points, config.margin)
    unit_points = normalization.to_unit(scan.points)
    if not resume:
        config, noise = adapt_to_scan(config, unit_points)
    normals = scan.normals
    if config.denoise:  # a resumed fit smooths its scan again, exactly as its first run did
        # the trainer, too, takes these normals (estimated again where the scan came without any)
        normals, normals_k = normals_to_smooth_along(scan)
        unit_points, smoothed = denoise_along_normals(unit_points, normals, config.denoise)
        smoothed.update(normals_k=normals_k,  # None: the scan's own normals
                        **{k: normalization.distance_to_scan(smoothed[k]) for k in ("moved_mean", "moved_max")})
        log.info("points smoothed along their normals, %d passes: moved %.3g on average, %.3g at most (scan units)",
                 smoothed["passes"], smoothed["moved_mean"], smoothed["moved_max"])
        if noise is not None:
            noise["denoised"] = smoothed
    config = resolve_grad(config, device)
    check_step_memory(config, device)
    check_output_dir(run_dir)

    trainer = Trainer(config, unit_points, normals, device)
    start = 0
    if ckpt is not None:
        try:
            trainer.load_state(ckpt.model.state_dict(), ckpt.train)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise Siren3dError(f"the model file's training state is unusable, cannot resume "
                               f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})",
                               run_dir / "model.pt") from None
        start = ckpt.step
    input_info = {"path": scan.path, "sha256": file_sha256(scan.path) if scan.path and Path(scan.path).is_file() else None,
                  "points": len(scan), "normals_estimated": scan.normals_estimated, "notes": scan.notes,
                  **({"noise": noise} if noise is not None else {})}
    prior_seconds = float(ckpt.meta.get("timings", {}).get("train_s", 0.0)) if ckpt else 0.0

    guard = _CollapseGuard(trainer, ckpt.meta.get("recoveries") if ckpt is not None else None)

    def meta(step: int, train_s: float) -> dict:
        return {"siren3d": __version__, "step": step, "fit": config.to_dict(), "input": input_info,
                "timings": {"train_s": prior_seconds + train_s},
                **({"recoveries": guard.recoveries} if guard.recoveries else {})}

    # The scan as the mesher sees it (trimming, colours), stored with every checkpoint.
    support = ckpt.support if ckpt is not None and ckpt.support is not None else \
        ScanSupport.from_scan(scan, normalization, seed=config.seed)
    folder = _RunFolder(run_dir, trainer, normalization, meta, saved_step=start if ckpt is not None else None,
                        support=support)
    setup_s = time.perf_counter() - t_setup
    bar = _progress_bar(config, start, Path(scan.path).name or "scan") if progress else None
    t0 = time.perf_counter()

    def checkpoint_if_due(rng: torch.Tensor) -> None:
        # Written once the weights after `done` steps have shown a finite loss, so a checkpoint on
        # disk is always a good one.
        done = trainer.steps_done
        if config.checkpoint_every and done > start and done % config.checkpoint_every == 0:
            folder.save(done, time.perf_counter() - t0, rng=rng)

    step = start
    try:
        with _deferred_interrupts() as interrupted:
            while step < config.steps:
                try:
                    values = trainer.step(checkpoint_if_due)
                except _NonFiniteLoss as e:
                    raise folder.diverged(f"the loss became {e.value}", step + 1) from None
                step += 1
                lowered = guard.check()
                if lowered is not None:
                    config, step = lowered, trainer.steps_done
                    if folder.saved_step is not None and folder.saved_step > step:
                        folder.save(step, time.perf_counter() - t0)  # no checkpoint of the collapse stays
                    if bar is not None:
                        bar.n = bar.last_print_n = step
                        bar.refresh()
                    continue
                if callback is not None:
                    callback(step, dict(zip(HISTORY_COLUMNS, values)))
                if bar is not None:
                    _show_progress(bar, step, config.steps, values,
                                   trainer.points_drawn / max(time.perf_counter() - t0, 1e-9))
                if interrupted["hit"]:
                    if not trainer.weights_finite():
                        raise folder.diverged("the weights became NaN/Inf", step)
                    folder.save(step, time.perf_counter() - t0)
                    raise FitInterrupted(step, config.steps, str(folder.model_path))
    finally:
        if bar is not None:
            bar.close()
    train_s = time.perf_counter() - t0
    if not trainer.weights_finite():
        raise folder.diverged("the weights became NaN/Inf", step)
    folder.save(step, train_s)
    rate = trainer.points_drawn / max(train_s, 1e-9)
    hist = np.asarray(trainer.history, dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS))
    write_fit_json(run_dir, meta(step, train_s), hist, setup_s=setup_s, points_per_second=rate)
    try:
        plot_losses(hist, run_dir / "loss.png")
    except Exception as e:  # a plot must never fail a finished fit
        log.warning("could not write loss.png: %s", e)
    failure = fit_failure(hist, config)
    if failure:  # said now, not by a mesh step that searches the whole box for a surface
        # Kept for inspection under another name, so neither `siren3d mesh` (latest run) nor a batch
        # re-run (which takes model.pt at its last step as a finished fit) mistakes it for a result.
        failed = run_dir / "model-failed.pt"
        os.replace(folder.model_path, failed)
        raise FitFailed(f"{failure}; the model is kept as {failed.name} for inspection (loss.png)", run_dir)
    trainer.model.eval()
    return FitResult(model=trainer.model, normalization=normalization, config=config, run_dir=run_dir,
                     history=hist, seconds=prior_seconds + train_s, points_per_second=rate, support=support)


def _show_progress(bar, step: int, steps: int, values: list[float], rate: float) -> None:
    bar.update(1)
    if step % 10 == 0 or step == steps:
        bar.set_postfix_str(f"loss {values[0]:.3g} | surf {values[1]:.2e} norm {values[2]:.3f} eik {values[3]:.3f} "
                            f"off {values[4]:.3f} sign {values[5]:.1e} dist {values[6]:.1e} | {rate / 1e3:.0f}k pts/s",
                            refresh=False)


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
