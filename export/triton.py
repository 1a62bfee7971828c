"""``python -m export.triton``: write a Triton Inference Server model repository for one model and scale.

The repository holds two models:

- ``<model>_x<scale>`` (image level, Python backend): ``LR`` UINT8 [H, W, 3] (RGB) in, ``SR`` UINT8
  [s·H, s·W, 3] out, any H and W. It tiles and blends with ``runtime.pipeline.upscale``, the code of
  ``python -m runtime.infer``, and sends every tile to the tile-level model by business-logic scripting;
- ``<model>_x<scale>_tile`` (tile level): ``input`` FP32 [B, 3, h, w] -> ``output`` FP32 [B, 3, s·h, s·w]
  with ``max_batch_size`` > 0 and ``dynamic_batching``, so that Triton packs the tiles of concurrent
  requests into batches. Its backend is chosen here (``--tile-backend``): ``python`` runs an srdeploy
  backend (``--backend`` torch, ort or trt) inside the server; ``onnxruntime`` (an ``--ops onnx`` graph)
  and ``tensorrt_plan`` (an engine from ``python -m runtime.build``; its plugin library is loaded by
  the server) are the official Triton container's own backends.

Every ``config.pbtxt`` is parsed into Triton's ``ModelConfig`` protobuf (from tritonclient) before
the repository is published; the repository appears whole or not at all.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import models
from models.cli import make_parser, whole_number
from models.errors import SrdeployError

from . import metadata

PROG = "python -m export.triton"
TEMPLATES = Path(__file__).resolve().parent / "triton_models"
TILE_BACKENDS = ("python", "onnxruntime", "tensorrt_plan")
#: tile-model tensors: the names of the ONNX export (export.onnx), so every tile backend agrees
TILE_INPUT, TILE_OUTPUT = "input", "output"
DEFAULT_TILE = 128
DEFAULT_MAX_PIXELS = 2048 * 2048
MANIFEST = "srdeploy.json"


class TritonExportError(SrdeployError, ValueError):
    """A repository cannot be written as asked (reported as one line, exit status 2)."""


@dataclass
class RepositoryOptions:
    model: str | None = None
    scale: int | None = None
    weights: str | None = None
    backend: str = "torch"  # --tile-backend python: the srdeploy backend run in the server
    onnx: str | None = None
    engine: str | None = None
    plugin_library: str | None = None
    device: str = "cpu"
    tile_backend: str = "python"
    tile: int = DEFAULT_TILE
    tile_pad: int = 32
    max_pixels: int = DEFAULT_MAX_PIXELS
    batching: bool = True
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    max_queue_size: int = 0  # 0: unbounded
    queue_timeout_us: int = 0  # 0: no timeout
    tile_instances: int = 1
    image_instances: int = 2
    torch_threads: int = 0  # 0: torch's default
    name: str | None = None  # the image model's name (default: <model>_x<scale>); the tile model adds _tile


# ----------------------------------------------------------------------------- config text

def _params(values: dict[str, object]) -> str:
    return "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in values.items())


def _instances(count: int, device: str) -> str:
    kind = "KIND_GPU" if device.startswith("cuda") else "KIND_CPU"
    return f"instance_group [{{ kind: {kind} count: {count} }}]\n"


def image_config(name: str, tile_name: str, o: RepositoryOptions, arch: str, scale: int, input_range: float,
                 size_multiple: int, min_pixels: int) -> str:
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "LR" data_type: TYPE_UINT8 dims: [-1, -1, 3] }]\n'
        'output [{ name: "SR" data_type: TYPE_UINT8 dims: [-1, -1, 3] }]\n'
        + _instances(o.image_instances, "cpu")  # tiling and blending run on the CPU; the tiles go to the device
        + _params({"arch": arch, "scale": scale, "tile_model": tile_name, "tile_input": TILE_INPUT,
                   "tile_output": TILE_OUTPUT, "tile_input_range": input_range, "tile": o.tile,
                   "tile_pad": o.tile_pad, "max_pixels": o.max_pixels, "size_multiple": size_multiple,
                   "min_pixels": min_pixels})
    )


def tile_config(name: str, o: RepositoryOptions, file: str) -> str:
    head = {"python": 'backend: "python"\n',
            "onnxruntime": f'backend: "onnxruntime"\ndefault_model_filename: "{file}"\n',
            "tensorrt_plan": f'platform: "tensorrt_plan"\ndefault_model_filename: "{file}"\n'}[o.tile_backend]
    text = (f'name: "{name}"\n{head}max_batch_size: {o.max_batch_size}\n'
            f'input [{{ name: "{TILE_INPUT}" data_type: TYPE_FP32 dims: [3, -1, -1] }}]\n'
            f'output [{{ name: "{TILE_OUTPUT}" data_type: TYPE_FP32 dims: [3, -1, -1] }}]\n')
    if o.batching:
        policy = ""
        if o.max_queue_size or o.queue_timeout_us:
            policy = (" default_queue_policy {"
                      + (f" max_queue_size: {o.max_queue_size}" if o.max_queue_size else "")
                      + (f" timeout_action: REJECT default_timeout_microseconds: {o.queue_timeout_us}"
                         if o.queue_timeout_us else "")
                      + " }")
        text += f"dynamic_batching {{ max_queue_delay_microseconds: {o.max_queue_delay_us}{policy} }}\n"
    text += _instances(o.tile_instances, o.device)
    if o.tile_backend == "python":
        text += _params({"backend": o.backend, "file": file, "device": o.device, "torch_threads": o.torch_threads})
    return text


def parse_config(text: str, where: str = "config.pbtxt"):
    """``text`` parsed into Triton's ``ModelConfig`` protobuf; TritonExportError if it does not parse."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise TritonExportError(f"{where} does not parse as a Triton ModelConfig: {e}") from None


