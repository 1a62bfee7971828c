"""Parity of every deployed path against the PyTorch reference (DESIGN.md §5).

    python -m benchmarks.parity                                   # bundled weights (EDSR: small random)
    python -m benchmarks.parity --models csnln --scales 2 --modes onnx --precisions fp32 --backends onnxruntime-cpu
    python -m benchmarks.parity --models nlsn --scales 4 --weights 'w/{model}_x{scale}.pt'
    python -m benchmarks.parity --random-weights --config released --models nlsn --scales 2

For each model × scale × export mode × precision, one dynamic ONNX file is exported; for each input
size (an LR crop of a real image), the PyTorch fp32 reference and every backend run through
polygraphy's Comparator (a custom runner wraps the PyTorch model; onnxruntime and TensorRT use
polygraphy's runners). Per row: PSNR (peak 1), max and mean absolute difference. Floors: fp32 ≥ 100
dB, fp16 ≥ 45 dB; the exit status is 1 when a row misses its floor or fails. Backends that are not
installed appear as rows saying so. Writes parity.json and parity.md to --out-dir.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator
from polygraphy.datatype import DataType
from polygraphy.logger import G_LOGGER

from benchmarks import common
from export.ort import custom_ops_available, make_session
from runtime import ort as rt

FLOORS = {"fp32": 100.0, "fp16": 45.0}
# An LSH argmax decided by less than this relative gap can flip between backends (fp32 rounding of
# the convolutions before it differs at ~1e-7); rows below their floor say so.
NEAR_TIE = 1e-5
BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


class TorchRunner(BaseRunner):
    """The PyTorch reference as a polygraphy runner (fp32; input and output named like the ONNX file)."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu", name: str = "torch-fp32"):
        super().__init__(name=name, prefix="torch-runner")
        self.model, self.device = model, device

    def activate_impl(self):
        self.model.to(self.device)

    def get_input_metadata_impl(self):
        return TensorMetadata().add("input", DataType.FLOAT32, (-1, 3, -1, -1))

    def infer_impl(self, feed_dict):
        x = torch.from_numpy(feed_dict["input"]).to(self.device)
        start = time.perf_counter()
        with torch.no_grad():
            y = self.model(x)
        if self.device != "cpu":
            torch.cuda.synchronize()
        self.inference_time = time.perf_counter() - start
        return OrderedDict(output=y.float().cpu().numpy())

    def deactivate_impl(self):
        self.model.to("cpu")


