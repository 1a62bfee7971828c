"""PyTorch -> ONNX for the srdeploy networks (DESIGN.md §3, §4).

    python -m export.onnx --model nlsn --scale 2 --ops onnx -o nlsn_x2.onnx
    python -m export.onnx --model csnln --scale 3 --weights CSNLN_x3.pt --ops plugin --precision fp16
    python -m export.onnx --model edsr --scale 4 --size 64x64 --set n_feats=64

How (one path for every model and mode):
1. ``torch.export`` of the network with symbolic H and W (and batch): sizes, bucket count, padding
   and chunk count stay expressions of the input shape.
2. Convolutions whose weights are computed in the graph (CSNLN's matching filters) become
   im2col + MatMul: TensorRT wants weights and channel counts fixed at build time.
3. ``run_decompositions`` replaces each ``torch.ops.srdeploy.*`` node: by a custom ``srdeploy::*``
   ONNX node (``--ops plugin``, export/ops_plugin.py) or by its standard-op decomposition
   (``--ops onnx``, export/ops_onnx.py). fp16 adds softmax in fp32.
4. ``torch.onnx.export`` (dynamo) writes ONNX; onnx-graphsurgeon folds constants (never custom
   nodes), cleans up and sorts; metadata for the runtime (model, scale, rgb_range, size rules).
5. Checks: ONNX checker, strict shape inference, one onnxruntime run against PyTorch.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import math
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import onnx
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

import models
from models.base import SRModel
from models.cli import HelpFormatter
from models.errors import SrdeployError
from models.files import atomic_output
from models.ops import contract

from . import cleanup as _cleanup
from . import metadata as _metadata
from . import ops_onnx, ops_plugin
from .options import (DEFAULT_OPSET, MIN_OPSET, MODES, PRECISIONS, ExportError, check_output, parse_option,
                      parse_size, validate_options)

FORMAT_VERSION = 1  # of the metadata (export.metadata)
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# --------------------------------------------------------------------------- helper op for step 2

@torch.library.custom_op("srdeploy_export::conv2d_computed_weight", mutates_args=())
def _conv2d_computed_weight(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                            groups: int) -> torch.Tensor:
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@_conv2d_computed_weight.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _route_computed_convs(ep: torch.export.ExportedProgram) -> int:
    """Point every conv2d whose weight is not a parameter/buffer/constant at the helper op, which
    the decomposition table then turns into im2col + MatMul. Returns how many were routed."""
    sig = ep.graph_signature
    static = set(sig.inputs_to_parameters) | set(sig.inputs_to_buffers) | set(sig.inputs_to_lifted_tensor_constants)
    routed = 0
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.conv2d.default:
            continue
        weight = node.args[1]
        if weight.op == "placeholder" and weight.name in static:
            continue
        defaults = [None, [1, 1], [0, 0], [1, 1], 1]  # bias, stride, padding, dilation, groups
        names = ["bias", "stride", "padding", "dilation", "groups"]
        rest = list(node.args[2:]) + defaults[len(node.args) - 2:]
        for i, name in enumerate(names):
            if name in node.kwargs:
                rest[i] = node.kwargs[name]
        node.target = torch.ops.srdeploy_export.conv2d_computed_weight.default
        node.args, node.kwargs = (node.args[0], weight, *rest), {}
        routed += 1
    if routed:
        ep.graph.lint()
        ep.graph_module.recompile()
    return routed


def _softmax_fp32(x, dim, dtype=None):
    """aten.softmax.int with its statistics in fp32 (the fp16 rule), result in the asked type."""
    return torch.ops.aten._softmax.default(x.to(torch.float32), dim, False).to(dtype or x.dtype)


def decomposition_table(mode: str, precision: str, max_buckets: int | None) -> dict:
    """What replaces each custom op (and, for fp16, softmax) in the exported program: each op's
    ``emitter`` (plugin) or ``decomposition`` (onnx) from the op contract. Implementations that take
    ``max_buckets`` (BucketSort's, for a dynamic bucket count) get the model's upper bound."""
    part = "emitter" if mode == "plugin" else "decomposition"
    table = {}
    for spec in contract.OPS.values():
        fn = contract.implementation(spec.name, part)
        if "max_buckets" in inspect.signature(fn).parameters:
            fn = partial(fn, max_buckets=max_buckets)
        table[getattr(torch.ops.srdeploy, spec.torch_name).default] = fn
    table[torch.ops.srdeploy_export.conv2d_computed_weight.default] = ops_onnx.conv2d_as_matmul
    if precision == "fp16":
        table[torch.ops.aten.softmax.int] = _softmax_fp32
    return table


# --------------------------------------------------------------------------- model-level rules

class _Precision(nn.Module):
    """fp32 in and out, the network in fp16: the file's interface does not change with precision."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x):
        return self.net(x.to(self.dtype)).to(torch.float32)


def max_buckets(model: nn.Module) -> int | None:
    """Upper bound of BucketSort's code range (NLSN: n_hashes · 128 buckets), None without NLSN."""
    from models.nlsn import MAX_BUCKETS, NonLocalSparseAttention
    blocks = [m for m in model.modules() if isinstance(m, NonLocalSparseAttention)]
    return max((b.n_hashes * MAX_BUCKETS for b in blocks), default=None)


def min_side(model: SRModel) -> int:
    """Smallest H and W the dynamic trace is declared for (any H·W ≥ min_pixels runs in the file)."""
    u = model.size_multiple
    side = max(2, math.isqrt(model.min_pixels() - 1) + 1 if model.min_pixels() > 1 else 2)
    return -(-side // u) * u


def sample_size(model: SRModel) -> tuple[int, int]:
    """A trace input: non-square, above every minimum, small."""
    side = min_side(model)
    return model.valid_size(side + 5, side + 9)


def _dynamic_shapes(model: SRModel):
    u = model.size_multiple
    lo = min_side(model)
    batch = Dim("batch", min=1, max=1024)
    if u > 1:
        h, w = Dim("height_div", min=lo // u), Dim("width_div", min=lo // u)
        return ({0: batch, 2: u * h, 3: u * w},)
    return ({0: batch, 2: Dim("height", min=lo), 3: Dim("width", min=lo)},)


def metadata(model: SRModel, mode: str, precision: str, size: tuple[int, int] | None,
             weights: str | None, opset: int) -> dict[str, Any]:
    """What the runtime needs to feed the file (export/metadata.py reads it back)."""
    return {
        "format": FORMAT_VERSION, "model": model.name, "scale": model.scale, "rgb_range": model.rgb_range,
        "size_multiple": model.size_multiple, "min_pixels": model.min_pixels(),
        "fixed_size": list(size) if size else None, "ops": mode, "precision": precision, "opset": opset,
        "config": model.config, "weights": weights or "random (seed 0)",
        "input": "input: float32 [N, 3, H, W] in [0, rgb_range]", "output": "output: float32 [N, 3, sH, sW]",
    }


# --------------------------------------------------------------------------- the export itself

@dataclass
class ExportResult:
    path: Path
    seconds: float
    file_bytes: int
    model: onnx.ModelProto = field(repr=False)
    checks: dict[str, Any] = field(default_factory=dict)


def to_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], *, mode: str, precision: str = "fp32",
            dynamic_shapes=None, opset: int = DEFAULT_OPSET, bound: int | None = None,
            input_names: Sequence[str] = ("input",), output_names: Sequence[str] = ("output",)) -> onnx.ModelProto:
    """Any module calling srdeploy ops -> cleaned ONNX (steps 1-4 without metadata; used for whole
    networks and, by the tests, for single ops)."""
    with torch.no_grad():
        ep = torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=False)
    _route_computed_convs(ep)
    ep = ep.run_decompositions(decomposition_table(mode, precision, bound))
    program = torch.onnx.export(ep, example, opset_version=opset, dynamo=True, external_data=False,
                                optimize=True, input_names=list(input_names), output_names=list(output_names),
                                verbose=False)
    proto = _cleanup.cleanup(program.model_proto)
    _name_dims(proto)
    if mode == "plugin" and any(n.domain == contract.DOMAIN for n in proto.graph.node):
        _set_opset(proto, contract.DOMAIN, contract.VERSION)
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    return proto


