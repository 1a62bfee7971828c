"""Running srdeploy ONNX graphs in onnxruntime: sessions, and the srdeploy custom ops for it.

    session = make_session("nlsn_x2.onnx", "cpu")   # custom ops registered when the graph has them

Custom-op graphs (``--ops plugin``) run on CPU through Python implementations of the ops of
:mod:`models.ops.contract` (the ``ort`` part of each op) registered with onnxruntime by
onnxruntime-extensions (``pip install onnxruntime-extensions``), with the input, output and
attribute types the contract gives. They call the PyTorch references of models/ops, so they
compute exactly what the oracle computes. onnxruntime-extensions' Python ops take fp32
only: an fp16 graph gets Cast nodes around its custom nodes in the in-memory copy onnxruntime
runs (the file is not changed), the way onnxruntime's CPU provider itself computes fp16 ops it
has no fp16 kernel for.

This lives below ``runtime``: the exporter checks each file it writes in onnxruntime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from models import ops as reference
from models.errors import SrdeployError
from models.ops.contract import DOMAIN, OPS, STANDARD_DOMAINS, implements, registered


class MissingCustomOpsError(SrdeployError, RuntimeError):
    """An ONNX file with custom nodes this onnxruntime cannot run."""


class OrtSetupError(SrdeployError, RuntimeError, ValueError):
    """onnxruntime cannot be set up as asked (no CUDA provider, an unreadable file, a full disk):
    a ValueError, so that callers report it as one line like any other bad input."""

# --------------------------------------------------------------------------- custom ops

@implements("BucketSort", "ort")
def _bucket_sort(codes: np.ndarray, num_buckets: int):
    order, rank = reference.bucket_sort_reference(torch.from_numpy(codes), num_buckets)
    return order.numpy(), rank.numpy()


@implements("BucketAttention", "ort")
def _bucket_attention(q, v, order, rank, chunk_size: int, n_hashes: int, eps: float):
    t = torch.from_numpy
    return reference.bucket_attention_reference(t(q), t(v), t(order), t(rank), chunk_size, n_hashes, eps).numpy()


@implements("CrossScaleFold", "ort")
def _cross_scale_fold(scores, patches, stride: int, padding: int):
    return reference.cross_scale_fold_reference(torch.from_numpy(scores), torch.from_numpy(patches),
                                                stride, padding).numpy()


_registered = False


def custom_ops_available() -> bool:
    """True when onnxruntime-extensions is installed (and the srdeploy ops can be registered)."""
    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError:
        return False
    return True


def register_custom_ops() -> str:
    """Register the srdeploy Python ops with onnxruntime-extensions (once per process) and return
    the path of the library to pass to ``SessionOptions.register_custom_ops_library``."""
    global _registered
    try:
        from onnxruntime_extensions import PyCustomOpDef as T, get_library_path, onnx_op
    except ImportError:
        raise MissingCustomOpsError("onnxruntime-extensions is not installed") from None
    if not _registered:
        # Python ops take fp32 only ("float" tensors: fp16 nodes get Casts, see _cast_custom_nodes_to_fp32);
        # ONNX INT attributes are int64.
        tensor_types = {"int32": T.dt_int32, "float": T.dt_float}
        attribute_types = {"INT": T.dt_int64, "FLOAT": T.dt_float}
        for name, fn in registered("ort").items():
            op = OPS[name]
            # "domain::Op" puts the op in that domain (onnxruntime-extensions parses the prefix).
            onnx_op(op_type=f"{DOMAIN}::{name}", inputs=[tensor_types[t.dtype] for t in op.inputs],
                    outputs=[tensor_types[t.dtype] for t in op.outputs],
                    attrs={a.name: attribute_types[a.type] for a in op.attributes})(fn)
        _install_array_results()
        _registered = True
    return get_library_path()


def _install_array_results() -> None:
    """onnxruntime-extensions hands Python-op results back as Python lists (``tolist()``), which
    costs seconds on feature maps; numeric results can go back as the numpy arrays themselves (its
    C++ side casts either to an array). Falls back silently to its own hook if its internals differ."""
    try:
        from onnxruntime_extensions._ocos import Opdef, PyCustomOpDef
    except ImportError:
        return

    def invoke(op_id, feed, attributes):
        op = Opdef._odlist[op_id]
        result = op.body(*feed, **op.cast_attributes(attributes))
        parts = []
        for r in (result if isinstance(result, tuple) else (result,)):
            r = np.asarray(r)
            parts += [r.shape, np.ascontiguousarray(r).reshape(-1) if r.dtype.kind in "biuf" else r.flatten().tolist()]
        return (op_id, *parts)

    PyCustomOpDef.install_hooker(invoke)


def custom_op_types(model: onnx.ModelProto) -> list[str]:
    """'domain::Op' of every node outside the standard domains (sorted, unique)."""
    return sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})


def _cast_custom_nodes_to_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 inputs/outputs of srdeploy nodes go through fp32 Casts (the Python ops are fp32-only)."""
    from onnx import TensorProto, helper
    types = {}
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    new_nodes = []
    for node in model.graph.node:
        if node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if types.get(name) == TensorProto.FLOAT16:
                cast = f"{name}__fp32_for_{node.name}"
                new_nodes.append(helper.make_node("Cast", [name], [cast], to=TensorProto.FLOAT, name=cast))
                node.input[i] = cast
        after = []
        for i, name in enumerate(node.output):
            if types.get(name) == TensorProto.FLOAT16:
                raw = f"{name}__fp32"
                node.output[i] = raw
                after.append(helper.make_node("Cast", [raw], [name], to=TensorProto.FLOAT16, name=f"{name}__to_fp16"))
        new_nodes.append(node)
        new_nodes.extend(after)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return model


