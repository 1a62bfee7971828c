"""Timing and result rows of the kernel benchmarks (benchmarks/kernels.py): CUDA-event medians and peak
memory of one path, the parity / speed / memory rows of issue 10's schema, and a path that fails as a
row with a note instead of the end of the run."""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import torch

from runtime.metrics import psnr

__all__ = ["measure", "Recorder", "try_path"]


def measure(fn: Callable[[], Any], reps: int, warmup: int = 3) -> dict[str, Any]:
    """median_ms over ``reps`` runs after ``warmup`` (CUDA events on a GPU, perf_counter on CPU) and
    peak_mib above what was allocated before (None on CPU); ``out`` is the last output."""
    cuda = torch.cuda.is_initialized()  # main() initialises CUDA only for --device cuda
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    if cuda:
        torch.cuda.synchronize()
        del out
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
            if len(times) < reps:
                del out
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - t) * 1e3)
        peak = None
    return {"median_ms": statistics.median(times), "peak_mib": peak, "out": out, "reps": reps}


class Recorder:
    """Rows of the three lists of issue 10's schema plus the raw measurements."""

    def __init__(self):
        self.parity: list[dict] = []
        self.speed: list[dict] = []
        self.memory: list[dict] = []
        self.rows: list[dict] = []

    def measured(self, group: str, name: str, m: dict[str, Any] | None, pixels: int, note: str = "") -> None:
        row = {"group": group, "name": name, "median_ms": None, "peak_mib": None, "note": note}
        if m is not None:
            row.update(median_ms=round(m["median_ms"], 4), reps=m["reps"],
                       peak_mib=None if m["peak_mib"] is None else round(m["peak_mib"], 2),
                       us_per_pixel=round(1e3 * m["median_ms"] / pixels, 5))
        self.rows.append(row)
        print(f"{name:60s} {show(row['median_ms'], 'ms')} {show(row['peak_mib'], 'MiB')} {note}", flush=True)

    def versus(self, name: str, baseline: str) -> None:
        """speed and memory rows of ``name`` against ``baseline`` (both measured before)."""
        this, base = self._get(name), self._get(baseline)
        if this is None or base is None or this["median_ms"] is None or base["median_ms"] is None:
            return
        self.speed.append({"name": name, "median_ms": this["median_ms"], "baseline": baseline,
                           "baseline_median_ms": base["median_ms"], "ratio": round(base["median_ms"] / this["median_ms"], 3),
                           "us_per_pixel": this.get("us_per_pixel")})
        if this["peak_mib"] is not None and base["peak_mib"] is not None and this["peak_mib"] > 0:
            self.memory.append({"name": name, "peak_mib": this["peak_mib"], "baseline": baseline,
                                "baseline_peak_mib": base["peak_mib"],
                                "ratio": round(base["peak_mib"] / this["peak_mib"], 3)})

    def check(self, name: str, got: torch.Tensor, want: torch.Tensor, floor: float, peak: float = 1.0) -> None:
        finite = bool(torch.isfinite(got).all())
        db = psnr(got, want, peak) if finite else -math.inf
        self.parity.append({"name": name, "psnr_db": round(db, 2) if math.isfinite(db) else db, "floor_db": floor,
                            "passed": finite and db >= floor, **({} if finite else {"note": "non-finite output"})})

    def _get(self, name: str) -> dict | None:
        return next((r for r in self.rows if r["name"] == name), None)


def show(v, unit):
    return f"{v:>10.3f} {unit}" if v is not None else f"{'-':>10} {unit}"


def try_path(fn: Callable[[], dict], note: list[str]) -> dict | None:
    """A path that runs out of memory or fails is a row with a note, not the end of the benchmark."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        note.append("out of memory")
    except Exception as e:  # noqa: BLE001  (recorded, the other paths still run)
        note.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return None
