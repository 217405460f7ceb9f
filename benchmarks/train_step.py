"""Throughput of the training step ``siren3d fit`` runs (``Trainer.step``): sampling, forward, grad f,
all losses (sign term and near-surface points included), backward, Adam.

Prints one JSON line per (batch, gradient method), plus one line per batch with the ratio
fused / autograd and analytic / autograd measured in the same run (rounds interleaved, median of rounds, so load
from other processes hits both alike). Each line also gives the process's CPU time per step
(``cpu_ms_per_step``, all threads together) and points per CPU-second: on a machine shared with
other work, wall time stretches with the load while CPU time (best with ``--threads 1``) stays close
to the work itself.

    python benchmarks/train_step.py [--batches 1024 4096 16384] [--rounds 5] [--width W --hidden-layers L]
        [--device cpu|cuda] [--methods fused autograd ...] [--threads N]

The scan is 100,000 points on a sphere of radius 0.5 with their normals (the step's cost does not
depend on the shape); every setting other than the batch, the network and the gradient method is
the default fit's, except that every step draws the whole batch (a fit's batch grows to it over
its first half: see FitConfig.batch_start).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import numpy as np

from siren3d.config import FitConfig, ModelConfig
from siren3d.training import Trainer


def sphere_scan(n: int = 100_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    normals = np.random.default_rng(seed).normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return (0.5 * normals).astype(np.float32), normals.astype(np.float32)


METHODS = ("fused-bf16", "fused", "analytic", "autograd")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    defaults = FitConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, defaults.batch, 16384])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--width", type=int, default=defaults.model.width)
    ap.add_argument("--hidden-layers", type=int, default=defaults.model.hidden_layers)
    ap.add_argument("--uniform-ratio", type=float, default=defaults.uniform_ratio)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads [default: torch's]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = list(dict.fromkeys(args.methods + ["autograd"]))  # the ratios need the baseline
    points, normals = sphere_scan()
    for batch in sorted(set(args.batches)):
        trainers, times, cpu_times = {}, {}, {}
        for method in methods:
            cfg = FitConfig(batch=batch, batch_start=1.0, grad=method, uniform_ratio=args.uniform_ratio,
                            model=ModelConfig(width=args.width, hidden_layers=args.hidden_layers))
            trainers[method] = Trainer(cfg, points, normals, device)
            for _ in range(3 if device.type == "cuda" else 1):  # warm-up (CUDA: kernels, allocator)
                trainers[method].step()
            times[method], cpu_times[method] = [], []
        per_step = trainers["autograd"].points_per_step
        for _ in range(args.rounds):
            for method, trainer in trainers.items():
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    trainer.step()  # reads the loss back each step, as fit does
                sync(device)
                times[method].append((time.perf_counter() - t0) / args.steps)
                cpu_times[method].append((time.process_time() - c0) / args.steps)
        pps = {}
        for method, ts in times.items():
            sec, cpu = statistics.median(ts), statistics.median(cpu_times[method])
            pps[method] = per_step / sec
            print(json.dumps({"bench": "train_step", "method": method, "batch": batch, "points_per_step": per_step,
                              "width": args.width, "hidden_layers": args.hidden_layers,
                              "device": str(device), "threads": torch.get_num_threads(), "ms_per_step": round(sec * 1e3, 2),
                              "points_per_s": round(pps[method]), "cpu_ms_per_step": round(cpu * 1e3, 2),
                              "points_per_cpu_s": round(per_step / cpu)}), flush=True)
        ratios = {f"{m.replace('-', '_')}_over_autograd": round(pps[m] / pps["autograd"], 3)
                  for m in methods if m != "autograd"}
        cpu_auto = statistics.median(cpu_times["autograd"])
        ratios.update({f"{m.replace('-', '_')}_over_autograd_cpu": round(cpu_auto / statistics.median(cpu_times[m]), 3)
                       for m in methods if m != "autograd"})
        print(json.dumps({"bench": "train_step_ratio", "batch": batch, "device": str(device),
                          "width": args.width, "hidden_layers": args.hidden_layers,
                          "threads": torch.get_num_threads(), "load_1min": round(os.getloadavg()[0], 2), **ratios}),
              flush=True)


if __name__ == "__main__":
    main()