# --------------------------------------------------------------------------- sessions

def providers_for(device: str) -> list:
    import onnxruntime as ort
    available = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise OrtSetupError(f"device {device!r}: this onnxruntime has no CUDA provider (it has "
                                f"{', '.join(available)}); install onnxruntime-gpu or use device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device != "cpu":
        raise OrtSetupError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    return ["CPUExecutionProvider"]


def cuda_available() -> bool:
    """True when this onnxruntime has the CUDA provider (what ``--device auto`` picks it by)."""
    import onnxruntime as ort
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _load_onnx(path: Path, **kwargs) -> onnx.ModelProto:
    """onnx.load with a one-line error for a file that is not ONNX (protobuf raises DecodeError)."""
    try:
        return onnx.load(str(path), **kwargs)
    except Exception as e:  # DecodeError, OSError, ValueError: all mean "not a readable ONNX file"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OrtSetupError(f"{path}: not a readable ONNX file ({reason}); export one with "
                            f"python -m export.onnx") from None


def make_session(onnx_model: str | Path | onnx.ModelProto, device: str = "cpu", *, custom_ops: bool = True,
                 threads: int | None = None, profile: str | None = None):
    """An ``onnxruntime.InferenceSession`` for an srdeploy ONNX file, with the srdeploy custom ops
    registered when the graph has them. ``custom_ops=False`` behaves like an onnxruntime without
    them. ``profile``: file prefix for onnxruntime's per-op profile."""
    import onnxruntime as ort
    providers = providers_for(device)  # a missing provider is known before the file is read
    model = onnx_model if isinstance(onnx_model, onnx.ModelProto) else _load_onnx(Path(onnx_model))
    where = "the model" if isinstance(onnx_model, onnx.ModelProto) else str(onnx_model)
    needed = custom_op_types(model)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    source: str | bytes = str(onnx_model) if not isinstance(onnx_model, onnx.ModelProto) else model.SerializeToString()
    if needed:
        implemented = {f"{DOMAIN}::{name}" for name in registered("ort")}
        unknown = [op for op in needed if op not in implemented]
        if unknown or not custom_ops or not custom_ops_available():
            missing = unknown or needed
            raise MissingCustomOpsError(
                f"{where} holds custom ops this onnxruntime lacks: {', '.join(missing)}; "
                f"export with --ops onnx" + ("" if unknown else " or install onnxruntime-extensions"))
        options.register_custom_ops_library(register_custom_ops())
        source = _cast_custom_nodes_to_fp32(onnx.ModelProto.FromString(model.SerializeToString())).SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as e:  # onnxruntime's InvalidGraph, InvalidProtobuf, Fail, NotImplemented
        if type(e).__module__.startswith("onnxruntime"):
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OrtSetupError(f"{where}: onnxruntime cannot load it ({reason})") from None
        raise
