"""Parity of every deployed path against the PyTorch reference (DESIGN.md §5).

    python -m benchmarks.parity                                   # bundled weights (EDSR: small random)
    python -m benchmarks.parity --models csnln --scales 2 --modes onnx --precisions fp32 --backends onnxruntime-cpu
    python -m benchmarks.parity --models nlsn --scales 4 --weights 'w/{model}_x{scale}.pt'
    python -m benchmarks.parity --random-weights --config released --models nlsn --scales 2

For each model × scale × export mode × precision, one dynamic ONNX file is exported; for each input
size (an LR crop of a real image), the PyTorch fp32 reference and every backend run it through the
backends runtime.infer uses (runtime.backends: TorchBackend, OrtBackend, and TrtBackend on an engine
that python -m runtime.build makes, sidecar included, one per file with a profile spanning the
sizes). Per row: PSNR (peak 1), max and mean absolute difference. Floors: fp32 ≥ 100 dB, fp16 ≥ 45
dB; the exit status is 1 when a row misses its floor or fails. Backends that are not installed
appear as rows saying so. Writes parity.json and parity.md to --out-dir.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from benchmarks import common
from export.ort import custom_ops_available
from models.errors import UsageError
from models.files import atomic_write
from runtime.backends import Backend, TorchBackend, onnx_metadata
from runtime.metrics import psnr

FLOORS = {"fp32": 100.0, "fp16": 45.0}
# An LSH argmax decided by less than this relative gap can flip between backends (fp32 rounding of
# the convolutions before it differs at ~1e-7); rows below their floor say so.
NEAR_TIE = 1e-5
BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")
DEFAULT_SIZES = "24x24,25x31,40x36"


@dataclasses.dataclass
class ParityConfig(common.Sweep):
    """What ``run`` compares (the command line's flags, as an API)."""
    sizes: Sequence[tuple[int, int]] = tuple(common.csv(common.size)(DEFAULT_SIZES))
    precisions: Sequence[str] = tuple(FLOORS)
    backends: Sequence[str] = BACKENDS
    torch_device: str = "cpu"  # device of the PyTorch reference

    def check(self) -> None:
        """Unknown names and an unusable --torch-device: one-line errors before any work."""
        common.check_choices(("--backends", self.backends, BACKENDS), ("--precisions", self.precisions, FLOORS))
        super().check()
        if self.torch_device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--torch-device cuda but torch sees no CUDA device; use --torch-device cpu")


def unavailable(backend: str, meta: dict[str, Any]) -> str | None:
    """Why this machine cannot run ``backend`` on a file with this metadata (None: it can)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "onnxruntime-cuda":
        from export.ort import cuda_available
        if not cuda_available():
            return "not available (no onnxruntime CUDA provider: install onnxruntime-gpu)"
    if backend.startswith("onnxruntime") and meta["ops"] == "plugin" and not custom_ops_available():
        return "not available (custom ops need onnxruntime-extensions)"
    if backend == "tensorrt":
        from runtime import trt as rtrt
        reason = rtrt.unavailable_reason()
        if reason:
            return f"not available ({reason})"
        if meta["ops"] == "plugin" and rtrt.find_plugin_library(required=False) is None:
            return "not available (no srdeploy TensorRT plugin library: python -m plugins.build --tensorrt-root DIR)"
    return None


def engine_for(path: Path, sizes: Sequence[tuple[int, int]]) -> Path:
    """A TensorRT engine of the ONNX file ``path`` beside it, built by runtime.build (the product's own
    build, sidecar included) with one profile that spans every input size."""
    from runtime import build as rb

    def shape(h: int, w: int) -> str:
        return f"input:1x3x{h}x{w}"
    lo = shape(min(h for h, _ in sizes), min(w for _, w in sizes))
    hi = shape(max(h for h, _ in sizes), max(w for _, w in sizes))
    engine = path.with_suffix(".engine")
    rb.build(rb.make_plan(path, engine, min_shapes=lo, opt_shapes=hi, max_shapes=hi, force=True))
    return engine


def backend_for(backend: str, path: Path, sizes: Sequence[tuple[int, int]]) -> Backend:
    """The runtime backend that runs ``path`` on ``backend`` (a BACKENDS name), opened as runtime.infer opens it."""
    from runtime.backends import OrtBackend, TrtBackend
    if backend.startswith("onnxruntime"):
        return OrtBackend.open(path, device="cuda" if backend.endswith("cuda") else "cpu")
    return TrtBackend.open(engine_for(path, sizes), device="cuda")


class Opened:
    """Each (backend, file) opened once, on first use, and reused for every size; a failure to open
    is kept and raised again for each of its rows."""

    def __init__(self, sizes: Sequence[tuple[int, int]]):
        self.sizes, self._done = sizes, {}

    def __call__(self, backend: str, path: Path) -> Backend:
        key = (backend, path)
        if key not in self._done:
            try:
                self._done[key] = backend_for(backend, path, self.sizes)
            except Exception as e:  # noqa: BLE001 - reported in each row of this backend and file
                self._done[key] = e
        found = self._done[key]
        if isinstance(found, Exception):
            raise found
        return found


def compare(reference: torch.Tensor, got: torch.Tensor) -> dict[str, float]:
    """Both in [0, 1] (what every backend returns)."""
    ref, out = reference.double().numpy(), got.double().numpy()
    diff = np.abs(ref - out)
    return {"psnr_db": psnr(ref, out, peak=1.0), "max_abs": float(diff.max()), "mean_abs": float(diff.mean())}


def run(config: ParityConfig, work: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every row of the comparison, and what was exported; ``work``: where exports go (default:
    ``config.work_dir``, else a temporary folder removed at the end)."""
    if work is None:
        with common.work_dir(config.work_dir, "srdeploy-parity-") as work:
            return run(config, work)
    rows, exports = [], []
    for name in config.models:
        for scale in config.scales:
            weights = common.weights_for(name, scale, config.weights, config.random_weights)
            model = common.build_model(name, scale, config.model_config, config.options, weights)
            sizes = [model.valid_size(h, w) for h, w in config.sizes]
            files = []
            for mode in config.modes:
                for precision in config.precisions:
                    path, info = common.export_dynamic(model, mode, precision, work, weights)
                    exports.append({"model": name, "scale": scale, "mode": mode, "precision": precision, **info})
                    meta = onnx_metadata(path)
                    files.append((mode, precision, path, meta))
                    for backend in config.backends:  # one row per file for a backend that cannot run here
                        reason = unavailable(backend, meta)
                        if reason:
                            rows.append({"model": name, "scale": scale, "mode": mode, "precision": precision,
                                         "size": "all", "backend": backend, "floor_db": FLOORS[precision],
                                         "status": reason})
            reference = TorchBackend(model, config.torch_device)  # fp32; on CUDA with the srdeploy kernels
            opened = Opened(sizes)
            for i, (h, w) in enumerate(sizes):
                x, source = common.real_lr(h, w, scale, i)
                ref_out = reference(x)
                margin = common.lsh_min_margin(model, (x * model.rgb_range).to(reference.device))
                for mode, precision, path, meta in files:
                    for backend in config.backends:
                        if unavailable(backend, meta):
                            continue
                        row = {"model": name, "scale": scale, "mode": mode, "precision": precision,
                               "size": f"{h}x{w}", "input": source, "backend": backend, "floor_db": FLOORS[precision]}
                        try:
                            row.update(compare(ref_out, opened(backend, path)(x)))
                            row["status"] = "ok" if row["psnr_db"] >= row["floor_db"] else "BELOW FLOOR"
                            if margin is not None:
                                row["lsh_margin"] = margin
                                if row["status"] != "ok" and margin < NEAR_TIE:
                                    row["status"] += f" (LSH near-tie, margin {margin:.1e}: a bucket flip)"
                            if precision == "fp16" and backend == "onnxruntime-cpu":
                                row["note"] = "CPU: ops without fp16 kernels run in fp32"
                        except Exception as e:  # a backend that fails is a result, not a crash
                            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                        rows.append(row)
                        print(_line(row), flush=True)
            model.to("cpu")
    return rows, {"exports": exports, "work_dir": str(config.work_dir) if config.work_dir else "temporary (removed)"}


def _line(row: dict[str, Any]) -> str:
    metrics = (f"{row['psnr_db']:.1f} dB, max {row['max_abs']:.2e}" if "psnr_db" in row else "")
    return (f"{row['model']} x{row['scale']} {row['mode']:6} {row['precision']} {row['size']:>7} "
            f"{row['backend']:17} {metrics} {row['status']}")


def failed(row: dict[str, Any]) -> bool:
    return row["status"].startswith(("BELOW FLOOR", "error"))


COLUMNS = [("model", "model"), ("scale", "scale"), ("mode", "ops"), ("precision", "precision"), ("size", "LR size"),
           ("backend", "backend"), ("psnr_db", "PSNR dB"), ("max_abs", "max |diff|"), ("mean_abs", "mean |diff|"),
           ("floor_db", "floor"), ("lsh_margin", "LSH margin"), ("status", "status")]


def build_parser() -> argparse.ArgumentParser:
    from models.cli import HelpFormatter
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity", description=__doc__.split("\n\n")[2],
                                epilog="examples:\n" + __doc__.split("\n\n")[1], formatter_class=HelpFormatter)
    common.add_model_arguments(p, default_sizes=DEFAULT_SIZES)
    p.add_argument("--precisions", type=common.csv(str), default=list(FLOORS), metavar="{fp32,fp16}[,...]",
                   help="export precisions (floors: fp32 100 dB, fp16 45 dB)")
    p.add_argument("--backends", type=common.csv(str), default=list(BACKENDS), metavar=f"{{{','.join(BACKENDS)}}}[,...]",
                   help="backends compared with the PyTorch reference; those not installed get a row saying so")
    p.add_argument("--torch-device", default="cpu", metavar="{cpu,cuda}", help="device of the PyTorch reference")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = ParityConfig.from_args(args)
    out_json, out_md = args.out_dir / "parity.json", args.out_dir / "parity.md"
    if (code := common.prepare_sweep(config, [out_json, out_md], args.overwrite, "python -m benchmarks.parity")) is not None:
        return code
    start = time.perf_counter()
    rows, extra = common.run_sweep(run, config, "python -m benchmarks.parity", "parity")
    bad = [r for r in rows if failed(r)]
    result = {"benchmark": "parity", "argv": sys.argv[1:] if argv is None else list(argv),
              "environment": common.environment(), "config": config.model_config, "floors_db": FLOORS,
              "seconds": round(time.perf_counter() - start, 1), "passed": not bad, "rows": rows, **extra}
    text = common.table(rows, COLUMNS)
    exports = common.table(extra["exports"], [("model", "model"), ("scale", "scale"), ("mode", "ops"),
                                              ("precision", "precision"), ("export_s", "export s"),
                                              ("file_kib", "KiB")])
    common.write_json(out_json, result)
    atomic_write(out_md, f"# Parity ({config.model_config} configs)\n\n{text}\n\n## Exports\n\n{exports}\n")
    print("\n" + text)
    print(f"\n{len(rows)} rows, {len(bad)} below floor or failed; wrote {out_json} and {out_md}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
