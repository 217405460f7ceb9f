"""Time to update one slice of the viewer: evaluate the network at every sample of a 256x256 plane.

Prints one JSON line per variant (median of interleaved rounds, so load from other processes hits
all alike):

- ``module``: the plain ``model(x)`` forward pass in 65,536-point chunks (siren3d.field.field_values),
  the baseline;
- ``evaluator``: the viewer's FieldEvaluator (w0 folded into the weights, in-place sines) at several
  chunk sizes;
- ``evaluator+eikonal``: the same slice with the Eikonal error (f and its analytic gradient);
- ``scan-field`` (and ``+eikonal``): what ``siren3d view`` slices for a model with the scan's support,
  a siren3d.field.ScanField (the network near the scan, the distance to the scan beyond), here with a
  support of ``--scan-points`` points on a torus (the network is untrained: the time is the same);
- ``update``: the whole free-slice update of the viewer (evaluation, grid, contour lines, actors;
  not the final redraw), offscreen, when offscreen rendering works here.

``cpu_ms_median`` is the process CPU time per update: on a busy machine (see ``load_avg_1min``)
it says what one update costs better than wall time; with one thread it is the uncontended wall time.

    python benchmarks/viewer_slice.py [--res 256] [--width 128 --hidden-layers 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from siren3d.field import field_values as evaluate
from siren3d.model import ModelConfig, Siren
from siren3d.normalization import Normalization
from siren3d.viewer.slices import FieldEvaluator, evaluate_slice, slice_points


def _load() -> float | None:
    """The machine's 1-minute load average: wall times mean little when it exceeds the core count."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def main() -> None:
    defaults = ModelConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--width", type=int, default=defaults.width)
    ap.add_argument("--hidden-layers", type=int, default=defaults.hidden_layers)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chunks", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--no-update", action="store_true", help="skip the offscreen viewer update")
    ap.add_argument("--scan-points", type=int, default=100_000, help="support points of the scan-field variant")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Siren(ModelConfig(width=args.width, hidden_layers=args.hidden_layers)).eval()
    norm = Normalization((10.0, -5.0, 3.0), 25.0)
    origin, normal, size = np.array(norm.center), np.array([0.3, -0.2, 1.0]), 2 * norm.scale
    pts, *_ = slice_points(origin, normal, size, args.res)
    unit = torch.as_tensor(norm.to_unit(pts.reshape(-1, 3)))

    variants = {"module": lambda: evaluate(model, unit)}
    for c in args.chunks:
        ev = FieldEvaluator(model, chunk=c)
        variants[f"evaluator/chunk={c}"] = (lambda ev=ev: evaluate_slice(ev, norm, origin, normal, size, args.res))
    ev = FieldEvaluator(model)
    variants[f"evaluator+eikonal/chunk={ev.chunk}"] = (
        lambda: evaluate_slice(ev, norm, origin, normal, size, args.res, eikonal=True))
    from siren3d.field import ScanField
    from siren3d.support import ScanSupport, point_spacing
    from siren3d.synthetic import sample_surface, torus

    scan, _ = sample_surface(torus(0.5, 0.18), args.scan_points, seed=0)
    sf = FieldEvaluator(ScanField(model, ScanSupport(scan.astype(np.float32), point_spacing(scan))))
    variants["scan-field"] = lambda: evaluate_slice(sf, norm, origin, normal, size, args.res)
    variants["scan-field+eikonal"] = lambda: evaluate_slice(sf, norm, origin, normal, size, args.res, eikonal=True)
    viewer = None
    if not args.no_update:
        from siren3d.viewer.render import offscreen_backend, require_offscreen

        if offscreen_backend() is not None:
            require_offscreen()
            from siren3d.viewer.scene import FieldViewer

            viewer = FieldViewer(model, norm, off_screen=True, window_size=(640, 480), interactive=True,
                                 slice_res=32, free_res=args.res, surface_res=16, show_surface=False)
            viewer.toggle_slice("free", True)
            rng = np.random.default_rng(0)
            variants["update"] = lambda: viewer.move_free_slice(normal + 0.05 * rng.normal(size=3), origin)
        else:
            print(json.dumps({"bench": "viewer_slice", "note": "offscreen rendering unavailable; no 'update' line"}))

    times = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    for name, ts in times.items():
        print(json.dumps({"bench": "viewer_slice", "variant": name, "res": args.res, "points": args.res ** 2,
                          "width": args.width, "hidden_layers": args.hidden_layers,
                          "threads": torch.get_num_threads(), "ms_median": round(statistics.median(ts) * 1e3, 1),
                          "ms_min": round(min(ts) * 1e3, 1),
                          "cpu_ms_median": round(statistics.median(cpu[name]) * 1e3, 1),
                          "rounds": args.rounds, "load_avg_1min": _load()}), flush=True)
    if viewer is not None:
        viewer.close()


if __name__ == "__main__":
    main()
