"""``python -m runtime.infer``: upscale an image or a folder of images.

A thin layer over ``runtime.pipeline``: it checks everything it can before any image is
processed (inputs, output names and folders, existing files: ``runtime.jobs``; weights, device:
here), then reads, upscales and writes one image at a time. Expected problems end with a one-line ``error:``
message on stderr, never a traceback; in folder mode a bad image is reported and the rest are
still processed. A summary (written, skipped, failed, seconds, images/s) ends every run.

Exit status: 0 every image written (or skipped as asked); 3 some written, some failed; 2 bad
arguments, inputs, outputs or weights, or no image written; 1 the run itself failed (e.g. out of
device memory); 130 interrupted (what was written stays, and --skip-existing resumes).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import models
from models.cli import make_parser, whole_number
from models.errors import SrdeployError, UsageError

from . import memory
from .backends import BACKENDS, open_backend
from .imageio import ImageData, ImageReadError, OutputExistsError, read_image, write_image
from .jobs import Job, Messages, Plan, add_io_arguments, check_outputs, make_plan, name_outputs, summary
from .pipeline import DEFAULT_TILE_PAD, load_upscaler, upscale

PROG = "python -m runtime.infer"
EXIT_OK = 0  # every image written (or skipped with --skip-existing)
EXIT_RUNTIME = 1  # the run itself failed (e.g. out of device memory)
EXIT_USAGE = 2  # bad arguments, inputs, outputs or weights, or no image written (argparse uses 2 as well)
EXIT_PARTIAL = 3  # some images written, some failed
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell's convention)

_non_negative = whole_number(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 2 or 3.5, got {text!r}") from None
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"must be > 0 and ≤ 64, got {value:g}")
    return value


def _tile(text: str) -> int | str:
    return "auto" if text == "auto" else _non_negative(text)


def _size(text: str) -> int:
    try:
        return memory.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        PROG, "Upscale images with NLSN, CSNLN or EDSR (reads PNG, JPEG, BMP, WebP, TIFF; writes PNG, "
              "JPEG, BMP, WebP; gray, alpha and 16-bit kept).",
        ["-i photo.png -o photo_sr.png                  # bundled compact model",
         "-i photo.png -o photo_x3.png --model csnln --scale 3",
         "-i photo.png -o photo_x4.png --weights NLSN_x4.pt",
         "-i lr/ -o sr/ --recursive --skip-existing     # resume an interrupted run",
         "-i lr/ -o sr/ --ext jpg --quality 90 --outscale 3.5",
         "-i lr/ -o sr/ --weights CSNLN_x2.pt --device cuda --half --tile 256",
         "-i lr/ -o sr/ --backend ort                   # onnxruntime, export cached",
         "-i lr/ -o sr/ --weights EDSR_x2.pt --self-ensemble --official-chop"],
        "\nexit status:\n"
        "  0    every image written (or skipped with --skip-existing)\n"
        "  3    some images written, some failed (named in the summary)\n"
        "  2    bad arguments, inputs, outputs or weights (nothing computed), or no image written\n"
        "  1    the run itself failed (e.g. out of device memory)\n"
        "  130  interrupted (finished images stay; --skip-existing resumes)\n"
        "\nAn on-the-fly export (--backend ort without --onnx) is cached under $SRDEPLOY_CACHE_DIR, "
        "else\n$XDG_CACHE_HOME/srdeploy, else ~/.cache/srdeploy, keyed by the weights' sha256.")
    io = add_io_arguments(p)
    io.add_argument("--outscale", type=_positive_float, default=None, metavar="X",
                    help="final upscaling factor: the network's output is resized with MATLAB bicubic "
                         "(runtime/resize.py) to X times the input (default: the network's scale)")
    io.add_argument("--alpha-upsampler", choices=("bicubic", "model"), default="bicubic",
                    help="how an alpha channel is upscaled: bicubic, or by the network as a gray image "
                         "(sharper edges, a second pass)")
    m = p.add_argument_group("model")
    m.add_argument("--weights", metavar="PATH",
                   help="checkpoint (official NLSN/CSNLN/EDSR state dict); default: the bundled compact model "
                        "of --model/--scale (NLSN and CSNLN, x2/x3/x4; see models/weights/manifest.json)")
    m.add_argument("--model", choices=sorted(models.ARCHITECTURES),
                   help="architecture (default: read from the checkpoint; must match it if given)")
    m.add_argument("--scale", type=int, choices=models.SCALES,
                   help="upscaling factor of the network (default: read from the checkpoint; must match it if given)")
    m.add_argument("--backend", choices=list(BACKENDS), default="torch",
                   help="inference backend: torch (PyTorch reference), ort (onnxruntime), trt (TensorRT)")
    m.add_argument("--onnx", metavar="PATH",
                   help="--backend ort: an ONNX file from python -m export.onnx (default: the weights, "
                        "exported on the fly with --ops onnx and cached)")
    m.add_argument("--engine", metavar="PATH",
                   help="--backend trt: a TensorRT engine from python -m runtime.build (runs on the GPU; "
                        "tiles are sized to the engine's profile)")
    m.add_argument("--device", type=_device, default="auto", metavar="{auto,cpu,cuda,cuda:N}",
                   help="device; auto: cuda when a CUDA GPU (onnxruntime: its CUDA provider) is available, else cpu")
    m.add_argument("--half", action="store_true",
                   help="--backend torch on CUDA: fp16 (hashing and softmax statistics stay fp32); "
                        "for onnxruntime/TensorRT export with --precision fp16 instead")

    r = p.add_argument_group("tiling and ensembling")
    r.add_argument("--tile", type=_tile, default="auto", metavar="{auto,N}",
                   help="tile size in LR pixels; auto: the whole image if it fits --max-memory, else the largest "
                        "tile that does (halved and retried on running out of memory); 0: the whole image at once "
                        "(default: auto)")
    r.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                   help=f"memory budget for --tile auto, e.g. 4G or 512M (default: {memory.RAM_SHARE * 100:.0f}%% of the "
                        f"available RAM; on CUDA {memory.GPU_SHARE * 100:.0f}%% of the free GPU memory)")
    r.add_argument("--tile-pad", type=_non_negative, default=DEFAULT_TILE_PAD, metavar="N",
                   help="LR pixels of context around each tile, also the width of the blend band")
    r.add_argument("--self-ensemble", action="store_true",
                   help="x8 self-ensemble: average over flips and transposes (8x slower)")
    r.add_argument("--official-chop", action="store_true",
                   help="the official repositories' test-time forward_chop instead of --tile")
    return p


# ----------------------------------------------------------------------------- planning (no compute)

def _scale_hint(args) -> int | None:
    """The network's scale without building it (from --scale, the bundled manifest, the ONNX metadata
    or the checkpoint's shapes), so that output names are checked before a backend opens; None when
    only opening tells (a TensorRT engine, an unreadable file: opening then reports the error)."""
    if args.scale:
        return args.scale
    try:
        if args.onnx:
            from .backends import onnx_metadata
            return int(onnx_metadata(args.onnx)["scale"])
        if args.backend == "trt":
            return None
        if args.weights is None:
            from .backends import default_entry
            entry = default_entry(args.model, None)
            return entry.scale if entry else None
        from models.checkpoint import detect, read_state_dict
        return detect(read_state_dict(args.weights))[1]
    except (ValueError, OSError):
        return None


def _resolve_device(args) -> str:
    """--device auto -> cuda when the backend can use a GPU here, else cpu; --half needs CUDA."""
    device = args.device
    if args.backend == "trt":
        device = "cuda" if device == "auto" else device
    elif device == "auto":
        if args.backend == "ort":
            from export.ort import cuda_available
            device = "cuda" if cuda_available() else "cpu"
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.half:
        if args.backend != "torch":
            raise UsageError(f"--half is for --backend torch; for --backend {args.backend} export an fp16 "
                             f"model (python -m export.onnx --precision fp16)")
        if not device.startswith("cuda"):
            why = "no CUDA GPU is available, so --device auto chose cpu" if args.device == "auto" else "--device cpu"
            raise UsageError(f"--half runs on CUDA only ({why}); drop --half: fp16 on the CPU is slower than fp32")
    return device


# ----------------------------------------------------------------------------- messages

_messages = Messages(PROG)
_say, _warn, _error = _messages.say, _messages.warn, _messages.error


def _say_bundled(model: str | None, scale: int | None) -> None:
    """Name the bundled model that was picked, since the user did not name one."""
    from .backends import default_entry

    entry = default_entry(model, scale)
    if entry is not None:
        _say(f"using the {entry.describe()}; pass --weights for another checkpoint")


# ----------------------------------------------------------------------------- backend

def _open_backend(args, device: str):
    """The backend the flags ask for; a model file given to the wrong backend is an error, not ignored."""
    if args.backend == "trt":
        backend = open_backend("trt", args.engine, model=args.model, scale=args.scale, device="cuda")
        if not args.official_chop:
            try:
                args.tile, args.tile_pad = backend.tile_for(0 if args.tile == "auto" else args.tile, args.tile_pad)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return backend
    if args.onnx:
        return open_backend("ort", args.onnx, model=args.model, scale=args.scale, device=device)
    backend = load_upscaler(args.model, args.scale, args.weights, device, args.backend)
    if args.weights is None:
        _say_bundled(args.model, args.scale)
    if args.half:
        backend.half()
    return backend


def _check_flags(args) -> None:
    """Flag combinations, before anything is read."""
    if args.official_chop and args.tile not in (0, "auto"):
        raise UsageError("--official-chop has its own tiling: drop --tile")
    if args.onnx and args.backend != "ort":
        raise UsageError("--onnx goes with --backend ort")
    if args.engine and args.backend != "trt":
        raise UsageError("--engine goes with --backend trt")
    if args.backend == "trt" and not args.engine:
        raise UsageError("--backend trt needs --engine PATH (build one with python -m runtime.build)")
    if args.backend == "trt" and args.weights:
        raise UsageError("--backend trt runs the engine given with --engine: drop --weights")
    if args.onnx and args.weights:
        raise UsageError("--onnx already holds the weights: drop --weights")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_flags(args)
        plan = make_plan(args)
        needs_scale = plan.to_folder and args.suffix is None  # the default suffix is _x<scale>
        scale = _scale_hint(args) if needs_scale else None
        names_known = not needs_scale or scale is not None
        if names_known:
            name_outputs(plan, args, scale)
            check_outputs(plan, args, _messages)
        if plan.single and plan.jobs:
            plan.first = read_image(plan.jobs[0].src)  # a corrupt input stops here, before the model
            if isinstance(args.tile, int) and args.tile > 0 and not args.official_chop:
                memory.check_tile(*plan.first.pixels.shape[:2], args.tile, args.tile_pad)  # an absurd tile too
        device = _resolve_device(args)
        if not plan.jobs:  # --skip-existing and every output exists
            summary(plan, [], [], 0.0, False, _messages)
            return EXIT_OK
        backend = _open_backend(args, device)
        if not names_known:  # only the opened backend could tell the scale
            name_outputs(plan, args, backend.scale)
            check_outputs(plan, args, _messages)
    except SrdeployError as e:  # bad arguments, inputs, outputs, weights or tile
        _error(str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted before any image was computed")
        return EXIT_INTERRUPTED
    return _run(plan, backend, args)


# ----------------------------------------------------------------------------- the run

def _upscale(data: ImageData, backend, args, tiles, on_note) -> np.ndarray:
    """One image through the network (and its alpha, with --alpha-upsampler model), then --outscale."""
    options = dict(tile=args.tile, tile_pad=args.tile_pad, self_ensemble=args.self_ensemble,
                   official_chop=args.official_chop, progress=tiles, max_memory=args.max_memory, on_note=on_note)
    pixels = data.pixels
    if args.alpha_upsampler == "model" and data.has_alpha:
        color = upscale(pixels[..., :-1], backend, **options)
        alpha = upscale(pixels[..., -1:], backend, **options)  # gray: replicated to RGB, averaged back
        sr = np.concatenate([color, alpha], axis=2)
    else:
        sr = upscale(pixels, backend, **options)
    if args.outscale and args.outscale != backend.scale:
        from .resize import imresize
        h, w = pixels.shape[:2]
        size = (max(1, round(h * args.outscale)), max(1, round(w * args.outscale)))
        sr = np.clip(imresize(sr, output_shape=size), 0, 1).astype(np.float32)
    return sr


class _Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, CI) one line per image."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.log = not sys.stderr.isatty()
        self.images = tqdm(total=total, unit="image", disable=self.log or total == 1)
        self.tiles = tqdm(total=0, unit="tile", leave=False, disable=None)

    def start(self, job: Job) -> None:
        self.images.set_postfix_str(job.src.name, refresh=False)
        self.t0 = time.perf_counter()

    def finish(self, job: Job, status: str) -> None:
        self.done += 1
        self.images.update()
        if self.log and self.total > 1:
            _say(f"[{self.done}/{self.total}] {job.src} -> {job.dst}: {status} "
                 f"({time.perf_counter() - self.t0:.1f} s)")

    def close(self) -> None:
        self.tiles.close()
        self.images.close()


def _run(plan: Plan, backend, args) -> int:
    written: list[Job] = []
    failed: list[Job] = []
    progress = _Progress(len(plan.jobs))
    start = time.perf_counter()
    status = None
    said: set[str] = set()

    def say_once(msg: str) -> None:  # the tile plan once per distinct line, not once per image
        if msg not in said:
            said.add(msg)
            _say(msg)
    try:
        for job in plan.jobs:
            progress.start(job)
            try:
                data = plan.first if plan.first is not None and job is plan.jobs[0] else read_image(job.src)
                sr = _upscale(data, backend, args, progress.tiles, say_once)
                job.dst.parent.mkdir(parents=True, exist_ok=True)
                notes = write_image(job.dst, sr, data.bit_depth, overwrite=args.overwrite, quality=args.quality)
            except (ImageReadError, OutputExistsError, memory.TilingError) as e:  # this image cannot be done
                # (a CUDA or TensorRT failure is not this image's fault: it ends the run, exit 1)
                _error(str(e))
                failed.append(job)
                progress.finish(job, "failed")
                continue
            except OSError as e:
                _error(f"cannot write {job.dst}: {e.strerror or e}")
                failed.append(job)
                progress.finish(job, "failed")
                continue
            except memory.OutOfMemory as e:
                _error(f"{job.src}: {e}")
                status = EXIT_RUNTIME
                break
            for note in notes:
                _warn(f"{job.dst}: {note}")
            written.append(job)
            progress.finish(job, "written")
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    finally:
        progress.close()
    summary(plan, written, failed, time.perf_counter() - start, status == EXIT_INTERRUPTED, _messages)
    if status is not None:
        return status
    if failed:
        if len(plan.jobs) > 1:
            _error(f"{len(failed)} of {len(plan.jobs)} images failed")
        return EXIT_PARTIAL if written else EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
