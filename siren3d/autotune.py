"""``grad='auto'``: the faster of 'fused' and 'fused-bf16' on this machine, timed once and remembered.

Whether bf16 adjoint products pay off is not written in the CPU's flags: on an Intel CPU with AMX
the bf16 step ran at 0.87x of the fp32 one at the default batch (issue 15), while on other CPUs with
AVX512-BF16 it is faster. So the first fit on a machine times a few real training steps
(:meth:`siren3d.training.Trainer.step`) of both methods, interleaved so that load from other
processes hits both alike, and keeps the faster. The answer is cached in a small JSON file keyed by
what decides it (CPU model, torch and siren3d versions, thread count, network width and depth,
points per step rounded to a power of two), so later fits on the machine skip the timing and, for a
given seed, train the same way every time (a timing taken while the machine was busy is replaced
once by one taken on a quiet machine; see :func:`resolve`).

The cache is ``$SIREN3D_CACHE_DIR/grad-autotune.json``, else ``$XDG_CACHE_HOME/siren3d/...``, else
``~/.cache/siren3d/...``; delete the file to time again. A cache that cannot be read or written
never fails a fit: the timing is then simply redone next time. CUDA always gets 'fused' (the bf16
path exists for CPUs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ._version import __version__
from . import kernels
from .config import FitConfig
from .files import atomic_output

log = logging.getLogger(__name__)

#: The two methods raced against each other.
CANDIDATES = ("fused", "fused-bf16")
#: fused-bf16 must be this much faster to be chosen: on a tie the fp32 products, more precise, win.
BF16_MARGIN = 0.03
#: Seconds of interleaved timed steps (after one warm-up step of each), and the rounds around it.
BUDGET_S = 0.25
MIN_ROUNDS, MAX_ROUNDS = 2, 10
#: Points of the synthetic scan the timed steps draw from (drawn with replacement; any shape costs the same).
TUNE_POINTS = 8192
#: Load average per core above which the machine counts as busy (its timings are provisional).
BUSY_LOAD = 1.0
CACHE_ENV = "SIREN3D_CACHE_DIR"
CACHE_FILE = "grad-autotune.json"
CACHE_FORMAT = 1

Rates = dict  # method -> points per second
Timer = Callable[[FitConfig, torch.device], Rates]


def cache_path() -> Path:
    """Where the timings are remembered (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "siren3d" / CACHE_FILE


def cpu_model() -> str:
    """The CPU's model name ('AMD EPYC 9654 96-Core Processor'), or the best the platform says."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def points_bucket(points_per_step: int) -> int:
    """Points per step rounded to the nearest power of two: steps of similar size share a timing."""
    return 2 ** max(0, round(math.log2(max(points_per_step, 1))))


def points_per_step(config: FitConfig) -> int:
    return config.batch + round(config.batch * config.uniform_ratio) + round(config.batch * config.near_ratio)


def cache_key(config: FitConfig) -> str:
    """What decides which method is faster, as one string."""
    return (f"cpu={cpu_model()}|torch={torch.__version__}|siren3d={__version__}|kernels={kernels.REVISION}"
            f"|threads={torch.get_num_threads()}"
            f"|width={config.model.width}|hidden={config.model.hidden_layers}"
            f"|points={points_bucket(points_per_step(config))}")


def choose(rates: Rates) -> str:
    """The method to train with, given measured points per second of both."""
    bf16, fp32 = float(rates["fused-bf16"]), float(rates["fused"])
    return "fused-bf16" if bf16 > fp32 * (1.0 + BF16_MARGIN) else "fused"


def race(steps: dict[str, Callable[[], object]], *, budget_s: float = BUDGET_S, min_rounds: int = MIN_ROUNDS,
         max_rounds: int = MAX_ROUNDS) -> dict[str, list[float]]:
    """Seconds of each call of each step function, run in interleaved rounds (one call of each per
    round, alternating which goes first) until ``budget_s`` has passed after ``min_rounds`` rounds,
    or ``max_rounds`` rounds; interleaving lets load from other processes hit all of them alike."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(max_rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
        if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return times


def measure(config: FitConfig, device: torch.device, trainer_cls, **race_args) -> Rates:
    """Points per second of the real training step with 'fused' and 'fused-bf16'.

    ``trainer_cls`` is :class:`siren3d.training.Trainer` (passed in: training calls this module, not
    the other way round). Two trainers with ``config``'s network, batch and ratios train on a
    synthetic sphere (the sign and distance terms off: their one-off side pool would cost more than
    the timing, and the per-step work they add is the same for both methods). After one warm-up step each (oneDNN
    builds its kernels then) they :func:`race`; the median step time of each decides. The global
    torch RNG is left as it was.
    """
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(TUNE_POINTS, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points, normals = (0.5 * normals).astype(np.float32), normals.astype(np.float32)
    # Off: the sign and distance terms, whose side pool (200,000 kNN queries, once) would cost more than
    # the timing itself; what they add per step is the same for both methods.
    # The learning rate is the default's: a step takes as long at any rate, and the user's own (an
    # absurd one, say) must fail in the fit that reports it, not in a timing race on a sphere.
    # The whole batch from the first timed step (batch_start 1): most of a fit's steps draw it.
    defaults = FitConfig()
    base = replace(config, loss=replace(config.loss, sign=0.0, distance=0.0), checkpoint_every=0, lr=defaults.lr,
                   lr_final=defaults.lr_final, warmup=defaults.warmup, batch_start=1.0)
    with torch.random.fork_rng(devices=[]):
        trainers = {m: trainer_cls(replace(base, grad=m), points, normals, device) for m in CANDIDATES}
        for trainer in trainers.values():
            trainer.step()
        times = race({m: t.step for m, t in trainers.items()}, **race_args)
    per_step = trainers["fused"].points_per_step
    return {m: per_step / statistics.median(ts) for m, ts in times.items()}


def _read_cache(path: Path) -> dict:
    """The cache's entries ({} when it is absent, unreadable or not ours)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.debug("ignoring the grad autotune cache %s: %s", path, e)
        return {}
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or not isinstance(doc.get("entries"), dict):
        return {}
    return doc["entries"]


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and entry.get("method") in CANDIDATES
            and isinstance(entry.get("points_per_s"), dict)
            and all(isinstance(entry["points_per_s"].get(m), (int, float)) for m in CANDIDATES))


def _write_cache(path: Path, key: str, entry: dict) -> bool:
    """Add one entry (re-reading the file first, so concurrent fits lose at most their own entry)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {k: v for k, v in _read_cache(path).items() if _valid_entry(v)}
        entries[key] = entry
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1, sort_keys=True))
        return True
    except Exception as e:  # noqa: BLE001 - a cache must never fail a fit
        log.debug("could not write the grad autotune cache %s: %s", path, e)
        return False