def _name_dims(proto: onnx.ModelProto, names: Sequence[str] = ("batch", "", "height", "width")) -> None:
    """torch.export calls the symbolic sizes s0, s53, ...: name them after the input's axes
    (``k*sN`` on an axis names sN ``<axis>_div<k>``) in every shape of the graph."""
    import re
    rename = {}
    for axis, dim in zip(names, proto.graph.input[0].type.tensor_type.shape.dim):
        m = re.fullmatch(r"(?:(\d+)\*)?(s\d+)", dim.dim_param)
        if axis and m:
            rename[m.group(2)] = axis if m.group(1) is None else f"{axis}_div{m.group(1)}"
    if not rename:
        return
    pattern = re.compile(r"\bs\d+\b")
    for vi in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: rename.get(m.group(0), m.group(0)), dim.dim_param)


def _set_opset(proto: onnx.ModelProto, domain: str, version: int) -> None:
    for imp in proto.opset_import:
        if imp.domain == domain:
            imp.version = version
            return
    proto.opset_import.append(onnx.helper.make_opsetid(domain, version))


def export_model(model: SRModel, path: str | Path, *, mode: str = "onnx", precision: str = "fp32",
                 size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET, overwrite: bool = False,
                 weights: str | None = None, check: bool = True) -> ExportResult:
    """Export ``model`` to ``path`` (dynamic H, W unless ``size`` = (H, W) is given).

    The file is written atomically (temporary file, then rename) and only after its checks pass;
    an existing file is replaced only with ``overwrite=True``.
    """
    path = Path(path)
    validate_options(model, mode=mode, precision=precision, size=size, opset=opset)
    check_output(path, overwrite)

    start = time.perf_counter()
    net = copy.deepcopy(model).eval()
    if precision == "fp16":
        net = _Precision(net.half(), torch.float16)
    h, w = size or sample_size(model)
    example = (torch.rand(1 if size else 2, 3, h, w, generator=torch.Generator().manual_seed(0)) * model.rgb_range,)
    proto = to_onnx(net, example, mode=mode, precision=precision, opset=opset, bound=max_buckets(model),
                    dynamic_shapes=None if size else _dynamic_shapes(model))
    _metadata.write(proto, metadata(model, mode, precision, size, weights, opset))
    proto.doc_string = (f"srdeploy {model.name} x{model.scale}, --ops {mode}, {precision}; "
                        f"input [N, 3, H, W] in [0, {model.rgb_range:g}]")
    seconds = time.perf_counter() - start

    checks: dict[str, Any] = {}
    with atomic_output(path) as tmp:  # published only when every check passes
        onnx.save(proto, str(tmp))
        if check:
            _cleanup.check(proto)
            checks["onnx.checker"] = checks["shape_inference"] = "ok"
            checks.update(_runtime_check(str(tmp), model, example[0][:1], precision, mode))
    return ExportResult(path, seconds, path.stat().st_size, proto, checks)