# ----------------------------------------------------------------------------- the repository

def model_names(arch: str, scale: int, name: str | None = None) -> tuple[str, str]:
    """(image-level model, tile-level model) names: e.g. ``nlsn_x2`` and ``nlsn_x2_tile``."""
    image = name or f"{arch}_x{scale}"
    return image, f"{image}_tile"


def _check_options(o: RepositoryOptions) -> None:
    if o.tile_backend not in TILE_BACKENDS:
        raise TritonExportError(f"--tile-backend {o.tile_backend!r}: choose one of {', '.join(TILE_BACKENDS)}")
    if o.tile < 0 or o.tile_pad < 0:
        raise TritonExportError("--tile and --tile-pad must be ≥ 0")
    if o.max_pixels < 1:
        raise TritonExportError("--max-pixels must be ≥ 1")
    if o.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", o.name):
        raise TritonExportError(f"--name {o.name!r}: use letters, digits, '_', '.', '-' (a Triton model name)")
    for flag, value in (("--max-batch-size", o.max_batch_size), ("--tile-instances", o.tile_instances),
                        ("--image-instances", o.image_instances)):
        if value < 1:
            raise TritonExportError(f"{flag} must be ≥ 1, got {value}")
    if o.tile_backend == "python":
        if o.backend == "trt" and not o.engine:
            raise TritonExportError("--backend trt needs --engine PATH (build one with python -m runtime.build)")
        if o.engine and o.backend != "trt":
            raise TritonExportError("--engine goes with --backend trt (or --tile-backend tensorrt_plan)")
        if o.onnx and o.backend != "ort":
            raise TritonExportError("--onnx goes with --backend ort (or --tile-backend onnxruntime)")
    elif o.tile_backend == "tensorrt_plan":
        if not o.engine:
            raise TritonExportError("--tile-backend tensorrt_plan needs --engine PATH "
                                    "(a TensorRT engine from python -m runtime.build)")
    elif o.engine:
        raise TritonExportError("--engine goes with --tile-backend tensorrt_plan or --backend trt")
    for flag, path in (("--weights", o.weights), ("--onnx", o.onnx), ("--engine", o.engine),
                       ("--plugin-library", o.plugin_library)):
        if path and not Path(path).is_file():
            raise TritonExportError(f"{flag} {path} not found")


def _network(o: RepositoryOptions):
    """The network (for its size rules and range) and the weights file it came from."""
    from runtime.backends import check_match, resolve_weights

    if o.onnx:  # the graph carries its own metadata: no checkpoint needed
        try:
            meta = metadata.read_file(o.onnx)
        except Exception as e:  # noqa: BLE001 - any decoding failure is "not an ONNX file"
            raise TritonExportError(f"--onnx {o.onnx}: cannot read it as ONNX ({e})") from None
        if meta is None:
            raise TritonExportError(f"--onnx {o.onnx} has no srdeploy metadata: export it with python -m export.onnx")
        try:
            check_match(meta["model"], int(meta["scale"]), o.model, o.scale, o.onnx)
        except SrdeployError as e:
            raise TritonExportError(str(e)) from None
        if o.tile_backend == "onnxruntime" and meta.get("ops") != "onnx":
            raise TritonExportError(f"--onnx {o.onnx} uses srdeploy's custom ops (--ops {meta.get('ops')}), which "
                                    "the official onnxruntime backend lacks: export with --ops onnx")
        return meta, None
    try:
        weights = resolve_weights(o.weights, o.model, o.scale)
        net = models.load(weights)
        check_match(net.name, net.scale, o.model, o.scale, weights)
    except SrdeployError as e:  # no bundled weights, a checkpoint of another model or scale, ...
        raise TritonExportError(str(e)) from None
    except (OSError, RuntimeError, EOFError) as e:  # unreadable, or not a torch file at all
        raise TritonExportError(f"cannot load weights {o.weights}: {e}") from None
    meta = {"model": net.name, "scale": net.scale, "rgb_range": net.rgb_range,
            "size_multiple": net.size_multiple, "min_pixels": net.min_pixels()}
    return meta, (net, weights)


