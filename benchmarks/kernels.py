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
The groups live in benchmarks/kernel_ops.py (nlsa, fold) and benchmarks/kernel_networks.py
(nlsn_x4, csnln_x2); timing and rows in benchmarks/kernel_timing.py.
Writes DIR/kernels.json ({environment, config, parity, speed, memory, targets, rows}) and DIR/kernels.md.
``--device cpu`` checks this script's own logic at tiny sizes (its "kernels" rows run the PyTorch
reference there): not a measurement.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common, op_cases
from benchmarks.kernel_networks import bench_csnln_x2, bench_nlsn_x4, bench_nlsn_x4_compile, set_tf32
from benchmarks.kernel_ops import DTYPES, FOLD_CH, FOLD_U, VARIANTS, bench_fold, bench_nlsa, variants_of
# also benchmarks.kernels.* for the tests (test_kernels_gpu.py, test_gpu_check_script.py)
from benchmarks.kernel_ops import VARIANT_ENV, official_nlsa, reference_nlsa  # noqa: F401
from benchmarks.kernel_timing import Recorder
from models.files import atomic_write
from plugins import kernels as binding


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
        set_tf32(False)
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
        atomic_write(out_md, markdown(record))
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
