"""Latency of PyTorch eager against onnxruntime (both export modes), side by side in one run.

    python -m benchmarks.latency                                  # CPU, bundled weights (EDSR: small random)
    python -m benchmarks.latency --models nlsn --scales 2 --sizes 64x64 --repeat 50 --out-dir results/nlsn
    python -m benchmarks.latency --models nlsn --scales 4 --sizes 48x48 --random-weights --config released --device cuda

Per model × scale × LR size and backend: ``--warmup`` runs, then ``--repeat`` timed runs; median and
p90 latency, images/s (batch / median) and peak memory. Each backend is the runtime.backends object
runtime.infer uses (TorchBackend, OrtBackend), timed as infer calls it: a [0, 1] CPU tensor in, a CPU
tensor out (on CUDA the copies count). Peak memory: on CPU the peak resident set
size above the level before the backend was set up (sampled every millisecond by a thread; freed
heap is handed back to the OS between cases; onnxruntime's figure includes its copy of the weights,
torch's weights were resident before);
on CUDA ``torch.cuda.max_memory_allocated`` for torch (onnxruntime's CUDA arena is not visible to
it, so CUDA rows of onnxruntime say n/a). Threads: ``--threads`` for torch and onnxruntime alike.
The slowest onnxruntime case is run again with onnxruntime's profiler; its per-op totals say what
dominates. Writes latency.json, latency.md and latency.png to --out-dir.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from benchmarks import common
from export.ort import custom_ops_available
from models.errors import UsageError
from models.files import atomic_write
from runtime.backends import TorchBackend

BACKENDS = ("torch", "ort-onnx", "ort-plugin")
DEFAULT_SIZES = "32x32,64x64"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclasses.dataclass
class LatencyConfig(common.Sweep):
    """What ``run`` measures (the command line's flags, as an API)."""
    sizes: Sequence[tuple[int, int]] = tuple(common.csv(common.size)(DEFAULT_SIZES))
    device: str = "cpu"                 # torch on that device, onnxruntime with that provider
    batch: int = 1
    threads: int = 1                    # intra-op threads of torch and onnxruntime
    warmup: int = 3
    repeat: int = 20
    profile_dir: Path | None = None     # onnxruntime's per-op profile of the slowest case goes here (None: none)

    def check(self) -> None:
        """Unknown names and a CUDA device torch cannot see: one-line errors before any work."""
        super().check()
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--device cuda but torch sees no CUDA device; use --device cpu")


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: ru_maxrss is a lifetime peak, good enough as a fallback
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc malloc_trim), so that the next case's peak is its own
    and not hidden by memory an earlier case freed but the process kept."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident memory above the level at start, sampled by a background thread."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self.base = self.peak = _rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(fn: Callable[[], Any], warmup: int, repeat: int, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    times = []
    for _ in range(warmup):
        fn()
    sync()
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    times_ms = sorted(t * 1000 for t in times)
    return {"median_ms": statistics.median(times_ms),
            "p90_ms": float(np.percentile(times_ms, 90, method="higher")), "min_ms": times_ms[0]}


def backend_case(backend: str, model, path: Path | None, config: LatencyConfig, profile: str | None = None):
    """The runtime backend for ``backend`` (a BACKENDS name), as runtime.infer would run it: the torch
    network on ``config.device``, or the ONNX file ``path`` in onnxruntime with ``config.threads``."""
    if backend == "torch":
        return TorchBackend(model, config.device)
    from runtime.backends import OrtBackend
    device = "cuda" if config.device.startswith("cuda") else "cpu"
    return OrtBackend(path, device, threads=config.threads, profile=profile)


def op_profile(trace_file: str, top: int = 8) -> list[dict[str, Any]]:
    """Total time per op type from an onnxruntime profile (kernel events of the timed runs)."""
    with open(trace_file) as f:
        events = json.load(f)
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0)
    total = sum(per_op.values()) or 1
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "ms_per_run": None, "total_us": us, "share": us / total} for op, us in ranked]


