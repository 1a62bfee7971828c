"""The whole-network groups of the kernel benchmarks (benchmarks/kernels.py): the released NLSN x4
(``nlsn_x4``: fp32 eager reference, TF32, fp32/fp16 with the kernels, torch.compile) and the released
CSNLN x2 (``csnln_x2``, one pass per path). The kernels are reached through ``torch.ops.srdeploy``:
the caller (benchmarks.kernels.main) has called ``plugins.kernels.enable()`` on CUDA."""
from __future__ import annotations

import contextlib
import copy
import signal
import time

import torch

import models
from benchmarks import common
from benchmarks.kernel_ops import DTYPES, attention_variant
from benchmarks.kernel_timing import Recorder, measure, try_path
from benchmarks.near_tie import compare_paths
from plugins import kernels as binding
from runtime.metrics import psnr

__all__ = ["COMPILE_LIMIT_S", "set_tf32", "bench_nlsn_x4", "bench_nlsn_x4_compile", "bench_csnln_x2"]

COMPILE_LIMIT_S = 60


@contextlib.contextmanager
def _time_limit(seconds: int):
    """Raise TimeoutError in this (main) thread after ``seconds`` (SIGALRM)."""
    def expire(_signum, _frame):
        raise TimeoutError(f"did not finish within {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def set_tf32(on: bool):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on


def _nlsn_x4(size: int, device):
    torch.manual_seed(0)
    model = models.build("nlsn", 4).to(device)
    x, source = common.real_lr(size, size, 4)
    return model, (255 * x).to(device), source, f"nlsn x4 {size}x{size}", (4 * size) ** 2


def _reference(m, t):
    with binding.reference_only():
        return m(t)


def bench_nlsn_x4(rec: Recorder, variants, size, dtypes, reps, warmup, device) -> None:
    """Released NLSN x4 (random weights, seed 0) on a real LR crop: the paths a user can choose."""
    model, x, source, tag, px = _nlsn_x4(size, device)
    model16 = copy.deepcopy(model).half() if "fp16" in dtypes else None
    base = f"{tag} fp32 eager reference"
    reference = _reference

    with torch.no_grad():
        note: list[str] = []
        m = try_path(lambda: measure(lambda: reference(model, x), reps, warmup), note)
        rec.measured("nlsn_x4", base, m, px, "; ".join(note) or f"TF32 off, {source}")
        want = m["out"] if m else None
        set_tf32(True)
        note = []
        m = try_path(lambda: measure(lambda: reference(model, x), reps, warmup), note)
        set_tf32(False)
        rec.measured("nlsn_x4", f"{tag} fp32 eager reference TF32", m, px, "; ".join(note) or "TF32 on")
        for variant in variants:
            with attention_variant(variant):
                for dname, net in (("fp32", model), ("fp16", model16)):
                    if dname not in dtypes:
                        continue
                    inp = x.to(DTYPES[dname])
                    name, note = f"{tag} {dname} kernels-{variant}", []
                    m = try_path(lambda: measure(lambda: net(inp), reps, warmup), note)
                    if m is not None and want is not None:
                        note.append(f"PSNR vs fp32 reference {psnr(m['out'].float(), want, peak=255):.1f} dB")
                    rec.measured("nlsn_x4", name, m, px, "; ".join(note))
                    rec.versus(name, base)
                    rec.versus(name, f"{tag} fp32 eager reference TF32")
                # fp32 kernels vs reference under the near-tie rule (hash codes compared first)
                note = []
                row = try_path(lambda: compare_paths(model, lambda mm, t: mm(t), model, reference, x, floor_db=100.0,
                                                 peak=255), note)
                rec.parity.append({"name": f"{tag} released fp32 kernels-{variant} vs reference ({source})",
                                   **(row or {"floor_db": 100.0, "passed": False, "note": "; ".join(note)})})
    del model, model16


def bench_nlsn_x4_compile(rec: Recorder, variants, size, reps, device) -> None:
    """torch.compile of the fp32 reference, recorded as skipped when it does not compile within
    COMPILE_LIMIT_S (run last: a slow compile must not cost the other figures)."""
    model, x, _, tag, px = _nlsn_x4(size, device)
    name, note = f"{tag} fp32 torch.compile reference", []
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.no_grad():
        try:
            with _time_limit(COMPILE_LIMIT_S):
                _reference(compiled, x)
                torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001  (a slow or failing compile is recorded as skipped)
            rec.measured("nlsn_x4", name, None, px,
                         f"skipped: torch.compile {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            return
        compile_s = time.perf_counter() - start
        m = try_path(lambda: measure(lambda: _reference(compiled, x), reps), note)
    rec.measured("nlsn_x4", name, m, px, "; ".join(note) or f"compiled in {compile_s:.0f} s, TF32 off")
    rec.versus(name, f"{tag} fp32 eager reference")
    for variant in variants:
        rec.versus(f"{tag} fp16 kernels-{variant}", name)


def bench_csnln_x2(rec: Recorder, size: int, dtypes, device) -> None:
    """Released CSNLN x2 (random weights) at size² LR, one timed pass per path after a small warm-up."""
    torch.manual_seed(0)
    model = models.build("csnln", 2).to(device)
    model16 = copy.deepcopy(model).half() if "fp16" in dtypes else None
    x, source = common.real_lr(size, size, 2)
    x = (255 * x).to(device)
    tag, px = f"csnln x2 {size}x{size} one pass", (2 * size) ** 2
    base = f"{tag} fp32 reference"

    def reference(t):
        with binding.reference_only():
            return model(t)

    small = x[..., :32, :32]
    paths = [(base, lambda: reference(x), lambda: reference(small)),
             (f"{tag} fp32 kernels", lambda: model(x), lambda: model(small))]
    if model16 is not None:
        paths.append((f"{tag} fp16 kernels", lambda: model16(x.half()), lambda: model16(small.half())))
    with torch.no_grad():
        for name, fn, warm in paths:
            note: list[str] = []
            try_path(warm, note)  # cuDNN/cuBLAS initialisation on a 32x32 crop, not the timed size
            m = try_path(lambda: measure(fn, reps=1, warmup=0), note)
            rec.measured("csnln_x2", name, m, px, "; ".join(note) or source)
            if m is not None and name != base:
                rec.versus(name, base)
            del m
            if device == "cuda":
                torch.cuda.empty_cache()
    del model, model16
