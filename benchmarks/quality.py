"""Benchmark quality: PSNR / SSIM on Y of the standard SR test sets.

    python -m benchmarks.quality --model bicubic --scale 2 3 4 --sets Set5 Set14 B100
    python -m benchmarks.quality --model nlsn --scale 4 --weights nlsn_x{scale}.pt --json q.json
    python -m benchmarks.quality --model csnln --scale 2 3 4 --tile 64   # bundled weights

Protocol (the one SR papers use, so published tables are comparable):
- HR is cropped to a multiple of the scale (top-left kept);
- LR = MATLAB ``imresize(HR, 1/scale, 'bicubic')`` on uint8 RGB;
- SR is quantised to uint8 (round, clip) before measuring;
- PSNR and SSIM on Y of MATLAB ``rgb2ycbcr``, ``scale`` pixels cropped per side.

Grayscale HR images (Set14 ``bridge``) stay single-channel and their gray
values are the luminance, as in the MATLAB evaluation behind the published
bicubic rows (mapping them through rgb2ycbcr would raise Set14 by ~0.09 dB).
A network gets such an image replicated to RGB and its output is averaged
back to one channel.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from models.errors import SrdeployError
from models.files import atomic_write
from runtime.metrics import psnr_y, ssim_y
from runtime.resize import bicubic_downscale_uint8, imresize_uint8

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SETS = ("Set5", "Set14", "B100", "Urban100")
MODELS = ("bicubic", "nlsn", "csnln", "edsr")
MODEL_SCALES = (2, 3, 4)  # scales the networks are defined for

# Published bicubic baseline, PSNR / SSIM on Y (SRCNN, VDSR, EDSR, RCAN tables).
PUBLISHED_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
    ("B100", 2): (29.56, 0.8431), ("B100", 3): (27.21, 0.7385), ("B100", 4): (25.96, 0.6675),
    ("Urban100", 2): (26.88, 0.8403), ("Urban100", 3): (24.46, 0.7349), ("Urban100", 4): (23.14, 0.6577),
}
# Image counts of the full sets: published rows are compared only when all
# of a set was measured (shared/ holds 10 of the 100 Urban100 images).
FULL_SET_SIZES = {"Set5": 5, "Set14": 14, "B100": 100, "Urban100": 100}

# An SR function maps an LR uint8 image (HxW or HxWx3) to its uint8 SR image
# of the same layout and scale times the size.
SRFn = Callable[[np.ndarray], np.ndarray]


def default_data_dir() -> Path:
    shared = Path(os.environ.get("SRDEPLOY_SHARED", REPO.parent / "shared"))
    return shared / "data" / "benchmark"


# ----------------------------------------------------------------- data

def load_hr(path: Path) -> np.ndarray:
    """HR image as uint8: HxW for grayscale files, HxWx3 otherwise."""
    with Image.open(path) as im:
        if im.mode in ("L", "I;16", "I", "F"):
            im = im.convert("L")
        elif im.mode != "RGB":
            im = im.convert("RGB")  # palette / alpha: drop to plain RGB
        return np.asarray(im, dtype=np.uint8).copy()


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom/right so height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def find_images(data_dir: Path, set_name: str) -> list[Path]:
    """The HR PNGs of one set, sorted by name; SystemExit naming the fix if absent."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SystemExit(
            f"benchmark data not found at {data_dir}: pass --data-dir pointing at the folder "
            f"that holds <Set>/HR/*.png, or set SRDEPLOY_SHARED to the shared/ folder")
    hr_dir = data_dir / set_name / "HR"
    files = sorted(hr_dir.glob("*.png")) if hr_dir.is_dir() else []
    if not files:
        available = sorted(p.parent.name for p in data_dir.glob("*/HR") if any(p.glob("*.png")))
        raise SystemExit(
            f"unknown or empty set {set_name!r}: no {hr_dir}/*.png; "
            f"available under {data_dir}: {', '.join(available) or 'none'}")
    return files


# ----------------------------------------------------------------- SR functions