def unavailable(backend: str, meta: dict[str, Any]) -> str | None:
    """Why this machine cannot run ``backend`` on a file with this metadata (None: it can)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "onnxruntime-cuda":
        import onnxruntime
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
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


def make_runner(backend: str, path: Path, meta: dict[str, Any], shape: tuple[int, ...]):
    if backend.startswith("onnxruntime"):
        device = "cuda" if backend.endswith("cuda") else "cpu"
        return OnnxrtRunner(lambda: make_session(path, device), name=backend)
    return trt_runner(path, meta, shape)


def trt_runner(path: Path, meta: dict[str, Any], shape: tuple[int, ...]):
    """TensorRT through polygraphy (strongly typed network, one profile at this shape). Not run yet:
    no machine here has TensorRT; the plugin library comes from $SRDEPLOY_TRT_PLUGINS or plugins/build."""
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxBytes, Profile, TrtRunner

    from runtime import build as rb
    from runtime import trt as rtrt
    if meta["ops"] == "plugin":  # registers the IPluginV3 creators with TensorRT's plugin registry
        rtrt.load_plugin_library(rtrt.find_plugin_library())
    # the parser finds plugins by plugin_namespace/plugin_version, which runtime.build adds
    network = NetworkFromOnnxBytes(rb.onnx_bytes_for_tensorrt(path), strongly_typed=True)
    profile = Profile().add("input", min=shape, opt=shape, max=shape)
    return TrtRunner(EngineFromNetwork(network, CreateConfig(profiles=[profile])), name="tensorrt")


def compare(reference: np.ndarray, got: np.ndarray, rgb_range: float) -> dict[str, float]:
    ref, out = reference.astype(np.float64) / rgb_range, got.astype(np.float64) / rgb_range
    diff = np.abs(ref - out)
    return {"psnr_db": common.psnr(ref, out), "max_abs": float(diff.max()), "mean_abs": float(diff.mean())}


def run(args, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    G_LOGGER.module_severity = G_LOGGER.ERROR
    rows, exports = [], []
    for name in args.models:
        for scale in args.scales:
            weights = common.weights_for(name, scale, args.weights, args.random_weights)
            model = common.build_model(name, scale, args.config, args.options, weights)
            rgb = model.rgb_range
            files = []
            for mode in args.modes:
                for precision in args.precisions:
                    path, info = common.export_dynamic(model, mode, precision, work, weights)
                    exports.append({"model": name, "scale": scale, "mode": mode, "precision": precision, **info})
                    meta = rt.onnx_metadata(path)
                    files.append((mode, precision, path, meta))
                    for backend in args.backends:  # one row per file for a backend that cannot run here
                        reason = unavailable(backend, meta)
                        if reason:
                            rows.append({"model": name, "scale": scale, "mode": mode, "precision": precision,
                                         "size": "all", "backend": backend, "floor_db": FLOORS[precision],
                                         "status": reason})
            for i, (h, w) in enumerate(args.sizes):
                h, w = model.valid_size(h, w)
                x, source = common.real_lr(h, w, scale, i)
                feed = [OrderedDict(input=(x * rgb).numpy())]
                reference = Comparator.run([TorchRunner(model, args.torch_device)], data_loader=feed)
                ref_out = reference[0][1][0]["output"]
                margin = common.lsh_min_margin(model, x * rgb)
                for mode, precision, path, meta in files:
                    for backend in args.backends:
                        if unavailable(backend, meta):
                            continue
                        row = {"model": name, "scale": scale, "mode": mode, "precision": precision,
                               "size": f"{h}x{w}", "input": source, "backend": backend, "floor_db": FLOORS[precision]}
                        try:
                            results = Comparator.run([make_runner(backend, path, meta, tuple(x.shape))],
                                                     data_loader=feed)
                            got = results[0][1][0]["output"]
                            row.update(compare(ref_out, got, rgb))
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
    return rows, {"exports": exports, "work_dir": str(args.work_dir) if args.work_dir else "temporary (removed)"}


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
    common.add_model_arguments(p, default_sizes="24x24,25x31,40x36")
    p.add_argument("--precisions", type=common.csv(str), default=["fp32", "fp16"], metavar="{fp32,fp16}[,...]",
                   help="export precisions (floors: fp32 100 dB, fp16 45 dB)")
    p.add_argument("--backends", type=common.csv(str), default=list(BACKENDS), metavar=f"{{{','.join(BACKENDS)}}}[,...]",
                   help="backends compared with the PyTorch reference; those not installed get a row saying so")
    p.add_argument("--torch-device", default="cpu", metavar="{cpu,cuda}", help="device of the PyTorch reference")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from export.onnx import quiet_torch_exporter
    quiet_torch_exporter()
    for flag, values, allowed in [("--backends", args.backends, BACKENDS), ("--precisions", args.precisions, FLOORS),
                                  ("--modes", args.modes, common.MODES), ("--models", args.models, common.MODELS)]:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            print(f"error: {flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}", file=sys.stderr)
            return 2
    out_json, out_md = args.out_dir / "parity.json", args.out_dir / "parity.md"
    common.check_outputs([out_json, out_md], args.overwrite, args.work_dir, "python -m benchmarks.parity")
    start = time.perf_counter()
    with common.work_dir(args.work_dir, "srdeploy-parity-") as work:
        rows, extra = run(args, work)
    bad = [r for r in rows if failed(r)]
    result = {"benchmark": "parity", "argv": sys.argv[1:] if argv is None else list(argv),
              "environment": common.environment(), "config": args.config, "floors_db": FLOORS,
              "seconds": round(time.perf_counter() - start, 1), "passed": not bad, "rows": rows, **extra}
    text = common.table(rows, COLUMNS)
    exports = common.table(extra["exports"], [("model", "model"), ("scale", "scale"), ("mode", "ops"),
                                              ("precision", "precision"), ("export_s", "export s"),
                                              ("file_kib", "KiB")])
    common.write_json(out_json, result)
    common.write_atomic(out_md, f"# Parity ({args.config} configs)\n\n{text}\n\n## Exports\n\n{exports}\n")
    print("\n" + text)
    print(f"\n{len(rows)} rows, {len(bad)} below floor or failed; wrote {out_json} and {out_md}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
