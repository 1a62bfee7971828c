"""GPU benchmarks of the CUDA kernels (issue 10): ``python -m benchmarks.kernels --out DIR``.

Measured side by side in one process, fp32 with TF32 off unless a row says otherwise:

  nlsa      the BucketAttention path (sort + attention + round combine) of one released NLSN block
            (1 x 256 ch, c = 64, chunk 144, 4 hashes) at 64², 96², 128²: each kernel variant
            ($SRDEPLOY_BUCKET_ATTENTION = gather | chunk) vs the project's PyTorch reference path vs the
            official-style NLSA formulation (all rounds at once, [N, R, nc, cs, 3cs] scores, argsort
            for the inverse), fp32 and fp16: latency, peak memory, µs per pixel.
  fold      CrossScaleFold (CSNLN x2, 1 x 128 ch x 64²) kernel vs reference vs per-sample conv_transpose2d.
  nlsn_x4   the released NLSN x4 at 128² LR: fp32 eager reference vs fp16 (and fp32) with the kernels,
            and torch.compile of the reference when it compiles within a minute.
  csnln_x2  the released CSNLN x2 at 256² LR, one pass: fp32 reference vs kernels fp32 / fp16.

Latency: median of CUDA-event times over --reps runs after warm-up; peak memory:
torch.cuda.max_memory_allocated above what was allocated before (inputs included in neither).
Every kernel output is also compared with the reference (DESIGN §5 floors): parity rows.
Writes DIR/kernels.json ({environment, config, parity, speed, memory, targets, rows}) and DIR/kernels.md.
``--device cpu`` checks this script's own logic at tiny sizes (its "kernels" rows run the PyTorch
reference there): not a measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

import models
from benchmarks import common, op_cases
from benchmarks.near_tie import compare_paths
from models import ops
from plugins import kernels as binding

VARIANT_ENV = "SRDEPLOY_BUCKET_ATTENTION"
SRD_ERR_INVALID_ATTRIBUTE = 3  # what the C ABI answers to an unknown variant name
VARIANTS = ("gather", "chunk")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
FLOORS = {"fp32": 100.0, "fp16": 60.0}
FOLD_CH, FOLD_U = 128, 2
COMPILE_LIMIT_S = 60


# ------------------------------------------------------------------------- official-style formulations

def official_bucket_sort(codes: torch.Tensor):
    """The official code's sort: argsort of the round-offset codes, a second argsort for the inverse
    (stable here, so its output is comparable with the deterministic paths)."""
    order = codes.argsort(dim=-1, stable=True)
    return order, order.argsort(dim=-1)


def official_attention(q, v, order, undo, cs, R, eps):
    """NLSA as the paper's code computes it: every round in one batch ([N, R, nc, cs, 3cs] scores),
    adjacent chunks by roll, per-round logsumexp, softmax over rounds."""
    N, L, c = q.shape
    C = v.shape[-1]
    src = order % L
    qs = q.gather(1, src[..., None].expand(-1, -1, c)).view(N, R, L, c)
    vs = v.gather(1, src[..., None].expand(-1, -1, C)).view(N, R, L, C)
    pad = (cs - L % cs) % cs
    if pad:
        qs, vs = torch.cat([qs, qs[:, :, -pad:]], dim=2), torch.cat([vs, vs[:, :, -pad:]], dim=2)
    qs, vs = qs.reshape(N, R, -1, cs, c), vs.reshape(N, R, -1, cs, C)
    keys = F.normalize(qs, p=2, dim=-1, eps=eps)
    keys = torch.cat([keys, keys.roll(1, 2), keys.roll(-1, 2)], dim=3)
    vals = torch.cat([vs, vs.roll(1, 2), vs.roll(-1, 2)], dim=3)
    raw = torch.einsum("nrkie,nrkje->nrkij", qs, keys)
    lse = torch.logsumexp(raw, dim=-1, keepdim=True)
    ret = torch.einsum("nrkij,nrkje->nrkie", torch.exp(raw - lse), vals)
    ret = ret.reshape(N, R, -1, C)[:, :, :L].reshape(N, -1, C)
    lse = lse.reshape(N, R, -1)[:, :, :L].reshape(N, -1)
    ret = ret.gather(1, undo[..., None].expand(-1, -1, C)).view(N, R, L, C)
    lse = lse.gather(1, undo).view(N, R, L, 1)
    return (ret * torch.softmax(lse, dim=1)).sum(dim=1)


def official_nlsa(q, v, codes, cs, R, eps):
    return official_attention(q, v, *official_bucket_sort(codes.long()), cs, R, eps)


def reference_nlsa(q, v, codes, num_buckets, cs, R, eps):
    return ops.bucket_attention_reference(q, v, *ops.bucket_sort_reference(codes, num_buckets), cs, R, eps)


def official_fold(scores, patches, stride, padding):
    return torch.cat([F.conv_transpose2d(scores[i:i + 1], patches[i], stride=stride, padding=padding)
                      for i in range(scores.shape[0])])


# ------------------------------------------------------------------------------------- variants

@contextlib.contextmanager
def attention_variant(name: str | None):
    """$SRDEPLOY_BUCKET_ATTENTION set to ``name`` (None: unset) within the block."""
    saved = os.environ.get(VARIANT_ENV)
    if name is None:
        os.environ.pop(VARIANT_ENV, None)
    else:
        os.environ[VARIANT_ENV] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(VARIANT_ENV, None)
        else:
            os.environ[VARIANT_ENV] = saved


def variants_of(kernels: binding.Kernels) -> list[str]:
    """The BucketAttention variants this library offers, asked without a GPU: given an unknown
    $SRDEPLOY_BUCKET_ATTENTION and no workspace, a library that reads the variable refuses the name
    (SRD_ERR_INVALID_ATTRIBUTE) before anything else; one that predates the variants (gather only)
    asks for workspace instead. Nothing is launched either way."""
    fake = 0x1000  # non-NULL pointers the C ABI never dereferences before refusing the call
    with attention_variant("no-such-variant"):
        status = kernels.lib.srd_bucket_attention(fake, fake, fake, fake, fake, 1, 144, 8, 8, 144, 1, 5e-5, 0,
                                                  None, 0, None)
    return list(VARIANTS) if status == SRD_ERR_INVALID_ATTRIBUTE else ["gather"]


# --------------------------------------------------------------------------------------- timing

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


def psnr(got: torch.Tensor, want: torch.Tensor, peak: float = 1.0) -> float:
    return common.psnr(got.detach().double().cpu().numpy() / peak, want.detach().double().cpu().numpy() / peak)


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
        print(f"{name:60s} {_show(row['median_ms'], 'ms')} {_show(row['peak_mib'], 'MiB')} {note}", flush=True)

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


def _show(v, unit):
    return f"{v:>10.3f} {unit}" if v is not None else f"{'-':>10} {unit}"


def _try(fn: Callable[[], dict], note: list[str]) -> dict | None:
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


# ----------------------------------------------------------------------------------------- groups

def bench_nlsa(rec: Recorder, kernels, variants, sizes, dtypes, reps, warmup, device) -> None:
    p = op_cases.RELEASED_NLSA
    cs, R, eps = p["cs"], p["R"], op_cases.KEY_EPS
    for size in sizes:
        for dname in dtypes:
            q, v, codes, nb = op_cases.attention_inputs(1, size, size, p["c"], p["C"], cs, R, seed=size,
                                                        dtype=DTYPES[dname], device=device, peaky=True)
            tag, L = f"nlsa 1x{p['C']}x{size}x{size} {dname}", size * size
            ref = f"{tag} reference"
            note: list[str] = []
            m = _try(lambda: measure(lambda: reference_nlsa(q, v, codes, nb, cs, R, eps), reps, warmup), note)
            rec.measured("nlsa", ref, m, L, "; ".join(note))
            # the oracle: the reference in fp32 on the same (for fp16: upcast) inputs
            want = m["out"] if m and dname == "fp32" else reference_nlsa(q.float(), v.float(), codes, nb, cs, R, eps)
            note = []
            m = _try(lambda: measure(lambda: official_nlsa(q, v, codes, cs, R, eps), reps, warmup), note)
            rec.measured("nlsa", f"{tag} official", m, L, "; ".join(note))
            if m is not None and dname == "fp32":  # the official-style formulation computes the same
                rec.check(f"{tag} official-style vs reference", m["out"], want, FLOORS[dname])
            for variant in variants if kernels is not None else []:
                name, note = f"{tag} kernel-{variant}", []
                with attention_variant(variant):
                    m = _try(lambda: measure(lambda: kernels.bucket_attention(
                        q, v, *kernels.bucket_sort(codes, nb), cs, R, eps), reps, warmup), note)
                rec.measured("nlsa", name, m, L, "; ".join(note))
                if m is not None:
                    rec.check(name, m["out"].float(), want, FLOORS[dname])
                rec.versus(name, f"{tag} official")
                rec.versus(name, ref)
            rec.versus(f"{tag} reference", f"{tag} official")
            del q, v, codes, want, m
            if device == "cuda":
                torch.cuda.empty_cache()


def bench_fold(rec: Recorder, kernels, sizes, dtypes, reps, warmup, device) -> None:
    for size in sizes:
        for dname in dtypes:
            s, p = op_cases.fold_inputs(1, size, size, FOLD_CH, FOLD_U, seed=size, dtype=DTYPES[dname], device=device)
            tag, px = f"fold 1x{FOLD_CH}x{size}x{size} u{FOLD_U} {dname}", (FOLD_U * size) ** 2
            paths = {"reference": lambda: ops.cross_scale_fold_reference(s, p, FOLD_U, FOLD_U),
                     "official": lambda: official_fold(s, p, FOLD_U, FOLD_U)}
            if kernels is not None:
                paths["kernel"] = lambda: kernels.cross_scale_fold(s, p, FOLD_U, FOLD_U)
            want = ops.cross_scale_fold_reference(s.float(), p.float(), FOLD_U, FOLD_U)  # fp32 oracle
            for path, fn in paths.items():
                note: list[str] = []
                m = _try(lambda: measure(fn, reps, warmup), note)
                rec.measured("fold", f"{tag} {path}", m, px, "; ".join(note))
                if m is not None and (path == "kernel" or (path == "official" and dname == "fp32")):
                    rec.check(f"{tag} {path}" + (" vs reference" if path == "official" else ""), m["out"].float(),
                              want, FLOORS[dname])
            rec.versus(f"{tag} kernel", f"{tag} reference")
            rec.versus(f"{tag} kernel", f"{tag} official")


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


def _tf32(on: bool):
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
        m = _try(lambda: measure(lambda: reference(model, x), reps, warmup), note)
        rec.measured("nlsn_x4", base, m, px, "; ".join(note) or f"TF32 off, {source}")
        want = m["out"] if m else None
        _tf32(True)
        note = []
        m = _try(lambda: measure(lambda: reference(model, x), reps, warmup), note)
        _tf32(False)
        rec.measured("nlsn_x4", f"{tag} fp32 eager reference TF32", m, px, "; ".join(note) or "TF32 on")
        for variant in variants:
            with attention_variant(variant):
                for dname, net in (("fp32", model), ("fp16", model16)):
                    if dname not in dtypes:
                        continue
                    inp = x.to(DTYPES[dname])
                    name, note = f"{tag} {dname} kernels-{variant}", []
                    m = _try(lambda: measure(lambda: net(inp), reps, warmup), note)
                    if m is not None and want is not None:
                        note.append(f"PSNR vs fp32 reference {psnr(m['out'].float(), want, 255):.1f} dB")
                    rec.measured("nlsn_x4", name, m, px, "; ".join(note))
                    rec.versus(name, base)
                    rec.versus(name, f"{tag} fp32 eager reference TF32")
                # fp32 kernels vs reference under the near-tie rule (hash codes compared first)
                note = []
                row = _try(lambda: compare_paths(model, lambda mm, t: mm(t), model, reference, x, floor_db=100.0,
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
        m = _try(lambda: measure(lambda: _reference(compiled, x), reps), note)
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
            _try(warm, note)  # cuDNN/cuBLAS initialisation on a 32x32 crop, not the timed size
            m = _try(lambda: measure(fn, reps=1, warmup=0), note)
            rec.measured("csnln_x2", name, m, px, "; ".join(note) or source)
            if m is not None and name != base:
                rec.versus(name, base)
            del m
            if device == "cuda":
                torch.cuda.empty_cache()
    del model, model16


def targets(rec: Recorder, variants, nlsn_size: int) -> list[dict[str, Any]]:
    """The targets of issue 10 against what was measured (None: not measured)."""
    out = []
    by_name = {(r["name"], r["baseline"]): r for r in rec.speed}
    mem = {(r["name"], r["baseline"]): r for r in rec.memory}
    for variant in variants:
        for dname in ("fp16", "fp32"):
            tag = f"nlsa 1x256x96x96 {dname}"
            key = (f"{tag} kernel-{variant}", f"{tag} official")
            s, m = by_name.get(key), mem.get(key)
            out.append({"name": f"BucketAttention path ({variant}, {dname}) vs official-style NLSA at 1x256x96², speed",
                        "wanted": ">= 8x" if dname == "fp16" else "(reported)", "measured": s and s["ratio"],
                        "met": None if s is None or dname != "fp16" else s["ratio"] >= 8})
            out.append({"name": f"BucketAttention path ({variant}, {dname}) vs official-style NLSA at 1x256x96², peak memory",
                        "wanted": ">= 10x" if dname == "fp16" else "(reported)", "measured": m and m["ratio"],
                        "met": None if m is None or dname != "fp16" else m["ratio"] >= 10})
        tag = f"nlsn x4 {nlsn_size}x{nlsn_size}"
        s = by_name.get((f"{tag} fp16 kernels-{variant}", f"{tag} fp32 eager reference"))
        out.append({"name": f"NLSN x4 at {nlsn_size}² LR fp16 kernels ({variant}) vs fp32 eager", "wanted": ">= 4x",
                    "measured": s and s["ratio"], "met": None if s is None else s["ratio"] >= 4})
    return out


def environment(kernels, variants) -> dict[str, Any]:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "tf32": False,
           "kernels_library": str(kernels.path) if kernels else None, "variants": variants}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(),
                   capability=".".join(map(str, torch.cuda.get_device_capability())))
    return env


def markdown(record: dict[str, Any]) -> str:
    rows = common.table(record["rows"], [("name", "path"), ("median_ms", "median ms"), ("peak_mib", "peak MiB"),
                                         ("us_per_pixel", "µs/px"), ("note", "note")])
    speed = common.table(record["speed"], [("name", "path"), ("baseline", "baseline"), ("ratio", "speed-up")])
    memory = common.table(record["memory"], [("name", "path"), ("baseline", "baseline"), ("ratio", "less memory")])
    parity = common.table(record["parity"], [("name", "case"), ("psnr_db", "PSNR dB"), ("floor_db", "floor"),
                                             ("passed", "passed"), ("note", "note")])
    tg = common.table(record["targets"], [("name", "target"), ("wanted", "wanted"), ("measured", "measured"),
                                          ("met", "met")])
    return (f"# Kernel benchmarks ({record['environment'].get('gpu', 'cpu')})\n\n{rows}\n\n## Speed-ups\n\n{speed}\n\n"
            f"## Peak memory\n\n{memory}\n\n## Parity\n\n{parity}\n\n## Targets\n\n{tg}\n")


GROUPS = ("nlsa", "fold", "nlsn_x4", "csnln_x2")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/kernels"), help="folder for kernels.json and kernels.md")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    p.add_argument("--groups", type=common.csv(str), default=list(GROUPS), help=",".join(GROUPS))
    p.add_argument("--sizes", type=common.csv(int), default=[64, 96, 128], help="NLSA feature-map sides")
    p.add_argument("--fold-sizes", type=common.csv(int), default=[64], help="CrossScaleFold feature-map sides")
    p.add_argument("--nlsn-size", type=int, default=128, help="NLSN x4 LR side")
    p.add_argument("--csnln-size", type=int, default=256, help="CSNLN x2 LR side")
    p.add_argument("--dtypes", type=common.csv(str), default=list(DTYPES), help="fp32,fp16")
    p.add_argument("--variants", type=common.csv(str), default=None,
                   help=f"BucketAttention variants (default: every one the library offers of {','.join(VARIANTS)})")
    p.add_argument("--reps", type=int, default=20, help="timed runs per path (median; >= 20 for reported figures)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before the timed ones")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile of the NLSN reference")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: reference and official-style paths only, to check this script (not a measurement)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for flag, values, allowed in [("--groups", args.groups, GROUPS), ("--dtypes", args.dtypes, DTYPES),
                                  ("--variants", args.variants or [], VARIANTS)]:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            print(f"error: {flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}", file=sys.stderr)
            return 2
    if args.reps < 1 or args.warmup < 0:
        print("error: --reps must be at least 1 and --warmup at least 0", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here; run on a GPU machine (scripts/gpu_check.sh), or --device cpu to check "
              "the script itself", file=sys.stderr)
        return 2
    out_json, out_md = args.out / "kernels.json", args.out / "kernels.md"
    try:
        common.check_outputs([out_json, out_md], args.overwrite)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    kernels, variants = None, []
    if args.device == "cuda":
        torch.cuda.init()
        _tf32(False)
        try:
            kernels = binding.load()
        except binding.KernelsUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        binding.reset()
        binding.enable()  # the whole-network groups reach the kernels through torch.ops.srdeploy
        offered = variants_of(kernels)
        variants = [v for v in args.variants or offered if v in offered]
        missing = [v for v in args.variants or [] if v not in offered]
        if missing:  # measuring them would time the gather kernel under another name
            print(f"BucketAttention variant(s) {', '.join(missing)} not offered by {kernels.path} (it ignores "
                  f"${VARIANT_ENV}): not measured", flush=True)
    else:  # the CPU check of this script: "kernels" rows run the reference there
        variants = args.variants or ["gather"]
    rec = Recorder()
    start = time.perf_counter()

    def save():  # after every group: a run stopped by its time limit still leaves the groups done
        record = {"benchmark": "kernels", "environment": environment(kernels, variants),
                  "config": {**op_cases.RELEASED_NLSA, "fold_channels": FOLD_CH, "fold_up_factor": FOLD_U,
                             "reps": args.reps, "groups": args.groups, "sizes": args.sizes, "device": args.device,
                             "seconds": round(time.perf_counter() - start, 1)},
                  "parity": rec.parity, "speed": rec.speed, "memory": rec.memory,
                  "targets": targets(rec, variants, args.nlsn_size), "rows": rec.rows}
        common.write_json(out_json, record)
        common.write_atomic(out_md, markdown(record))
        return record

    cuda = args.device == "cuda"
    runs = [("nlsa", lambda: bench_nlsa(rec, kernels, variants, args.sizes, args.dtypes, args.reps, args.warmup, args.device)),
            ("fold", lambda: bench_fold(rec, kernels, args.fold_sizes, args.dtypes, args.reps, args.warmup, args.device)),
            ("nlsn_x4", lambda: bench_nlsn_x4(rec, variants, args.nlsn_size, args.dtypes, args.reps, args.warmup,
                                              args.device)),
            ("csnln_x2", lambda: bench_csnln_x2(rec, args.csnln_size, args.dtypes, args.device)),
            ("nlsn_x4", lambda: cuda and not args.no_compile and
             bench_nlsn_x4_compile(rec, variants, args.nlsn_size, args.reps, args.device))]
    for group, run in runs:
        if group in args.groups:
            with torch.no_grad():
                run()
            record = save()
    record = save()
    print(markdown(record))
    print(f"wrote {out_json} and {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
