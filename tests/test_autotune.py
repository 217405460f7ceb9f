"""grad='auto': timed on the real training step, the faster method chosen, the choice cached."""

from __future__ import annotations

import json
import time

import pytest
import torch

from siren3d import autotune
from siren3d.config import FitConfig, ModelConfig
from siren3d.io import load_scan
from siren3d.training import Trainer, fit, resolve_grad

CPU = torch.device("cpu")
QUIET, BUSY = 0.2, 3.0  # load average per core


def small(**kw) -> FitConfig:
    return FitConfig(**{"steps": 3, "batch": 128, "device": "cpu", "checkpoint_every": 0,
                        "model": ModelConfig(width=16), **kw})


class Timings:
    """A timer with fixed answers that counts its calls (what a measurement on some machine would say)."""

    def __init__(self, fused: float, bf16: float):
        self.rates = {"fused": fused, "fused-bf16": bf16}
        self.calls = 0

    def __call__(self, config, device):
        self.calls += 1
        return dict(self.rates)


def never(config, device):
    raise AssertionError("timed although the answer was cached")


@pytest.mark.parametrize("fused, bf16, expected", [
    (236e3, 205e3, "fused"),         # issue 15's Intel AMX machine at the default batch
    (100e3, 180e3, "fused-bf16"),
    (100e3, 101e3, "fused"),         # within the margin: the more precise fp32 products
])
def test_the_faster_method_is_chosen_and_cached(tmp_path, fused, bf16, expected):
    path = tmp_path / "cache" / "grad-autotune.json"
    timer = Timings(fused, bf16)
    method, record = autotune.resolve(small(), CPU, timer=timer, path=path, load=QUIET)
    assert method == expected == record["method"] and timer.calls == 1 and not record["cached"]
    assert record["points_per_s"] == {"fused": round(fused), "fused-bf16": round(bf16)}
    entries = json.loads(path.read_text())["entries"]
    assert entries[autotune.cache_key(small())]["method"] == expected
    again, record = autotune.resolve(small(), CPU, timer=never, path=path, load=QUIET)
    assert again == expected and record["cached"]


def test_the_key_separates_network_sizes_and_batches(tmp_path):
    path = tmp_path / "grad-autotune.json"
    autotune.resolve(small(), CPU, timer=Timings(1.0, 2.0), path=path, load=QUIET)
    wide = small(model=ModelConfig(width=32))
    assert autotune.resolve(wide, CPU, timer=Timings(2.0, 1.0), path=path, load=QUIET)[0] == "fused"
    assert autotune.resolve(small(batch=4096), CPU, timer=Timings(2.0, 1.0), path=path, load=QUIET)[0] == "fused"
    # batches in the same power-of-two bucket share the timing
    assert autotune.resolve(small(batch=140), CPU, timer=never, path=path, load=QUIET)[0] == "fused-bf16"
    assert len(json.loads(path.read_text())["entries"]) == 3


@pytest.mark.parametrize("content", [b"{not json", b"\x00\xff garbage", b'{"format": 1, "entries": []}',
                                     b'{"format": 1, "entries": {"KEY": {"method": "autograd"}}}'])
def test_a_broken_cache_is_timed_again_and_repaired(tmp_path, content):
    path = tmp_path / "grad-autotune.json"
    path.write_bytes(content.replace(b"KEY", autotune.cache_key(small()).encode()))
    timer = Timings(1.0, 3.0)
    assert autotune.resolve(small(), CPU, timer=timer, path=path, load=QUIET)[0] == "fused-bf16" and timer.calls == 1
    assert json.loads(path.read_text())["entries"][autotune.cache_key(small())]["method"] == "fused-bf16"


