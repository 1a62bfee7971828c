"""The custom nodes of ``--ops plugin`` (DESIGN.md §3): how they are emitted and how ONNX knows them.

- ``DOMAIN``, ``OPS``: the contract (op names, inputs, outputs, attributes and their types), the
  single place the exporter, the checks, the tests and the onnxruntime registration read it from.
- ``bucket_sort`` / ``bucket_attention`` / ``cross_scale_fold``: replacements for the
  ``torch.ops.srdeploy.*`` nodes of an exported program that emit ``srdeploy::*`` ONNX nodes
  through ``torch.onnx.ops.symbolic``.
- ``register_schemas()``: ONNX op schemas (with type and shape inference) so that
  ``onnx.checker`` and ``onnx.shape_inference`` understand the custom nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch
from onnx import TensorProto
from onnx.defs import OpSchema

DOMAIN = "srdeploy"
VERSION = 1


@dataclass(frozen=True)
class OpContract:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, str]  # name -> "INT" | "FLOAT"


OPS: dict[str, OpContract] = {
    "BucketSort": OpContract("BucketSort", ("codes",), ("order", "rank"), {"num_buckets": "INT"}),
    "BucketAttention": OpContract("BucketAttention", ("q", "v", "order", "rank"), ("out",),
                                  {"chunk_size": "INT", "n_hashes": "INT", "eps": "FLOAT"}),
    "CrossScaleFold": OpContract("CrossScaleFold", ("scores", "patches"), ("out",),
                                 {"stride": "INT", "padding": "INT"}),
}


# --------------------------------------------------------------------------- emitters

def bucket_sort(codes: torch.Tensor, num_buckets, max_buckets: int | None = None):
    """``num_buckets`` is an attribute, so it must be static: a dynamic export (where the count
    depends on the input size) writes the model's upper bound ``max_buckets``. The contract only
    asks that codes lie in [0, num_buckets), which the bound satisfies."""
    if not isinstance(num_buckets, int):
        if max_buckets is None:
            raise ValueError("BucketSort: num_buckets depends on the input size; an upper bound is needed")
        num_buckets = max_buckets
    order, rank = torch.onnx.ops.symbolic_multi_out(
        f"{DOMAIN}::BucketSort", [codes], {"num_buckets": int(num_buckets)},
        dtypes=[torch.int32, torch.int32], shapes=[codes.shape, codes.shape], version=VERSION)
    return order, rank


def bucket_attention(q, v, order, rank, chunk_size: int, n_hashes: int, eps: float):
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::BucketAttention", [q, v, order, rank],
        {"chunk_size": int(chunk_size), "n_hashes": int(n_hashes), "eps": float(eps)},
        dtype=v.dtype, shape=v.shape, version=VERSION)


def cross_scale_fold(scores, patches, stride: int, padding: int):
    N, _, H, W = scores.shape
    C, kh, kw = patches.shape[2], patches.shape[3], patches.shape[4]
    shape = (N, C, (H - 1) * stride - 2 * padding + kh, (W - 1) * stride - 2 * padding + kw)
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::CrossScaleFold", [scores, patches], {"stride": int(stride), "padding": int(padding)},
        dtype=scores.dtype, shape=shape, version=VERSION)


# --------------------------------------------------------------------------- ONNX schemas

_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_ATTR_TYPES = {"INT": OpSchema.AttrType.INT, "FLOAT": OpSchema.AttrType.FLOAT}


def _dims(type_proto: TensorProto):
    shape = type_proto.tensor_type.shape
    return list(shape.dim) if type_proto.tensor_type.HasField("shape") else None


def _set_output(ctx, index: int, elem_type: int, dims) -> None:
    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem_type
    if dims is not None:
        out.tensor_type.shape.SetInParent()
        for d in dims:
            new = out.tensor_type.shape.dim.add()
            if isinstance(d, int):
                new.dim_value = d
            elif d is not None:
                new.CopyFrom(d)
    ctx.set_output_type(index, out)


def _infer_bucket_sort(ctx) -> None:
    dims = _dims(ctx.get_input_type(0))
    _set_output(ctx, 0, TensorProto.INT32, dims)
    _set_output(ctx, 1, TensorProto.INT32, dims)


def _infer_bucket_attention(ctx) -> None:
    v = ctx.get_input_type(1)
    _set_output(ctx, 0, v.tensor_type.elem_type, _dims(v))


def _infer_cross_scale_fold(ctx) -> None:
    scores, patches = ctx.get_input_type(0), ctx.get_input_type(1)
    s_dims, p_dims = _dims(scores), _dims(patches)
    dims = None
    if s_dims is not None and p_dims is not None and len(s_dims) == 4 and len(p_dims) == 5:
        stride, padding = ctx.get_attribute("stride").i, ctx.get_attribute("padding").i

        def out_size(d, k):  # (H-1)·stride - 2·padding + k when both are known, else unknown
            if d.HasField("dim_value") and k.HasField("dim_value"):
                return (d.dim_value - 1) * stride - 2 * padding + k.dim_value
            return None

        dims = [s_dims[0], p_dims[2], out_size(s_dims[2], p_dims[3]), out_size(s_dims[3], p_dims[4])]
    _set_output(ctx, 0, scores.tensor_type.elem_type, dims)


_INFERENCE = {"BucketSort": _infer_bucket_sort, "BucketAttention": _infer_bucket_attention,
              "CrossScaleFold": _infer_cross_scale_fold}
_TYPES = {  # formal parameter -> type string
    "codes": "tensor(int32)", "order": "tensor(int32)", "rank": "tensor(int32)",
    "q": "T", "v": "T", "out": "T", "scores": "T", "patches": "T",
}


def schemas() -> list[OpSchema]:
    result = []
    for op in OPS.values():
        param = OpSchema.FormalParameter
        schema = OpSchema(
            op.name, DOMAIN, VERSION, f"srdeploy custom op {op.name} (see DESIGN.md §3)",
            inputs=[param(n, _TYPES[n]) for n in op.inputs],
            outputs=[param(n, _TYPES[n]) for n in op.outputs],
            type_constraints=[("T", _FLOATS, "floating-point tensors")] if any(
                _TYPES[n] == "T" for n in op.inputs + op.outputs) else [],
            attributes=[OpSchema.Attribute(a, _ATTR_TYPES[t], "", required=True) for a, t in op.attributes.items()],
        )
        schema.set_type_and_shape_inference_function(_INFERENCE[op.name])
        result.append(schema)
    return result


def register_schemas() -> None:
    """Make the srdeploy ops known to onnx (checker, shape inference); idempotent."""
    for schema in schemas():
        try:
            onnx.defs.get_schema(schema.name, VERSION, DOMAIN)
        except onnx.defs.SchemaError:
            onnx.defs.register_schema(schema)


def custom_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes outside the standard ONNX domains."""
    return [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