def run(config: LatencyConfig, work: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every row of the measurement, what was exported and the profile; ``work``: where exports go
    (default: ``config.work_dir``, else a temporary folder removed at the end)."""
    if work is None:
        with common.work_dir(config.work_dir, "srdeploy-latency-") as work:
            return run(config, work)
    torch.set_num_threads(config.threads)
    cuda = config.device.startswith("cuda")
    rows, exports = [], []
    for name in config.models:
        for scale in config.scales:
            weights = common.weights_for(name, scale, config.weights, config.random_weights)
            model = common.build_model(name, scale, config.model_config, config.options, weights)
            files = {}
            for mode in config.modes:
                path, info = common.export_dynamic(model, mode, "fp32", work, weights)
                exports.append({"model": name, "scale": scale, "mode": mode, **info})
                files[mode] = path
            for h, w in config.sizes:
                h, w = model.valid_size(h, w)
                # [0, 1] as every backend takes it (the backend scales to the network's range)
                x = torch.rand(config.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
                for backend in ["torch"] + [f"ort-{m}" for m in config.modes]:
                    row = {"model": name, "scale": scale, "size": f"{h}x{w}", "batch": config.batch,
                           "backend": backend, "device": config.device}
                    mode = backend[4:]
                    if mode == "plugin" and not custom_ops_available():
                        row["status"] = "not available (custom ops need onnxruntime-extensions)"
                        rows.append(row)
                        continue
                    runner = None
                    try:
                        _release_freed_memory()
                        with PeakRSS() as mem:  # from before the backend is set up to its last run
                            if backend == "torch" and cuda:
                                torch.cuda.reset_peak_memory_stats()
                            runner = backend_case(backend, model, files.get(mode), config)
                            sync = torch.cuda.synchronize if cuda and backend == "torch" else (lambda: None)
                            row.update(measure(lambda: runner(x), config.warmup, config.repeat, sync))
                        if cuda:
                            row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if backend == "torch" else None
                        else:
                            row["peak_mib"] = mem.mib
                        row["images_per_s"] = config.batch / (row["median_ms"] / 1000)
                        row["status"] = "ok"
                    except Exception as e:
                        row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    finally:
                        runner = None  # drop the session (and its arena) before the next case
                        model.to("cpu")
                    rows.append(row)
                    print(_line(row), flush=True)
    profile = profile_slowest(rows, work, config) if config.profile_dir is not None else None
    return rows, {"exports": exports, "work_dir": str(config.work_dir) if config.work_dir else "temporary (removed)",
                  "profile": profile}


def profile_slowest(rows, work: Path, config: LatencyConfig) -> dict[str, Any] | None:
    ort_rows = [r for r in rows if r["backend"].startswith("ort") and r.get("status") == "ok"]
    if not ort_rows:
        return None
    slow = max(ort_rows, key=lambda r: r["median_ms"])
    path = work / f"{slow['model']}_x{slow['scale']}_{slow['backend'][4:]}_fp32.onnx"
    h, w = (int(v) for v in slow["size"].split("x"))
    x = torch.rand(config.batch, 3, h, w)
    runner = backend_case(slow["backend"], None, path, config,
                          profile=str(config.profile_dir / "ort_profile"))  # a result: kept with the others
    runs = max(3, min(config.repeat, 10))
    for _ in range(runs):
        runner(x)
    trace = runner.end_profiling()
    ops = op_profile(trace)
    for op in ops:
        op["ms_per_run"] = op["total_us"] / 1000 / runs
    return {"case": {k: slow[k] for k in ("model", "scale", "size", "backend")}, "runs": runs, "trace": trace,
            "ops": ops}


def _line(row: dict[str, Any]) -> str:
    timing = (f"median {row['median_ms']:.2f} ms  p90 {row['p90_ms']:.2f} ms  {row['images_per_s']:.1f} img/s  "
              f"peak {row['peak_mib'] if row['peak_mib'] is None else round(row['peak_mib'], 1)} MiB"
              if row.get("status") == "ok" else row.get("status"))
    return f"{row['model']} x{row['scale']} {row['size']:>7} {row['backend']:10} {timing}"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r.get("status") == "ok"]
    cases = list(dict.fromkeys(f"{r['model']} x{r['scale']}\n{r['size']}" for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cases) * max(1, len(backends)) / 2), 4.5))
    width = 0.8 / max(1, len(backends))
    for i, b in enumerate(backends):
        vals = {f"{r['model']} x{r['scale']}\n{r['size']}": r for r in ok if r["backend"] == b}
        xs = [k + i * width for k, c in enumerate(cases) if c in vals]
        med = [vals[c]["median_ms"] for c in cases if c in vals]
        p90 = [vals[c]["p90_ms"] - vals[c]["median_ms"] for c in cases if c in vals]
        ax.bar(xs, med, width, yerr=[[0] * len(p90), p90], capsize=2, label=b)
    ax.set_xticks([k + width * (len(backends) - 1) / 2 for k in range(len(cases))])
    ax.set_xticklabels(cases, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median latency, ms (bar: to p90)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, image.getvalue())


COLUMNS = [("model", "model"), ("scale", "scale"), ("size", "LR size"), ("batch", "batch"), ("backend", "backend"),
           ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("images_per_s", "img/s"), ("peak_mib", "peak MiB"),
           ("status", "status")]


def build_parser() -> argparse.ArgumentParser:
    from models.cli import HelpFormatter, whole_number
    _positive = whole_number(1)
    examples = __doc__.split("\n\n")[1]
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[2],
                                epilog="examples:\n" + examples, formatter_class=HelpFormatter)
    common.add_model_arguments(p, default_sizes=DEFAULT_SIZES)
    p.add_argument("--device", default="cpu", metavar="{cpu,cuda,cuda:N}",
                   help="torch on that device, onnxruntime with that provider")
    p.add_argument("--batch", type=_positive, default=1, help="images per run")
    p.add_argument("--threads", type=_positive, default=1, help="intra-op threads of torch and onnxruntime")
    p.add_argument("--warmup", type=whole_number(0), default=3, help="untimed runs before timing")
    p.add_argument("--repeat", type=_positive, default=20, help="timed runs (median and p90 over them)")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip onnxruntime's per-op profile of the slowest case")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip latency.png (needs matplotlib)")
    return p


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise common.fail("matplotlib is not installed, and latency.png needs it: pip install matplotlib "
                          "(a dependency of srdeploy), or pass --no-plot", "python -m benchmarks.latency") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = LatencyConfig.from_args(args, profile_dir=args.out_dir if args.profile else None)
    outs = [args.out_dir / f"latency.{ext}" for ext in ("json", "md", "png")][:3 if args.plot else 2]
    if (code := common.prepare_sweep(config, outs, args.overwrite, "python -m benchmarks.latency")) is not None:
        return code
    if args.plot:
        _check_matplotlib()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, extra = common.run_sweep(run, config, "python -m benchmarks.latency", "latency")
    env = common.environment()
    result = {"benchmark": "latency", "argv": sys.argv[1:] if argv is None else list(argv), "environment": env,
              "config": config.model_config, "device": config.device, "threads": config.threads,
              "warmup": config.warmup, "repeat": config.repeat, "seconds": round(time.perf_counter() - start, 1),
              "rows": rows, **extra}
    text = common.table(rows, COLUMNS)
    md = [f"# Latency ({config.model_config} configs, {config.device}, {config.threads} thread(s), "
          f"batch {config.batch})", "", text]
    prof = extra.get("profile")
    if prof:
        case = prof["case"]
        md += ["", f"## What dominates: onnxruntime per-op profile of the slowest case "
                   f"({case['model']} x{case['scale']} {case['size']} {case['backend']}, {prof['runs']} runs)", "",
               common.table(prof["ops"], [("op", "op"), ("ms_per_run", "ms / run"), ("share", "share")])]
    common.write_json(outs[0], result)
    atomic_write(outs[1], "\n".join(md) + "\n")
    if args.plot:
        plot(rows, outs[2], f"srdeploy latency, {config.model_config} configs, {config.device} ({env['cpu']}), "
                            f"{config.threads} thread(s)")
    print("\n" + "\n".join(md[2:]))
    print(f"\nwrote {', '.join(map(str, outs))}")
    bad = [r for r in rows if r.get("status", "").startswith("error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