def test_an_unwritable_cache_does_not_fail_a_fit(tmp_path, sphere_scan_file, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made under a file")
    monkeypatch.setenv(autotune.CACHE_ENV, str(blocker / "siren3d"))
    method, record = autotune.resolve(small(), CPU, timer=Timings(3.0, 1.0), load=QUIET)
    assert method == "fused" and not record["cached"]
    result = fit(load_scan(sphere_scan_file), small(), tmp_path / "run", progress=False)
    assert result.config.grad in autotune.CANDIDATES and result.config.grad_auto["cached"] is False
    assert blocker.read_text().startswith("the cache folder")


def test_a_timing_on_a_busy_machine_is_replaced_once_on_a_quiet_one(tmp_path):
    path = tmp_path / "grad-autotune.json"
    assert autotune.resolve(small(), CPU, timer=Timings(1.0, 2.0), path=path, load=BUSY)[0] == "fused-bf16"
    method, record = autotune.resolve(small(), CPU, timer=never, path=path, load=BUSY)
    assert method == "fused-bf16" and record["cached"] and record["busy"]  # stable while busy
    quiet = Timings(2.0, 1.0)
    method, record = autotune.resolve(small(), CPU, timer=quiet, path=path, load=QUIET)
    assert method == "fused" and quiet.calls == 1 and not record["busy"]
    for load in (QUIET, BUSY):  # a quiet timing is final
        assert autotune.resolve(small(), CPU, timer=never, path=path, load=load)[0] == "fused"


def test_a_batch_too_large_for_memory_is_not_timed(tmp_path, sphere_scan_file, monkeypatch):
    from siren3d.errors import SettingError

    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))
    huge = small(batch=2_000_000_000)
    resolved = resolve_grad(huge, CPU)
    assert resolved.grad == "fused" and "memory" in resolved.grad_auto["reason"]
    assert not (tmp_path / autotune.CACHE_FILE).exists()
    with pytest.raises(SettingError, match="batch"):  # and fit refuses it in its own words
        fit(load_scan(sphere_scan_file), huge, tmp_path / "run", progress=False)


def test_cuda_keeps_fused_without_timing(tmp_path):
    method, record = autotune.resolve(small(), torch.device("cuda"), timer=never, path=tmp_path / "c.json")
    assert method == "fused" and not (tmp_path / "c.json").exists()


def test_a_failing_timing_falls_back_to_fused(tmp_path):
    def broken(config, device):
        raise RuntimeError("no bf16 kernels here")

    method, record = autotune.resolve(small(), CPU, timer=broken, path=tmp_path / "c.json")
    assert method == "fused" and "no bf16" in record["reason"]


def test_the_race_interleaves_and_keeps_to_its_budget():
    calls = []

    def work(name, seconds):
        def step():
            calls.append(name)
            time.sleep(seconds)
        return step

    times = autotune.race({"slow": work("slow", 0.02), "fast": work("fast", 0.005)}, budget_s=0.15,
                          min_rounds=2, max_rounds=50)
    rounds = len(times["fast"])
    assert len(times["slow"]) == rounds and 2 <= rounds < 50
    assert calls[:4] == ["slow", "fast", "fast", "slow"]  # who goes first alternates
    spent = sum(times["slow"]) + sum(times["fast"])
    last_round = times["slow"][-1] + times["fast"][-1]
    assert spent <= 0.15 + last_round + 0.05  # stops at the first round that ends past the budget
    assert min(times["slow"]) > max(times["fast"])
    assert len(autotune.race({"a": work("a", 0.0)}, budget_s=0.0, min_rounds=3)["a"]) == 3


def test_the_real_measurement_times_both_methods_and_leaves_the_rng_alone():
    cfg = FitConfig(batch=256, model=ModelConfig(width=16))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    rates = autotune.measure(cfg, CPU, Trainer, budget_s=0.05)
    assert torch.equal(torch.rand(3), expected)
    assert set(rates) == set(autotune.CANDIDATES) and all(r > 0 for r in rates.values())


def test_resolve_grad_uses_the_cache_and_forced_methods_skip_it(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))
    cfg = small()
    first = resolve_grad(cfg, CPU)
    assert first.grad in autotune.CANDIDATES and first.grad_auto["method"] == first.grad
    assert (tmp_path / autotune.CACHE_FILE).exists()
    second = resolve_grad(cfg, CPU)
    assert second.grad == first.grad and second.grad_auto["cached"]
    assert second.grad_auto["points_per_s"] == first.grad_auto["points_per_s"]
    forced = resolve_grad(small(grad="fused-bf16"), CPU)
    assert forced.grad == "fused-bf16" and forced.grad_auto is None