def _tile_file(o: RepositoryOptions, net_and_weights, version_dir: Path) -> str:
    """Put the tile model's file into its version folder; returns its name."""
    if o.engine:
        name = "model.plan" if o.tile_backend == "tensorrt_plan" else "model.engine"
        shutil.copyfile(o.engine, version_dir / name)
        return name
    if o.onnx:
        shutil.copyfile(o.onnx, version_dir / "model.onnx")
        return "model.onnx"
    net, weights = net_and_weights
    if o.tile_backend == "onnxruntime" or o.backend == "ort":
        from export.onnx import ExportError, export_model

        try:  # the plain-ONNX graph: the official onnxruntime backend has no srdeploy custom ops
            export_model(net, version_dir / "model.onnx", mode="onnx", weights=str(weights))
        except ExportError as e:
            raise TritonExportError(str(e)) from None
        return "model.onnx"
    shutil.copyfile(weights, version_dir / "weights.pt")
    return "weights.pt"


def write_repository(out: str | Path, o: RepositoryOptions, overwrite: bool = False) -> Path:
    """Write the repository to ``out`` (atomically: built beside it, then renamed into place)."""
    out = Path(out)
    _check_options(o)
    if out.exists() and not overwrite:
        raise TritonExportError(f"{out} exists; pass --overwrite to replace it or choose another -o")
    if out.exists() and not (out / MANIFEST).is_file():
        raise TritonExportError(f"{out} exists and is not a repository written by {PROG}: not replacing it")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TritonExportError(f"cannot create {parent} ({e.strerror or e}); choose another -o") from None
    if not os.access(parent, os.W_OK):
        raise TritonExportError(f"cannot write into {parent} (permission denied); choose another -o")
    meta, net_and_weights = _network(o)
    arch, scale = meta["model"], int(meta["scale"])
    image_name, tile_name = model_names(arch, scale, o.name)
    raw_graph = o.tile_backend != "python"  # the official backends feed the graph as exported: [0, rgb_range]
    input_range = float(meta["rgb_range"]) if raw_graph else 1.0

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        for name in (image_name, tile_name):
            (tmp / name / "1").mkdir(parents=True)
        shutil.copyfile(TEMPLATES / "image_model.py", tmp / image_name / "1" / "model.py")
        if o.tile_backend == "python":
            shutil.copyfile(TEMPLATES / "tile_model.py", tmp / tile_name / "1" / "model.py")
        file = _tile_file(o, net_and_weights, tmp / tile_name / "1")
        configs = {image_name: image_config(image_name, tile_name, o, arch, scale, input_range,
                                            int(meta["size_multiple"]), int(meta["min_pixels"])),
                   tile_name: tile_config(tile_name, o, file)}
        for name, text in configs.items():
            parse_config(text, f"{name}/config.pbtxt")
            (tmp / name / "config.pbtxt").write_text(text)
        manifest = {"model": arch, "scale": scale, "image_model": image_name, "tile_model": tile_name,
                    "tile_backend": o.tile_backend, "backend": o.backend if o.tile_backend == "python" else None,
                    "tile": o.tile, "tile_pad": o.tile_pad, "max_pixels": o.max_pixels, "batching": o.batching,
                    "weights": str(net_and_weights[1]) if net_and_weights else None,
                    "plugin_library": None}
        if o.plugin_library:  # the server loads it (runtime.serve --plugin-library, or Triton's backend-config)
            shutil.copyfile(o.plugin_library, tmp / Path(o.plugin_library).name)
            manifest["plugin_library"] = Path(o.plugin_library).name
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def read_manifest(repository: str | Path) -> dict:
    """What ``write_repository`` recorded about ``repository``; TritonExportError if it is not one."""
    path = Path(repository) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise TritonExportError(f"{repository} is not a model repository written by {PROG} (no readable {MANIFEST})") from None


# ----------------------------------------------------------------------------- command line

