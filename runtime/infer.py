"""``python -m runtime.infer``: upscale an image or a folder of images.

A thin layer over ``runtime.pipeline``: it checks everything it can before any image is
processed (inputs, output names, existing files, weights, device), then reads, upscales and
writes one image at a time. Expected problems end with a one-line ``error:`` message on
stderr and exit status 2, never a traceback; in folder mode a bad image is reported and the
rest are still processed (the exit status is 2 at the end).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import models

from . import memory
from .backends import BACKENDS, BackendError, open_backend
from .imageio import FORMATS, ImageReadError, OutputExistsError, is_supported, read_image, write_image
from .pipeline import DEFAULT_TILE_PAD, load_upscaler, upscale

PROG = "python -m runtime.infer"
EXIT_USAGE = 2  # bad arguments, inputs or weights (argparse uses 2 as well)
EXIT_RUNTIME = 1  # the run itself failed (e.g. out of device memory)


class UsageError(Exception):
    """Reported as one line on stderr, exit status 2."""


@dataclass
class Job:
    src: Path
    dst: Path


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _tile(text: str) -> int | str:
    return "auto" if text == "auto" else _non_negative(text)


def _size(text: str) -> int:
    try:
        return memory.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    exts = sorted({e.lstrip(".") for e in FORMATS})
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Upscale images with NLSN, CSNLN or EDSR (PNG, JPEG, BMP, WebP; gray, RGBA and 16-bit PNG).",
        epilog="examples:\n"
               f"  {PROG} -i photo.png -o photo_sr.png                  # bundled compact model\n"
               f"  {PROG} -i photo.png -o photo_x3.png --model csnln --scale 3\n"
               f"  {PROG} -i photo.png -o photo_x4.png --weights NLSN_x4.pt\n"
               f"  {PROG} -i lr/ -o sr/ --weights CSNLN_x2.pt --device cuda --tile 256\n"
               f"  {PROG} -i lr/ -o sr/ --weights EDSR_x2.pt --self-ensemble --official-chop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("-i", "--input", required=True, metavar="PATH", help="an image, or a folder of images")
    io.add_argument("-o", "--output", required=True, metavar="PATH",
                    help="an image file for a single input, or a folder (created if missing)")
    io.add_argument("--suffix", default=None,
                    help="added to each output file name in a folder (default: _x<scale>; '' for none)")
    io.add_argument("--ext", choices=exts, default=None,
                    help="output format in a folder (default: that of each input)")
    io.add_argument("--overwrite", action="store_true", help="replace existing output files")

    m = p.add_argument_group("model")
    m.add_argument("--weights", metavar="PATH",
                   help="checkpoint (official NLSN/CSNLN/EDSR state dict); default: the bundled compact model "
                        "of --model/--scale (NLSN and CSNLN, x2/x3/x4; see models/weights/manifest.json)")
    m.add_argument("--model", choices=sorted(models.ARCHITECTURES),
                   help="architecture (default: read from the checkpoint; must match it if given)")
    m.add_argument("--scale", type=int, choices=models.SCALES,
                   help="upscaling factor (default: read from the checkpoint; must match it if given)")
    m.add_argument("--backend", choices=list(BACKENDS), default="torch",
                   help="inference backend: torch (PyTorch reference), ort (onnxruntime), trt (TensorRT) "
                        "(default: torch)")
    m.add_argument("--onnx", metavar="PATH",
                   help="--backend ort: an ONNX file from python -m export.onnx (default: the weights, "
                        "exported on the fly with --ops onnx)")
    m.add_argument("--engine", metavar="PATH",
                   help="--backend trt: a TensorRT engine from python -m runtime.build (runs on the GPU; "
                        "tiles are sized to the engine's profile)")
    m.add_argument("--device", default="cpu", metavar="{cpu,cuda}", help="device (default: cpu)")

    r = p.add_argument_group("tiling and ensembling")
    r.add_argument("--tile", type=_tile, default="auto", metavar="{auto,N}",
                   help="tile size in LR pixels; auto: the whole image if it fits --max-memory, else the largest "
                        "tile that does (halved and retried on running out of memory); 0: the whole image at once "
                        "(default: auto)")
    r.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                   help=f"memory budget for --tile auto, e.g. 4G or 512M (default: {memory.RAM_SHARE * 100:.0f}%% of the "
                        f"available RAM; on CUDA {memory.GPU_SHARE * 100:.0f}%% of the free GPU memory)")
    r.add_argument("--tile-pad", type=_non_negative, default=DEFAULT_TILE_PAD, metavar="N",
                   help=f"LR pixels of context around each tile, also the width of the blend "
                        f"band (default: {DEFAULT_TILE_PAD})")
    r.add_argument("--self-ensemble", action="store_true",
                   help="x8 self-ensemble: average over flips and transposes (8x slower)")
    r.add_argument("--official-chop", action="store_true",
                   help="the official repositories' test-time forward_chop instead of --tile")
    return p


def _plan(args) -> tuple[list[Path], Path, bool]:
    """Inputs to process, the output path and whether it is a folder; checks what needs no model."""
    inp, out = Path(args.input), Path(args.output)
    if not inp.exists():
        raise UsageError(f"input {inp} not found")
    ext = f".{args.ext}" if args.ext else None
    if inp.is_dir():
        sources = sorted(p for p in inp.iterdir() if p.is_file() and is_supported(p) and not p.name.startswith("."))
        if not sources:
            raise UsageError(f"no images ({', '.join(FORMATS)}) in folder {inp}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"-i {inp} is a folder, so -o must be a folder, but {out} is a file")
        if not out.exists() and is_supported(out):
            raise UsageError(f"-i {inp} is a folder, so -o must be a folder, but {out} names an image file")
        return sources, out, True
    if not is_supported(inp):
        raise UsageError(f"input {inp}: unsupported image type {inp.suffix or '(none)'!r}; "
                         f"supported: {', '.join(FORMATS)}")
    to_folder = out.is_dir() or (not out.exists() and (out.suffix == "" or args.output.endswith(("/", os.sep))))
    if not to_folder:
        if not is_supported(out):
            raise UsageError(f"output {out}: unsupported image type {out.suffix!r}; supported: {', '.join(FORMATS)}")
        if ext and out.suffix.lower() != ext:
            raise UsageError(f"--ext {args.ext} contradicts the output file name {out}")
    return [inp], out, to_folder


def _jobs(sources: list[Path], out: Path, to_folder: bool, args, scale: int) -> list[Job]:
    if not to_folder:
        return [Job(sources[0], out)]
    suffix = f"_x{scale}" if args.suffix is None else args.suffix
    jobs = [Job(s, out / f"{s.stem}{suffix}{'.' + args.ext if args.ext else s.suffix}") for s in sources]
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.dst in seen:
            raise UsageError(f"{seen[job.dst]} and {job.src} would both be written to {job.dst}; "
                             f"use --ext only with inputs of distinct names")
        seen[job.dst] = job.src
    return jobs


def _check_existing(jobs: list[Job], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [j.dst for j in jobs if j.dst.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"output {existing[0]} exists{more}; pass --overwrite to replace it")


def _say_bundled(model: str | None, scale: int | None) -> None:
    """Name the bundled model that was picked, since the user did not name one."""
    from .backends import default_entry

    entry = default_entry(model, scale)
    if entry is not None:
        tqdm.write(f"{PROG}: using the {entry.describe()}; pass --weights for another checkpoint",
                   file=sys.stderr)


def _error(msg: str) -> None:
    tqdm.write(f"{PROG}: error: {msg}", file=sys.stderr)


def _open_backend(args):
    """The backend the flags ask for; a model file given to the wrong backend is an error, not ignored."""
    if args.onnx and args.backend != "ort":
        raise UsageError("--onnx goes with --backend ort")
    if args.engine and args.backend != "trt":
        raise UsageError("--engine goes with --backend trt")
    if args.backend == "trt":
        if not args.engine:
            raise UsageError("--backend trt needs --engine PATH (build one with python -m runtime.build)")
        if args.weights:
            raise UsageError("--backend trt runs the engine given with --engine: drop --weights")
        backend = open_backend("trt", args.engine, model=args.model, scale=args.scale, device="cuda")
        if not args.official_chop:
            try:
                args.tile, args.tile_pad = backend.tile_for(0 if args.tile == "auto" else args.tile, args.tile_pad)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return backend
    if args.onnx:
        if args.weights:
            raise UsageError("--onnx already holds the weights: drop --weights")
        return open_backend("ort", args.onnx, model=args.model, scale=args.scale, device=args.device)
    backend = load_upscaler(args.model, args.scale, args.weights, args.device, args.backend)
    if args.weights is None:
        _say_bundled(args.model, args.scale)
    return backend


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.official_chop and args.tile not in (0, "auto"):
            raise UsageError("--official-chop has its own tiling: drop --tile")
        sources, out, to_folder = _plan(args)
        backend = _open_backend(args)
        jobs = _jobs(sources, out, to_folder, args, backend.scale)
        _check_existing(jobs, args.overwrite)
    except (UsageError, BackendError) as e:
        _error(str(e))
        return EXIT_USAGE
    return _run(jobs, backend, args)


def _run(jobs: list[Job], backend, args) -> int:
    failed = 0
    said: set[str] = set()

    def say(msg: str) -> None:  # the tile plan once per distinct line, not once per image
        if msg not in said:
            said.add(msg)
            tqdm.write(f"{PROG}: {msg}", file=sys.stderr)
    images = tqdm(jobs, unit="image", disable=True if len(jobs) == 1 else None)
    tiles = tqdm(total=0, unit="tile", leave=False, disable=None)
    try:
        for job in images:
            images.set_postfix_str(job.src.name, refresh=False)
            try:
                data = read_image(job.src)
                sr = upscale(data.pixels, backend, tile=args.tile, tile_pad=args.tile_pad,
                             self_ensemble=args.self_ensemble, official_chop=args.official_chop,
                             progress=tiles, max_memory=args.max_memory, on_note=say)
                job.dst.parent.mkdir(parents=True, exist_ok=True)
                notes = write_image(job.dst, sr, data.bit_depth, overwrite=args.overwrite)
            except (ImageReadError, OutputExistsError, memory.TilingError) as e:
                _error(str(e))
                failed += 1
                continue
            except OSError as e:
                _error(f"cannot write {job.dst}: {e.strerror or e}")
                failed += 1
                continue
            except memory.OutOfMemory as e:
                _error(f"{job.src}: {e}")
                return EXIT_RUNTIME
            for note in notes:
                tqdm.write(f"{PROG}: warning: {job.dst}: {note}", file=sys.stderr)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    finally:
        tiles.close()
        images.close()
    if failed:
        if len(jobs) > 1:
            _error(f"{failed} of {len(jobs)} images failed")
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
