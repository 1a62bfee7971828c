"""``python -m benchmarks.memory``: peak memory and time of whole-image upscaling, and the tile
``--tile auto`` picks for a memory budget.

    python -m benchmarks.memory --out-dir benchmarks/results
    python -m benchmarks.memory --models csnln --sizes 64,128 --variants blocked --tiles 0

Each measurement runs ``runtime.pipeline.upscale`` on a bundled model in a subprocess of its own
(one torch thread) and reports that child's peak RSS (``resource.getrusage``), its RSS before the
forward pass (the process with torch and the network loaded) and the wall-clock time of the pass.
CSNLN runs with its attentions dense (one [L, L] score tensor, as the exported graphs compute
them) and blocked (``models.csnln``, blocks of query positions); NLSN has one form. The working
memory (peak - before) is compared with ``runtime.memory``'s estimate, which these results
calibrate. Inputs are Set5 crops (LR by MATLAB bicubic), or noise when the data is absent.

CAUTION: dense CSNLN x2 on 192x192 takes about 11 GB; measurements run one at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from models.files import atomic_write

PROG = "python -m benchmarks.memory"
VARIANTS = ("dense", "blocked")
DEFAULT_BUDGETS = ("24G", "4G")
AUTO_SIZES = (64, 128, 192, 512, 1024, 2048)
COLUMNS = [("run", "run (UTC)"), ("model", "model"), ("scale", "x"), ("size", "LR size"), ("attention", "attention"),
           ("tile", "tile"),
           ("seconds", "s"), ("peak_rss_mib", "peak RSS MiB"), ("working_mib", "working MiB"),
           ("estimate_mib", "estimate MiB"), ("estimate_ratio", "estimate / working"), ("status", "status")]
AUTO_COLUMNS = [("model", "model"), ("scale", "x"), ("size", "LR size"), ("budget", "budget"), ("tile", "auto tile"),
                ("estimate_mib", "estimate MiB"), ("note", "")]


# --------------------------------------------------------------------------- one measurement (child)

def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the subprocess: load, upscale once, report."""
    import torch

    from models.csnln import set_attention_block_bytes
    from runtime.pipeline import load_upscaler, upscale
    torch.set_num_threads(spec["threads"])
    backend = load_upscaler(spec["model"], spec["scale"])
    if spec["attention"] == "dense":
        set_attention_block_bytes(backend.model, None)
    x, source = common.real_lr(spec["size"], spec["size"], spec["scale"])
    img = x[0].permute(1, 2, 0).numpy().copy()
    base = _rss_now()
    start = time.perf_counter()
    upscale(img, backend, tile=spec["tile"], tile_pad=spec["tile_pad"])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"input": source, "seconds": round(seconds, 2), "peak_rss_mib": round(peak / 2**20, 1),
            "base_rss_mib": round(base / 2**20, 1), "working_mib": round((peak - base) / 2**20, 1)}


