"""The custom nodes of ``--ops plugin`` (DESIGN.md §3): how they are emitted and how ONNX knows them.

The ops themselves (names, inputs, outputs, attributes and their types) are the contract of
:mod:`models.ops.contract`; this module reads it:

- ``bucket_sort`` / ``bucket_attention`` / ``cross_scale_fold``: the ``emitter`` part of each op,
  replacements for the ``torch.ops.srdeploy.*`` nodes of an exported program that emit
  ``srdeploy::*`` ONNX nodes through ``torch.onnx.ops.symbolic``.
- ``register_schemas()``: ONNX op schemas generated from the contract (with each op's type and
  shape inference) so that ``onnx.checker`` and ``onnx.shape_inference`` understand the custom nodes.
"""
from __future__ import annotations

from typing import Callable

import onnx
import torch
from onnx import TensorProto
from onnx.defs import OpSchema

from models.ops.contract import DOMAIN, FLOAT_DTYPES, OPS, STANDARD_DOMAINS, VERSION, fold_output_size, implements


# --------------------------------------------------------------------------- emitters

_PYTHON_TYPES = {"INT": int, "FLOAT": float}


def _attributes(op: str, **values) -> dict:
    """The node's attributes in the contract's order and types, checked: a bad value fails the
    export with its reason instead of the engine build."""
    spec = OPS[op]
    attrs = {a.name: _PYTHON_TYPES[a.type](values[a.name]) for a in spec.attributes}
    spec.check_attributes(attrs)
    return attrs


@implements("BucketSort", "emitter")
def bucket_sort(codes: torch.Tensor, num_buckets, max_buckets: int | None = None):
    """``num_buckets`` is an attribute, so it must be static: a dynamic export (where the count
    depends on the input size) writes the model's upper bound ``max_buckets``. The contract only
    asks that codes lie in [0, num_buckets), which the bound satisfies."""
    if not isinstance(num_buckets, int):
        if max_buckets is None:
            raise ValueError("BucketSort: num_buckets depends on the input size; an upper bound is needed")
        num_buckets = max_buckets
    order, rank = torch.onnx.ops.symbolic_multi_out(
        f"{DOMAIN}::BucketSort", [codes], _attributes("BucketSort", num_buckets=num_buckets),
        dtypes=[torch.int32, torch.int32], shapes=[codes.shape, codes.shape], version=VERSION)
    return order, rank


@implements("BucketAttention", "emitter")
def bucket_attention(q, v, order, rank, chunk_size: int, n_hashes: int, eps: float):
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::BucketAttention", [q, v, order, rank],
        _attributes("BucketAttention", chunk_size=chunk_size, n_hashes=n_hashes, eps=eps),
        dtype=v.dtype, shape=v.shape, version=VERSION)


@implements("CrossScaleFold", "emitter")
def cross_scale_fold(scores, patches, stride: int, padding: int):
    N, _, H, W = scores.shape
    C, kh, kw = patches.shape[2], patches.shape[3], patches.shape[4]
    shape = (N, C, fold_output_size(H, kh, stride, padding), fold_output_size(W, kw, stride, padding))
    return torch.onnx.ops.symbolic(
        f"{DOMAIN}::CrossScaleFold", [scores, patches], _attributes("CrossScaleFold", stride=stride, padding=padding),
        dtype=scores.dtype, shape=shape, version=VERSION)


# --------------------------------------------------------------------------- ONNX schemas

_ATTR_TYPES = {"INT": OpSchema.AttrType.INT, "FLOAT": OpSchema.AttrType.FLOAT}
_ONNX_TYPES = {"int32": "tensor(int32)", "float32": "tensor(float)", "float16": "tensor(float16)"}
#: the contract's element types in a schema: "float" tensors share the type variable T
_TENSOR_TYPES = {"int32": _ONNX_TYPES["int32"], "float": "T"}
_FLOAT_TYPES = [_ONNX_TYPES[t] for t in FLOAT_DTYPES]
_SHAPE_INFERENCE: dict[str, Callable] = {}


def _infers(op: str):
    """Decorator: the ONNX type and shape inference function of ``op``'s schema."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")

    def register(fn):
        _SHAPE_INFERENCE[op] = fn
        return fn

    return register


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


@_infers("BucketSort")
def _infer_bucket_sort(ctx) -> None:
    dims = _dims(ctx.get_input_type(0))
    _set_output(ctx, 0, TensorProto.INT32, dims)
    _set_output(ctx, 1, TensorProto.INT32, dims)


@_infers("BucketAttention")
def _infer_bucket_attention(ctx) -> None:
    v = ctx.get_input_type(1)
    _set_output(ctx, 0, v.tensor_type.elem_type, _dims(v))


@_infers("CrossScaleFold")
def _infer_cross_scale_fold(ctx) -> None:
    scores, patches = ctx.get_input_type(0), ctx.get_input_type(1)
    s_dims, p_dims = _dims(scores), _dims(patches)
    dims = None
    if s_dims is not None and p_dims is not None and len(s_dims) == 4 and len(p_dims) == 5:
        stride, padding = ctx.get_attribute("stride").i, ctx.get_attribute("padding").i

        def out_size(d, k):  # known when both are known
            if d.HasField("dim_value") and k.HasField("dim_value"):
                return fold_output_size(d.dim_value, k.dim_value, stride, padding)
            return None

        dims = [s_dims[0], p_dims[2], out_size(s_dims[2], p_dims[3]), out_size(s_dims[3], p_dims[4])]
    _set_output(ctx, 0, scores.tensor_type.elem_type, dims)


def schemas() -> list[OpSchema]:
    """One ONNX schema per op of the contract: its inputs, outputs and their types, required attributes."""
    result = []
    for op in OPS.values():
        param = OpSchema.FormalParameter
        tensors = op.inputs + op.outputs
        schema = OpSchema(
            op.name, DOMAIN, VERSION, f"srdeploy custom op {op.name} (see DESIGN.md §3)",
            inputs=[param(t.name, _TENSOR_TYPES[t.dtype]) for t in op.inputs],
            outputs=[param(t.name, _TENSOR_TYPES[t.dtype]) for t in op.outputs],
            type_constraints=[("T", _FLOAT_TYPES, "floating-point tensors")] if any(
                t.dtype == "float" for t in tensors) else [],
            attributes=[OpSchema.Attribute(a.name, _ATTR_TYPES[a.type], a.valid, required=True) for a in op.attributes],
        )
        try:
            schema.set_type_and_shape_inference_function(_SHAPE_INFERENCE[op.name])
        except KeyError:
            raise LookupError(f"{op.name} has no ONNX shape inference in {__name__} (decorate one with @_infers)") from None
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
    return [n for n in model.graph.node if n.domain not in STANDARD_DOMAINS]