def _runtime_check(onnx_path: str, model: SRModel, x: torch.Tensor, precision: str, mode: str) -> dict[str, Any]:
    """One onnxruntime run against the PyTorch model (custom-op graphs where the ops are available)."""
    from . import ort as rt
    try:
        session = rt.make_session(onnx_path, device="cpu")
    except rt.MissingCustomOpsError as e:
        if mode == "onnx":
            raise
        return {"onnxruntime": f"skipped ({e})"}
    with torch.no_grad():
        expected = model(x.to(torch.float32)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(abs(got.astype("float64") - expected).max()) / model.rgb_range
    return {"onnxruntime": f"{tuple(x.shape)} on {session.get_providers()[0]}: max |diff| vs torch "
                           f"{diff:.2e} (range 1)", "max_abs_diff": diff}


# --------------------------------------------------------------------------- summary

def _shape(value_info) -> str:
    t = value_info.type.tensor_type
    dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
    return f"{onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)} [{', '.join(dims)}]"


def summary(result: ExportResult) -> str:
    proto = result.model
    meta = _metadata.read(proto) or {}
    custom = ops_plugin.custom_nodes(proto)
    lines = [f"wrote {result.path} ({result.file_bytes / 1024:.1f} KiB) in {result.seconds:.1f} s",
             f"  {meta.get('model')} x{meta.get('scale')}  --ops {meta.get('ops')}  {meta.get('precision')}  "
             f"{'fixed ' + 'x'.join(map(str, meta['fixed_size'])) if meta.get('fixed_size') else 'dynamic H, W'}  "
             f"opset {meta.get('opset')}  IR {proto.ir_version}"]
    lines += [f"  input  {i.name}: {_shape(i)}" for i in proto.graph.input]
    lines += [f"  output {o.name}: {_shape(o)}" for o in proto.graph.output]
    lines.append(f"  nodes  {len(proto.graph.node)}; custom: " + (", ".join(
        f"{n.domain}::{n.op_type}({', '.join(f'{a.name}={onnx.helper.get_attribute_value(a)}' for a in n.attribute)})"
        for n in custom) or "none"))
    for name, value in result.checks.items():
        if name != "max_abs_diff":
            lines.append(f"  check  {name}: {value}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description=(
        "Export an srdeploy network to ONNX: custom srdeploy::* nodes (--ops plugin, for the TensorRT "
        "plugins) or standard ops only (--ops onnx, any onnxruntime and TensorRT without plugins)."),
        epilog="examples:\n" + __doc__.split("\n\n")[1] + "\n"
               "    python -m export.onnx --model nlsn --scale 2 --random-weights --set n_feats=64 -o nlsn_rand.onnx",
        formatter_class=HelpFormatter)
    # choices shown, checked by models.build (whose message names what exists)
    p.add_argument("--model", required=True, metavar="{" + ",".join(models.ARCHITECTURES) + "}", help="architecture")
    p.add_argument("--scale", type=int, required=True, metavar="{" + ",".join(map(str, models.SCALES)) + "}",
                   help="upscaling factor")
    p.add_argument("--weights", metavar="PATH",
                   help="checkpoint (.pt/.pth); without it: the bundled default weights for this "
                        "model and scale if any (and no --set), else random weights (seed 0)")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights (seed 0) even where bundled default weights exist")
    p.add_argument("--set", dest="options", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="model option by its official name (n_resblocks, n_feats, chunk_size, n_hashes, rgb_range, ...)")
    p.add_argument("--ops", choices=MODES, default="onnx",
                   help="custom srdeploy::* nodes (plugin) or standard ops only (onnx)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16: half-precision graph, hashing and softmax statistics in fp32 (I/O stays fp32)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--dynamic", action="store_true", help="one file for every input size (the default)")
    size.add_argument("--size", type=parse_size, metavar="HxW", help="fixed input size (e.g. one TensorRT tile)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset (min {MIN_OPSET['onnx']})")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file (default: <model>_x<scale>_<ops>_<precision>[_HxW].onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-check", action="store_true", help="skip the checker/shape-inference/onnxruntime checks")
    return p


def load_model(name: str, scale: int, weights: str | None, options: dict[str, Any],
               random_weights: bool = False) -> tuple[SRModel, str | None]:
    """The network to export and a description of its weights: the checkpoint given; else the
    bundled default weights for (model, scale) when there are some and no option changes the
    architecture; else the released configuration (with ``options``) and random weights."""
    try:
        if weights:
            return models.load(weights, model=name, scale=scale, **options), weights
        if not random_weights and not options and name.lower() in models.ARCHITECTURES:
            from models import weights as bundled
            entry = bundled.find(name.lower(), scale)
            if entry is not None:
                return (models.load(entry.path, model=name, scale=scale, **entry.overrides),
                        f"bundled {entry.path.name}")
        torch.manual_seed(0)
        return models.build(name, scale, **options), None
    except SrdeployError:
        raise
    except ValueError as e:  # models.build names an unknown model, scale or option in a plain ValueError
        raise ExportError(str(e)) from None


def quiet_torch_exporter() -> None:
    """The CLI prints its own summary: keep torch's exporter chatter (missing torchvision ops,
    deprecation notices of its internals) out of it."""
    import logging
    import warnings
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_torch_exporter()
    try:
        size = args.size
        out = args.output or (f"{args.model.lower()}_x{args.scale}_{args.ops}_{args.precision}"
                              f"{'_%dx%d' % size if size else ''}.onnx")
        check_output(out, args.overwrite)  # before the model is built and traced
        model, weights = load_model(args.model, args.scale, args.weights, dict(args.options), args.random_weights)
        if weights is None:
            print(f"note: no --weights: {model.name} x{model.scale} with random weights (seed 0)", file=sys.stderr)
        elif not args.weights:
            print(f"note: no --weights: using the {weights} weights", file=sys.stderr)
        result = export_model(model, out, mode=args.ops, precision=args.precision, size=size, opset=args.opset,
                              overwrite=args.overwrite, weights=weights, check=not args.no_check)
    except (SrdeployError, OSError) as e:  # ExportError, CheckpointError, ...: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
