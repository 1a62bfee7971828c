"""The figures of one GPU check (scripts/gpu_check.sh) in one place.

    python -m benchmarks.gpu_summary collect OUT_DIR     # OUT_DIR/summary.json + summary.md (on the GPU machine)
    python -m benchmarks.gpu_summary publish OUT_DIR     # -> benchmarks/results/gpu/<gpu-name>.json + .md

``collect`` joins what the check's steps left in OUT_DIR: ``steps.tsv`` (name, status, seconds, exit code,
note per step), ``parity.jsonl`` (rows written by the GPU tests through :func:`record_parity`) and
``kernels.json`` + ``kernels_chunk.json`` (benchmarks.kernels: parity, speed and memory rows), with the device, driver, CUDA and
torch versions, into the schema of issue 10. ``publish`` copies a collected summary into the
repository under the GPU's name (spaces as dashes), refusing to replace an existing file unless
``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, UsageExit, check_outputs, fail, one_line_errors, write_json
from models.files import atomic_write

PARITY_LOG_ENV = "SRDEPLOY_PARITY_LOG"
RESULTS_DIR = REPO / "benchmarks" / "results" / "gpu"


def record_parity(name: str, **fields: Any) -> None:
    """Append one parity row ({"name": ..., "psnr_db"/"exact"/..., "floor_db": ...}) to $SRDEPLOY_PARITY_LOG
    (JSON lines); a no-op when the variable is unset (a plain pytest run)."""
    path = os.environ.get(PARITY_LOG_ENV)
    if not path:
        return
    row = {"name": name, **{k: (round(v, 2) if isinstance(v, float) and v == v and abs(v) != float("inf") else v)
                            for k, v in fields.items()}}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def _command(*cmd: str) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """device, driver, cuda (torch's and nvcc's), torch; what cannot be read is None."""
    info: dict[str, Any] = {"device": None, "driver": None, "cuda": None, "nvcc": None, "torch": None}
    smi = _command("nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader")
    if smi:
        parts = [p.strip() for p in smi.splitlines()[0].split(",")]
        info.update(device=parts[0], driver=parts[1], gpu_memory=parts[2], compute_capability=parts[3])
    nvcc = _command("nvcc", "--version")
    if nvcc:
        m = re.search(r"release ([\d.]+)", nvcc)
        info["nvcc"] = m.group(1) if m else nvcc.splitlines()[-1]
    try:
        import torch
        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available() and not info["device"]:
            info["device"] = torch.cuda.get_device_name()
    except Exception as e:  # the summary must be written whatever broke
        info["torch_error"] = f"{type(e).__name__}: {e}"
    return info


def read_steps(path: Path) -> list[dict[str, Any]]:
    steps = []
    if path.is_file():
        for line in path.read_text().splitlines():
            name, status, seconds, rc, note = (line.split("\t") + [""])[:5]
            steps.append({"name": name, "status": status, "seconds": float(seconds), "rc": int(rc),
                          **({"note": note} if note else {})})
    return steps


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    rows.append({"name": "unreadable parity line", "error": line[:200]})
    return rows


def parity_passed(row: dict[str, Any]) -> bool:
    if "passed" in row:
        return bool(row["passed"])
    if "exact" in row:
        return bool(row["exact"])
    return isinstance(row.get("psnr_db"), (int, float)) and row["psnr_db"] >= row.get("floor_db", float("inf"))


def read_benchmarks(out_dir: Path) -> dict[str, list]:
    """kernels.json and kernels_chunk.json (one benchmark process per BucketAttention variant), joined."""
    joined: dict[str, list] = {"parity": [], "speed": [], "memory": [], "targets": [], "rows": [], "config": []}
    for name in ("kernels.json", "kernels_chunk.json"):
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            bench = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            joined["parity"].append({"name": f"{name} unreadable", "passed": False, "note": str(e)})
            continue
        for key in ("parity", "speed", "memory", "targets", "rows"):  # "run": which process measured it
            joined[key] += [{**row, "run": name} for row in bench.get(key, [])]
        joined["config"].append({"file": name, **(bench.get("config") or {}),
                                 "variants": (bench.get("environment") or {}).get("variants")})
    return joined


def collect(out_dir: Path) -> dict[str, Any]:
    bench = read_benchmarks(out_dir)
    parity = read_jsonl(out_dir / "parity.jsonl") + bench["parity"]
    summary = {**environment(), "steps": read_steps(out_dir / "steps.tsv"), "parity": parity,
               "speed": bench["speed"], "memory": bench["memory"], "targets": bench["targets"],
               "benchmark_config": bench["config"], "measurements": bench["rows"]}
    summary["parity_failed"] = [r["name"] for r in parity if not parity_passed(r)]
    return summary


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def markdown(s: dict[str, Any]) -> str:
    parity = [{**r, "result": ("exact" if r.get("exact") else "") + ("" if parity_passed(r) else " FAILED")}
              for r in s["parity"]]
    parts = [f"# GPU check: {s.get('device')}",
             f"driver {s.get('driver')}, CUDA {s.get('cuda')} (nvcc {s.get('nvcc')}), torch {s.get('torch')}",
             "## Steps", _table(s["steps"], [("name", "step"), ("status", "status"), ("seconds", "s"), ("note", "note")]),
             f"## Parity ({len(s['parity'])} rows, {len(s['parity_failed'])} failed)",
             _table(parity, [("name", "case"), ("psnr_db", "PSNR dB"), ("floor_db", "floor"), ("max_abs", "max |diff|"),
                             ("flipped", "flipped"), ("forced_psnr_db", "forced dB"), ("note", "note"),
                             ("result", "result")]),
             "## Speed (CUDA-event medians; ratio = baseline / this)",
             _table(s["speed"], [("name", "path"), ("median_ms", "ms"), ("baseline", "baseline"),
                                 ("baseline_median_ms", "baseline ms"), ("ratio", "speed-up"), ("us_per_pixel", "µs/px"),
                                 ("note", "note")]),
             "## Peak memory (max_memory_allocated above the inputs; ratio = baseline / this)",
             _table(s["memory"], [("name", "path"), ("peak_mib", "MiB"), ("baseline", "baseline"),
                                  ("baseline_peak_mib", "baseline MiB"), ("ratio", "reduction")])]
    if s.get("measurements"):
        parts += ["## Every measurement (benchmarks.kernels)",
                  _table(s["measurements"], [("name", "path"), ("median_ms", "median ms"), ("peak_mib", "peak MiB"),
                                             ("us_per_pixel", "µs/px"), ("note", "note")])]
    if s.get("targets"):
        parts += ["## Targets (issue 10)", _table(s["targets"], [("name", "target"), ("wanted", "wanted"),
                                                                 ("measured", "measured"), ("met", "met")])]
    return "\n\n".join(parts) + "\n"


def gpu_file_stem(device: str) -> str:
    """'NVIDIA H200' -> 'NVIDIA-H200' (spaces as dashes, nothing a file name cannot hold)."""
    return re.sub(r"[^A-Za-z0-9._-]", "", re.sub(r"\s+", "-", device.strip())) or "unknown-gpu"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_summary", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="write OUT_DIR/summary.json and summary.md from the check's files")
    c.add_argument("out_dir", type=Path)
    pub = sub.add_parser("publish", help="copy OUT_DIR/summary.* to benchmarks/results/gpu/<gpu-name>.json/.md")
    pub.add_argument("out_dir", type=Path)
    pub.add_argument("--dest", type=Path, default=RESULTS_DIR, help="folder (default %(default)s)")
    pub.add_argument("--overwrite", action="store_true", help="replace existing result files")
    args = p.parse_args(argv)
    try:
        with one_line_errors():
            if not args.out_dir.is_dir():
                raise fail(f"{args.out_dir} is not a folder; pass the OUT_DIR of scripts/gpu_check.sh")
            return collect_files(args.out_dir) if args.command == "collect" else publish_summary(args)
    except UsageExit as e:  # its one line is on stderr already
        return e.code


def collect_files(out_dir: Path) -> int:
    """``collect``: OUT_DIR/summary.json and summary.md."""
    summary = collect(out_dir)
    write_json(out_dir / "summary.json", summary)
    atomic_write(out_dir / "summary.md", markdown(summary))
    print(markdown(summary))
    return 0


def publish_summary(args) -> int:
    """``publish``: the collected summary under the GPU's name in ``--dest``; UsageExit when it cannot."""
    src = args.out_dir / "summary.json"
    try:
        summary = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise fail(f"cannot read {src} ({e}); run `python -m benchmarks.gpu_summary collect {args.out_dir}` first")
    if not summary.get("device"):
        raise fail(f"{src} names no device; it was not written on a GPU machine")
    stem = gpu_file_stem(summary["device"])
    dest_json, dest_md = args.dest / f"{stem}.json", args.dest / f"{stem}.md"
    check_outputs([dest_json, dest_md], args.overwrite, instead="another --dest")
    write_json(dest_json, summary)
    atomic_write(dest_md, markdown(summary))
    print(f"wrote {dest_json} and {dest_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
