"""Throughput of one full training step: forward, grad f, all losses, backward, Adam.

Prints one JSON line per (batch, gradient method), plus one line per batch with the ratio
fused / autograd and analytic / autograd measured in the same run (rounds interleaved, median of rounds, so load
from other processes hits both alike).

    python benchmarks/train_step.py [--batches 1024 4096 16384] [--rounds 5] [--width W --hidden-layers L]
        [--device cpu|cuda] [--methods fused autograd ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from siren3d.losses import LossWeights, loss_terms, total_loss
from siren3d.model import ModelConfig, Siren
from siren3d.optim import Adam
from siren3d.training import FitConfig


def make_step(model, optimizer, method, weights):
    def step(on, normals, off):
        x = torch.cat([on, off])
        f, g = model.sdf_and_grad(x, method=method)
        n = len(on)
        terms = loss_terms(f[:n], g[:n], normals, f[n:], g[n:], weights.alpha)
        loss = total_loss(terms, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())  # a host sync each step, as the training loop's logging does

    return step


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
    args = ap.parse_args()
    device = torch.device(args.device)
    methods = list(dict.fromkeys(args.methods + ["autograd"]))  # the ratios need the baseline
    weights = LossWeights()
    torch.manual_seed(0)
    for batch in sorted(set(args.batches)):
        off_n = int(round(batch * args.uniform_ratio))
        on = (torch.rand(batch, 3) * 1.8 - 0.9).to(device)
        normals = torch.nn.functional.normalize(torch.randn(batch, 3), dim=1).to(device)
        off = (torch.rand(off_n, 3) * 2 - 1).to(device)
        steps, times = {}, {}
        for method in methods:
            model = Siren(ModelConfig(width=args.width, hidden_layers=args.hidden_layers)).to(device)
            opt = Adam(model.parameters(), lr=1e-4)
            steps[method] = make_step(model, opt, method, weights)
            for _ in range(3 if device.type == "cuda" else 1):  # warm-up (CUDA: kernels, allocator)
                steps[method](on, normals, off)
            times[method] = []
        for _ in range(args.rounds):
            for method, step in steps.items():
                sync(device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(on, normals, off)
                sync(device)
                times[method].append((time.perf_counter() - t0) / args.steps)
        pps = {}
        for method, ts in times.items():
            sec = statistics.median(ts)
            pps[method] = (batch + off_n) / sec
            print(json.dumps({"bench": "train_step", "method": method, "batch": batch, "points_per_step": batch + off_n,
                              "width": args.width, "hidden_layers": args.hidden_layers,
                              "device": str(device), "threads": torch.get_num_threads(), "ms_per_step": round(sec * 1e3, 2),
                              "points_per_s": round(pps[method])}), flush=True)
        ratios = {f"{m.replace('-', '_')}_over_autograd": round(pps[m] / pps["autograd"], 3)
                  for m in methods if m != "autograd"}
        print(json.dumps({"bench": "train_step_ratio", "batch": batch, "device": str(device), **ratios}), flush=True)


if __name__ == "__main__":
    main()