def add_repository_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that shape a repository (shared with python -m runtime.serve); their defaults are
    those of :class:`RepositoryOptions`."""
    from runtime.backends import BACKENDS

    d = RepositoryOptions()
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=sorted(models.ARCHITECTURES),
                   help="architecture (default: read from the weights; must match them if given)")
    m.add_argument("--scale", type=int, choices=models.SCALES,
                   help="upscaling factor (default: read from the weights; must match them if given)")
    m.add_argument("--weights", metavar="PATH", help="checkpoint (default: the bundled compact model of --model/--scale)")
    m.add_argument("--backend", choices=list(BACKENDS), default=d.backend,
                   help="--tile-backend python: the srdeploy backend run inside the server")
    m.add_argument("--onnx", metavar="PATH", help="an ONNX file from python -m export.onnx (--backend ort or "
                   "--tile-backend onnxruntime; default: exported from the weights with --ops onnx)")
    m.add_argument("--engine", metavar="PATH", help="a TensorRT engine from python -m runtime.build "
                   "(--backend trt or --tile-backend tensorrt_plan)")
    m.add_argument("--plugin-library", metavar="PATH",
                   help="libsrdeploy_trt_plugins.so, copied into the repository for a tensorrt_plan server")
    m.add_argument("--name", metavar="NAME", help="the image model's name (default: <model>_x<scale>, e.g. "
                   "nlsn_x2); the tile model is NAME_tile")
    m.add_argument("--device", default=d.device, metavar="{cpu,cuda}",
                   help="where the tile model runs (default: cpu); cuda gives it a KIND_GPU instance group")

    t = p.add_argument_group("tiles and batching")
    t.add_argument("--tile-backend", choices=TILE_BACKENDS, default=d.tile_backend,
                   help="the tile model's Triton backend: python (an srdeploy backend; runs with the "
                        "tritonserver of nvidia-pytriton), onnxruntime or tensorrt_plan (official container)")
    # flag, metavar, help ("(default: N)", from RepositoryOptions, is added unless the help names the default)
    queue = (("--tile", "N", "tile size in LR pixels, as runtime.infer --tile"),
             ("--tile-pad", "N", "LR pixels of context around each tile, as runtime.infer"),
             ("--max-pixels", "N", "largest LR image (H·W) a request may carry; larger ones get an error"),
             ("--max-batch-size", "N", "most tiles in one batch of the tile model"),
             ("--max-queue-delay-us", "US", "how long the batcher may hold a tile to fill a batch"),
             ("--max-queue-size", "N", "tiles waiting beyond this are rejected (default: 0, unbounded)"),
             ("--queue-timeout-us", "US", "a tile waiting longer is rejected (default: 0, no timeout)"))
    instances = (("--tile-instances", "N", "instances of the tile model"),
                 ("--image-instances", "N", "instances of the image model, i.e. requests tiled at the same time"),
                 ("--torch-threads", "N", "torch threads of each tile-model instance (default: 0, torch's default)"))

    def add_counts(rows) -> None:
        for flag, metavar, text in rows:
            t.add_argument(flag, type=whole_number(0), default=getattr(d, flag[2:].replace("-", "_")),
                           metavar=metavar, help=text)

    add_counts(queue)
    t.add_argument("--no-batching", action="store_true", help="no dynamic batcher: every tile runs alone")
    add_counts(instances)


def options_from_args(args) -> RepositoryOptions:
    """The options the parsed flags of :func:`add_repository_arguments` ask for."""
    given = {f.name: getattr(args, f.name) for f in fields(RepositoryOptions) if hasattr(args, f.name)}
    return RepositoryOptions(**given, batching=not args.no_batching)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Write a Triton Inference Server model repository (image model + batched tile model).",
                    ["-o triton_repo                                  # bundled NLSN x2, torch in the server",
                     "-o triton_repo --model csnln --scale 2 --tile 96",
                     "-o triton_repo --tile-backend onnxruntime        # official container",
                     "-o triton_repo --tile-backend tensorrt_plan --engine nlsn_x2.engine \\",
                     "      --plugin-library libsrdeploy_trt_plugins.so --device cuda"],
                    "then: python -m runtime.serve --repository triton_repo")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the repository folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a repository written earlier by this command")
    add_repository_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = write_repository(args.output, options_from_args(args), overwrite=args.overwrite)
    except SrdeployError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    manifest = read_manifest(out)
    print(f"wrote {out}: {manifest['image_model']} (image) -> {manifest['tile_model']} "
          f"({manifest['tile_backend']}{', ' + manifest['backend'] if manifest['backend'] else ''}; "
          f"tile {manifest['tile']}+{manifest['tile_pad']}, "
          f"{'dynamic batching' if manifest['batching'] else 'no batching'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