def machine_load() -> float | None:
    """The 1-minute load average per CPU core (None where the platform does not say)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        return None


def resolve(config: FitConfig, device: torch.device, timer: Timer, *, path: Path | None = None,
            load: float | None = None) -> tuple[str, dict]:
    """The concrete method for ``grad='auto'`` and a record of how it was decided (for fit.json).

    ``timer(config, device) -> {method: points/s}`` measures both candidates when the cache has no
    answer (training passes :func:`measure` of its Trainer; tests pass fixed rates); ``path``
    overrides :func:`cache_path`; ``load`` (load average per core,
    default :func:`machine_load`) says whether the machine is busy. The record holds the method,
    the rates it was chosen by, whether they came from the cache and the cache key.

    Timings taken on a busy machine (more runnable processes than cores) are noisy, and the first
    answer would otherwise stick: such an entry is used and cached like any other, so runs stay
    stable while the machine stays busy, but the first fit on a quiet machine times again and
    replaces it, once.
    """
    if device.type != "cpu":
        return "fused", {"method": "fused", "reason": f"{device.type}: always fused"}
    path = cache_path() if path is None else Path(path)
    key = cache_key(config)
    load = machine_load() if load is None else load
    busy = load is not None and load > BUSY_LOAD
    entry = _read_cache(path).get(key)
    if _valid_entry(entry) and (busy or not entry.get("busy", False)):
        return entry["method"], {**entry, "cached": True, "key": key}
    t0 = time.perf_counter()
    try:
        rates = timer(config, device)
        rates = {m: round(float(rates[m])) for m in CANDIDATES}
    except RuntimeError as e:  # e.g. no bf16 kernels in this torch build: fp32 is always there
        log.warning("grad auto: could not time fused-bf16 (%s); training with fused", e)
        return "fused", {"method": "fused", "reason": f"timing failed: {str(e)[:200]}"}
    method = choose(rates)
    from .kernels import cpu_has_fast_bf16

    entry = {"method": method, "points_per_s": rates, "timing_s": round(time.perf_counter() - t0, 3),
             "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "busy": busy,
             "load_per_core": None if load is None else round(load, 2), "cpu_bf16_flags": cpu_has_fast_bf16()}
    saved = _write_cache(path, key, entry)
    log.info("grad auto: %s (fused %.0fk, fused-bf16 %.0fk points/s, timed in %.2f s%s%s)", method,
             rates["fused"] / 1e3, rates["fused-bf16"] / 1e3, entry["timing_s"],
             "; machine busy, will time again when it is quiet" if busy else "",
             "" if saved else "; could not cache the result")
    return method, {**entry, "cached": False, "key": key}