def measure(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One measurement in a fresh interpreter (its peak RSS is its own)."""
    row = {k: spec[k] for k in ("model", "scale", "size", "attention", "tile")}
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    try:
        done = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"error: timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**row, "status": f"error: exit {done.returncode}: {last[:200]}"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1]), "status": "ok"}


def add_estimates(rows: list[dict[str, Any]], tile_pad: int) -> None:
    """runtime.memory's estimate of each measured row's working memory, and its ratio to it."""
    from models.csnln import ATTENTION_BLOCK_BYTES, set_attention_block_bytes
    from runtime import memory
    from runtime.pipeline import load_upscaler
    for row in rows:
        backend = load_upscaler(row["model"], row["scale"])
        if row["model"] == "csnln":
            set_attention_block_bytes(backend.model, None if row["attention"] == "dense" else ATTENTION_BLOCK_BYTES)
        h = w = row["size"]
        pixels = memory.window_pixels(h, w, row["tile"], tile_pad, backend.valid_size)
        estimate = memory.image_bytes(h, w, backend.scale) + memory.memory_model(backend).estimate(pixels)
        row["estimate_mib"] = round(estimate / 2**20, 1)
        ok = row.get("status") == "ok" and row["working_mib"] > 0
        row["estimate_ratio"] = round(row["estimate_mib"] / row["working_mib"], 2) if ok else None


# --------------------------------------------------------------------------- auto tile table

def auto_tiles(models_: list[str], scale: int, budgets: list[str], sizes: list[int], tile_pad: int) -> list[dict]:
    """What --tile auto picks for each model, image size and budget (no network is run)."""
    from models.csnln import ATTENTION_BLOCK_BYTES, set_attention_block_bytes
    from runtime import memory
    from runtime.pipeline import load_upscaler
    rows = []
    for name in models_:
        backend = load_upscaler(name, scale)
        forms = [("blocked", True), ("dense", False)] if name == "csnln" else [("", True)]
        for form, blocked in forms:
            if name == "csnln":
                set_attention_block_bytes(backend.model, ATTENTION_BLOCK_BYTES if blocked else None)
            for budget in budgets:
                for size in sizes:
                    row = {"model": name + (f" ({form})" if form else ""), "scale": scale, "size": size,
                           "budget": budget}
                    try:
                        choice = memory.choose_tile(size, size, backend, memory.parse_size(budget), tile_pad)
                        row.update(tile=choice.tile, estimate_mib=round(choice.estimate / 2**20, 1),
                                   note="whole image" if choice.tile == 0 else "")
                    except memory.TilingError as e:
                        row.update(tile=None, estimate_mib=None, note=f"refused: {e}")
                    rows.append(row)
    return rows


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  python -m benchmarks.memory --out-dir benchmarks/results\n"
                                       "  python -m benchmarks.memory --models nlsn --sizes 64 --tiles 0 --out-dir /tmp/m")
    p.add_argument("--models", type=common.csv(str), default=["csnln", "nlsn"],
                   help="comma-separated bundled models: csnln,nlsn (default: both)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=2, help="upscaling factor (default: 2)")
    p.add_argument("--sizes", type=common.csv(int), default=[64, 128, 192],
                   help="square LR sizes (default: 64,128,192)")
    p.add_argument("--variants", type=common.csv(str), default=list(VARIANTS),
                   help="CSNLN attention forms: dense,blocked (default: both; NLSN has one)")
    p.add_argument("--tiles", type=common.csv(int), default=[0, 64],
                   help="tiles in LR pixels, 0 = untiled (default: 0,64)")
    p.add_argument("--tile-pad", type=int, default=32, help="context around each tile (default: 32)")
    p.add_argument("--budgets", type=common.csv(str), default=list(DEFAULT_BUDGETS),
                   help="budgets for the auto-tile table (default: 24G,4G)")
    p.add_argument("--auto-sizes", type=common.csv(int), default=list(AUTO_SIZES),
                   help="image sizes of the auto-tile table (default: 64,128,192,512,1024,2048)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per measurement (default: 1)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement (default: 900)")
    p.add_argument("--out-dir", type=Path, default=Path("results"),
                   help="where memory.json and memory.md go (default: results)")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    p.add_argument("--reuse", type=Path, metavar="JSON",
                   help="keep the measurements of an earlier (or interrupted) memory.json and run only the missing "
                        "ones; estimates and the auto-tile table are recomputed (e.g. after a new calibration)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    for flag, values, allowed in [("--models", args.models, ("csnln", "nlsn")), ("--variants", args.variants, VARIANTS)]:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            print(f"error: {flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}", file=sys.stderr)
            return 2
    from runtime import memory
    for b in args.budgets:
        try:
            memory.parse_size(b)
        except ValueError as e:
            print(f"error: --budgets: {e}", file=sys.stderr)
            return 2
    outs = [args.out_dir / f"memory.{ext}" for ext in ("json", "md")]
    common.check_outputs(outs, args.overwrite)
    with common.one_line_errors(PROG):  # e.g. bundled weights missing, a tile refused
        return _measure_all(args, outs, argv)


def _measure_all(args, outs: list[Path], argv) -> int:
    """Every measurement asked for (each in a child process), then the tables; 1 if any failed."""
    from runtime import memory
    start = time.perf_counter()
    run_id = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())  # times compare only within one run
    earlier = json.loads(args.reuse.read_text()) if args.reuse else {"rows": []}
    rows = [r for r in earlier["rows"] if r.get("status") == "ok"]
    done = {_key(r) for r in rows}
    for name in args.models:
        for size in args.sizes:
            for variant in (args.variants if name == "csnln" else ["-"]):
                for tile in args.tiles:
                    spec = {"model": name, "scale": args.scale, "size": size, "attention": variant, "tile": tile,
                            "tile_pad": args.tile_pad, "threads": args.threads}
                    if _key(spec) in done:
                        continue
                    row = {**measure(spec, args.timeout), "run": run_id}
                    rows.append(row)
                    print(f"{name} x{args.scale} {size}² {variant} tile {tile}: {row.get('seconds')} s, "
                          f"peak {row.get('peak_rss_mib')} MiB ({row['status']})", file=sys.stderr)
                    # after every measurement, so that an interrupted run resumes with --reuse
                    common.write_json(outs[0], {"benchmark": "memory", "complete": False, "rows": rows})
    add_estimates(rows, args.tile_pad)
    auto = auto_tiles(args.models, args.scale, args.budgets, args.auto_sizes, args.tile_pad)
    result = {"benchmark": "memory", "complete": True, "argv": sys.argv[1:] if argv is None else list(argv),
              "environment": common.environment(), "threads": args.threads, "tile_pad": args.tile_pad,
              "calibration": {"feature_maps": memory.FEATURE_MAPS, "fixed_bytes": memory.FIXED_BYTES},
              "seconds": round(time.perf_counter() - start, 1), "rows": rows, "auto_tiles": auto}
    if args.reuse:
        result["reused"] = {"file": str(args.reuse), "argv": earlier.get("argv"), "seconds": earlier.get("seconds"),
                            "rows": len(done)}
    md = [f"# Peak memory and time, bundled x{args.scale} models, CPU, {args.threads} thread(s), one run each", "",
          "working = peak RSS - RSS before the pass (torch and the network loaded); estimate: runtime.memory. "
          "Times compare only within one run (the machine's load differs between runs).", "",
          common.table(rows, COLUMNS), "", f"## --tile auto (tile pad {args.tile_pad}; no network run)", "",
          common.table(auto, AUTO_COLUMNS)]
    common.write_json(outs[0], result)
    atomic_write(outs[1], "\n".join(md) + "\n")
    print("\n".join(md))
    print(f"\nwrote {', '.join(map(str, outs))}")
    return 1 if any(r["status"] != "ok" for r in rows) else 0


def _key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in ("model", "scale", "size", "attention", "tile"))


if __name__ == "__main__":
    sys.exit(main())
