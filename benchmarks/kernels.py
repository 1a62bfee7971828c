"""GPU microbenchmarks of the custom-op kernels: ``python -m benchmarks.kernels --out DIR``.

For each op and size, three paths on the same inputs:
  kernel    torch.ops.srdeploy.* with the CUDA kernels (plugins.loader.enable(); ctypes call included)
  reference torch.ops.srdeploy.* with the PyTorch reference (plugins.loader.reference_only())
  official  the official code's formulation: all hash rounds at once ([N, R, nc, cs, 3cs] scores),
            a second argsort for the inverse permutation; per-sample conv_transpose2d for CSNLN
at NLSA 1 x 256 ch x {64, 96, 128}^2 (c = 64, cs = 144, R = 4) and CSNLN x2 cross-scale fold
1 x 128 ch x {32, 48, 64}^2, fp32 (TF32 off on every path) and fp16. Median latency over CUDA
events and peak memory above the inputs; results.json + results.md in --out.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers torch.ops.srdeploy)
from models import ops
from models.nlsn import KEY_EPS, num_buckets
from plugins import loader

CHUNK, ROUNDS, QUERY_CH, FEATS = 144, 4, 64, 256
FOLD_CH, FOLD_U = 128, 2
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# ------------------------------------------------------------------------- official formulations

def official_bucket_sort(codes: torch.Tensor, num_buckets: int):
    order = codes.argsort(dim=-1, stable=True)  # the official code sorts unstably; stable here for parity
    return order, order.argsort(dim=-1)  # and sorts again for the inverse


def official_attention(q, v, order, undo, cs, R, eps):
    """All rounds in one batch, as the official NLSN code computes them."""
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


def official_fold(scores, patches, stride, padding):
    return torch.cat([F.conv_transpose2d(scores[i:i + 1], patches[i], stride=stride, padding=padding)
                      for i in range(scores.shape[0])])


# ---------------------------------------------------------------------------------- inputs

def nlsa_inputs(size: int, dtype, device="cuda", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    L = size * size
    q = 0.5 * torch.randn(1, L, QUERY_CH, device=device, generator=g)
    v = torch.rand(1, L, FEATS, device=device, generator=g)
    hb = num_buckets(L, CHUNK)
    rot = torch.randn(QUERY_CH, ROUNDS, hb // 2, device=device, generator=g)
    proj = torch.einsum("ntf,fri->nrti", q, rot)
    codes = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)
    codes = (codes + torch.arange(ROUNDS, device=device).view(1, -1, 1) * hb).reshape(1, -1).to(torch.int32)
    return q.to(dtype), v.to(dtype), codes, ROUNDS * hb


def fold_inputs(size: int, dtype, device="cuda", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    K = (size // FOLD_U) ** 2
    scores = torch.softmax(10 * torch.randn(1, K, size, size, device=device, generator=g), dim=1)
    patches = torch.randn(1, K, FOLD_CH, 3 * FOLD_U, 3 * FOLD_U, device=device, generator=g)
    return scores.to(dtype), patches.to(dtype)


# ---------------------------------------------------------------------------------- timing

def measure(fn, reps: int, warmup: int = 3):
    """(median ms, peak MiB above what was allocated before, last output)."""
    for _ in range(warmup):
        out = fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        del out
    out = fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return statistics.median(times), peak, out


def psnr(a, b) -> float:
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def cases(sizes, fold_sizes, dtypes):
    sort = torch.ops.srdeploy.bucket_sort
    attn = torch.ops.srdeploy.bucket_attention
    fold = torch.ops.srdeploy.cross_scale_fold
    for size in sizes:
        q32, v32, codes, nb = nlsa_inputs(size, torch.float32)
        order, rank = ops.bucket_sort_reference(codes, nb)
        yield ("bucket_sort", size, "int32", {
            "kernel": lambda: sort(codes, nb),
            "reference": lambda: _ref(sort, codes, nb),
            "official": lambda: official_bucket_sort(codes, nb)})
        for dname in dtypes:
            q, v = q32.to(DTYPES[dname]), v32.to(DTYPES[dname])
            yield ("bucket_attention", size, dname, {
                "kernel": lambda q=q, v=v: attn(q, v, order, rank, CHUNK, ROUNDS, KEY_EPS),
                "reference": lambda q=q, v=v: _ref(attn, q, v, order, rank, CHUNK, ROUNDS, KEY_EPS),
                "official": lambda q=q, v=v: official_attention(q, v, order.long(), rank.long(), CHUNK, ROUNDS, KEY_EPS)})
            yield ("nlsa", size, dname, {
                "kernel": lambda q=q, v=v: attn(q, v, *sort(codes, nb), CHUNK, ROUNDS, KEY_EPS),
                "reference": lambda q=q, v=v: _ref(lambda: attn(q, v, *sort(codes, nb), CHUNK, ROUNDS, KEY_EPS)),
                "official": lambda q=q, v=v: official_attention(q, v, *official_bucket_sort(codes, nb), CHUNK,
                                                                ROUNDS, KEY_EPS)})
    for size in fold_sizes:
        s32, p32 = fold_inputs(size, torch.float32)
        for dname in dtypes:
            s, p = s32.to(DTYPES[dname]), p32.to(DTYPES[dname])
            yield ("cross_scale_fold", size, dname, {
                "kernel": lambda s=s, p=p: fold(s, p, FOLD_U, FOLD_U),
                "reference": lambda s=s, p=p: _ref(fold, s, p, FOLD_U, FOLD_U),
                "official": lambda s=s, p=p: official_fold(s, p, FOLD_U, FOLD_U)})


def _ref(fn, *args):
    with loader.reference_only():
        return fn(*args)


def run(sizes, fold_sizes, dtypes, reps):
    rows = []
    for op, size, dname, paths in cases(sizes, fold_sizes, dtypes):
        results = {}
        for path, fn in paths.items():
            try:
                ms, peak, out = measure(fn, reps)
                results[path] = (ms, peak, out)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                results[path] = None
        ref_out = results["reference"][2] if results.get("reference") else None
        for path, res in results.items():
            row = {"op": op, "size": f"{size}x{size}", "dtype": dname, "path": path}
            if res is None:
                row.update(median_ms=None, peak_mib=None, psnr_vs_reference_db=None, note="out of memory")
            else:
                ms, peak, out = res
                row.update(median_ms=round(ms, 4), peak_mib=round(peak, 2),
                           psnr_vs_reference_db=None if ref_out is None or op == "bucket_sort" else
                           round(min(psnr(out, ref_out), 999.0), 1))
                if op == "bucket_sort" and ref_out is not None:
                    row["exact"] = bool(torch.equal(out[0].long(), ref_out[0].long()) and
                                        torch.equal(out[1].long(), ref_out[1].long()))
            rows.append(row)
            print(f"{op:17s} {row['size']:>8s} {dname:5s} {path:9s} "
                  f"{row['median_ms'] if row['median_ms'] is not None else 'OOM':>9} ms "
                  f"{row['peak_mib'] if row['peak_mib'] is not None else '':>9} MiB", flush=True)
        del results, ref_out
        torch.cuda.empty_cache()
    return rows


def environment() -> dict:
    return {"gpu": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "kernels": loader.status(), "tf32": False}


def table(rows) -> str:
    lines = ["| op | size | dtype | path | median ms | peak MiB | PSNR vs reference (dB) | speed-up vs reference |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    ref = {(r["op"], r["size"], r["dtype"]): r["median_ms"] for r in rows if r["path"] == "reference"}
    for r in rows:
        base = ref.get((r["op"], r["size"], r["dtype"]))
        speed = f"{base / r['median_ms']:.2f}x" if base and r["median_ms"] else ""
        quality = "exact" if r.get("exact") else ("" if r["psnr_vs_reference_db"] is None else r["psnr_vs_reference_db"])
        lines.append(f"| {r['op']} | {r['size']} | {r['dtype']} | {r['path']} | "
                     f"{r['median_ms'] if r['median_ms'] is not None else 'OOM'} | "
                     f"{r['peak_mib'] if r['peak_mib'] is not None else ''} | {quality} | {speed} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/bench_kernels", help="output folder for results.json and results.md")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128], help="NLSA feature map sides")
    p.add_argument("--fold-sizes", type=int, nargs="+", default=[32, 48, 64], help="CSNLN fold feature map sides")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks.kernels needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    loader.enable()
    if loader.get() is None:
        print("warning: the kernels library is missing; 'kernel' rows measure the reference", file=sys.stderr)
    with torch.no_grad():
        rows = run(args.sizes, args.fold_sizes, args.dtypes, args.reps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "kernels", "environment": environment(),
              "config": {"chunk_size": CHUNK, "n_hashes": ROUNDS, "c": QUERY_CH, "C": FEATS, "fold_channels": FOLD_CH,
                         "fold_up_factor": FOLD_U, "reps": args.reps}, "results": rows}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    md = f"# Kernel microbenchmarks ({record['environment']['gpu']})\n\n" + table(rows)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