def bicubic_sr_fn(scale: int) -> SRFn:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` on uint8: the bicubic baseline."""
    return lambda lr: imresize_uint8(lr, scale)


def make_model_upscaler(args: argparse.Namespace, scale: int, weights: str) -> Callable[[np.ndarray], np.ndarray]:
    """float32 HxWx3 [0, 1] -> float HxWx3 [0, 1] through the same path as ``runtime.infer``."""
    from runtime.pipeline import load_upscaler, upscale

    backend = load_upscaler(args.model, scale=scale, weights=weights, device=args.device or "cpu")
    pad = {} if getattr(args, "tile_pad", None) is None else {"tile_pad": args.tile_pad}
    return lambda img: upscale(img, backend, tile=args.tile or 0, **pad, self_ensemble=args.self_ensemble,
                               official_chop=args.official_chop)


def _bundled(model: str, scale: int) -> str:
    """The bundled weights of (model, scale), named on stderr so the table says what it measured."""
    from runtime.backends import default_entry

    entry = default_entry(model, scale)
    print(f"note: no --weights: using the {entry.describe()}", file=sys.stderr)
    return str(entry.path)


def _quantise(x: np.ndarray) -> np.ndarray:
    # round half up on clipped data, as uint8 image writers do
    return np.floor(np.clip(x, 0, 255) + 0.5).astype(np.uint8)


def model_sr_fn(upscale: Callable[[np.ndarray], np.ndarray]) -> SRFn:
    """Wrap a float [0, 1] RGB upscaler into the uint8 SRFn contract."""
    def sr(lr: np.ndarray) -> np.ndarray:
        gray = lr.ndim == 2
        rgb = np.repeat(lr[..., None], 3, axis=2) if gray else lr
        out = np.asarray(upscale(rgb.astype(np.float32) / 255.0), dtype=np.float64) * 255.0
        if gray:
            out = out.mean(axis=2)  # back to the image's single luminance channel
        return _quantise(out)
    return sr


# ----------------------------------------------------------------- evaluation

def evaluate_image(hr: np.ndarray, scale: int, sr_fn: SRFn) -> tuple[float, float]:
    """(PSNR, SSIM) on Y of one HR image under the benchmark protocol."""
    hr = modcrop(hr, scale)
    lr = bicubic_downscale_uint8(hr, scale)
    sr = sr_fn(lr)
    if sr.shape != hr.shape:
        raise RuntimeError(f"SR output shape {sr.shape} != HR shape {hr.shape} (x{scale})")
    return psnr_y(sr, hr, border=scale), ssim_y(sr, hr, border=scale)


def evaluate_set(files: list[Path], scale: int, sr_fn: SRFn, desc: str = "",
                 progress: bool = True) -> dict:
    """Mean PSNR / SSIM over images (the mean of per-image values, as papers average)."""
    per_image = []
    t0 = time.perf_counter()
    for path in tqdm(files, desc=desc, unit="img", leave=False, disable=not progress):
        p, s = evaluate_image(load_hr(path), scale, sr_fn)
        per_image.append({"name": path.stem, "psnr": p, "ssim": s})
    return {
        "psnr": float(np.mean([r["psnr"] for r in per_image])),
        "ssim": float(np.mean([r["ssim"] for r in per_image])),
        "n_images": len(per_image),
        "seconds": time.perf_counter() - t0,
        "per_image": per_image,
    }


# ----------------------------------------------------------------- CLI

def _scale_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be an integer such as 2, 3 or 4, got {text!r}")
    if value < 2:
        raise argparse.ArgumentTypeError(f"scale must be >= 2, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from models.cli import HelpFormatter
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="PSNR/SSIM on Y of the SR benchmark sets (MATLAB bicubic LR, border = scale).",
        epilog="examples:\n" + __doc__.split("\n\n")[1], formatter_class=HelpFormatter)
    p.add_argument("--model", choices=MODELS, default="bicubic",
                   help="what upscales: MATLAB bicubic (the baseline) or a network (its bundled compact weights "
                        "unless --weights)")
    p.add_argument("--scale", type=_scale_arg, nargs="+", default=[2, 3, 4], metavar="N",
                   help="one or more scales: 2, 3, 4 for networks, any integer ≥ 2 for bicubic")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), metavar="SET",
                   help="set folders under --data-dir")
    p.add_argument("--weights", metavar="PATH", help="checkpoint for network models; may contain {scale}, "
                                     "which is required when several scales are given "
                                     "(default: the bundled compact model of --model, models/weights)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="folder holding <Set>/HR/*.png (default: ../shared/data/benchmark "
                        "next to the repository, or $SRDEPLOY_SHARED/data/benchmark)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write results here (atomic; folders created)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="network models: where to run (default: cpu)")
    p.add_argument("--tile", type=int, default=None, metavar="N", help="network models: LR tile size (default: whole image)")
    p.add_argument("--tile-pad", type=int, default=None, metavar="N",
                   help="network models: LR context around each tile (default: that of runtime.infer, 32)")
    p.add_argument("--self-ensemble", action="store_true", help="network models: x8 self-ensemble")
    p.add_argument("--official-chop", action="store_true",
                   help="network models: the official code's recursive chop instead of tiling")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images of each set "
                                                                       "(default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.model == "bicubic":
        ignored = [flag for flag, on in (("--weights", args.weights), ("--device", args.device),
                                         ("--tile", args.tile), ("--self-ensemble", args.self_ensemble),
                                         ("--official-chop", args.official_chop)) if on]
        if ignored:
            print(f"note: {', '.join(ignored)} apply to network models; ignored for bicubic",
                  file=sys.stderr)
    else:
        bad = [s for s in args.scale if s not in MODEL_SCALES]
        if bad:
            p.error(f"--model {args.model} supports scales {MODEL_SCALES}, got {bad}")
        if not args.weights:
            from runtime.backends import default_weights

            missing = [s for s in args.scale if default_weights(args.model, s) is None]
            if missing:
                p.error(f"--model {args.model} needs --weights PATH (a trained checkpoint; "
                        f"use {{scale}} in the path for several scales): no bundled {args.model} weights "
                        f"for x{', x'.join(map(str, missing))}")
        elif len(set(args.scale)) > 1 and "{scale}" not in args.weights:
            p.error("several scales need one checkpoint each: put {scale} in --weights, "
                    "e.g. --weights nlsn_x{scale}.pt")
    if args.tile is not None and args.tile <= 0:
        p.error(f"--tile must be positive, got {args.tile}")
    if args.limit is not None and args.limit <= 0:
        p.error(f"--limit must be positive, got {args.limit}")
    if args.json:
        from benchmarks.common import check_outputs
        check_outputs([args.json], args.overwrite, prog=p.prog, instead="another --json path")


def format_table(rows: list[dict], show_published: bool) -> str:
    head = f"{'set':<10} {'scale':>5} {'n':>4} {'PSNR':>8} {'SSIM':>7}"
    if show_published:
        head += f" {'published':>14} {'dPSNR':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['set']:<10} {'x' + str(r['scale']):>5} {r['n_images']:>4} {r['psnr']:>8.3f} {r['ssim']:>7.4f}"
        pub = r.get("published_bicubic")
        if show_published:
            line += (f" {pub['psnr']:>7.2f}/{pub['ssim']:.4f} {r['psnr'] - pub['psnr']:>+7.3f}"
                     if pub else f" {'-':>14} {'-':>7}")
        lines.append(line)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    set_files = {name: find_images(data_dir, name) for name in args.sets}  # fail before any work
    progress = not args.no_progress
    rows = []
    t_start = time.perf_counter()
    for scale in args.scale:
        if args.model == "bicubic":
            sr_fn, weights = bicubic_sr_fn(scale), None
        else:
            weights = args.weights.format(scale=scale) if args.weights else _bundled(args.model, scale)
            sr_fn = model_sr_fn(make_model_upscaler(args, scale, weights))
        for name, files in set_files.items():
            files = files[: args.limit] if args.limit else files
            r = evaluate_set(files, scale, sr_fn, desc=f"{name} x{scale}", progress=progress)
            row = {"set": name, "scale": scale, "weights": weights, **r}
            pub = PUBLISHED_BICUBIC.get((name, scale))
            if args.model == "bicubic" and pub and r["n_images"] == FULL_SET_SIZES[name]:
                row["published_bicubic"] = {"psnr": pub[0], "ssim": pub[1]}
            rows.append(row)
    return {
        "benchmark": "quality",
        "model": args.model,
        "scales": args.scale,
        "sets": args.sets,
        "options": {"device": args.device, "tile": args.tile, "tile_pad": getattr(args, "tile_pad", None), "self_ensemble": args.self_ensemble,
                    "official_chop": args.official_chop, "limit": args.limit},
        "protocol": {
            "lr": "MATLAB imresize(HR, 1/scale, 'bicubic') on uint8, HR modcropped to a multiple of scale",
            "sr": "uint8 (round, clip); bicubic = MATLAB imresize(LR, scale, 'bicubic') on uint8",
            "metric": "Y of MATLAB rgb2ycbcr (gray images as is), border = scale; "
                      "SSIM: Gaussian 11x11 sigma 1.5, K = (0.01, 0.03), L = 255, valid",
        },
        "data_dir": str(Path(data_dir).resolve()),
        "results": rows,
        "total_seconds": time.perf_counter() - t_start,
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "platform": platform.platform()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        report = run(args)
        print(format_table(report["results"], show_published=args.model == "bicubic"))
        print(f"total {report['total_seconds']:.1f} s")
        if args.json:  # refused if it appeared while the sets were evaluated
            atomic_write(args.json, json.dumps(report, indent=2) + "\n", overwrite=args.overwrite)
            print(f"wrote {args.json}")
    except SrdeployError as e:  # weights that do not load, a --json that appeared meanwhile
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
