"""Graph clean-up with onnx-graphsurgeon, and the checks every exported file must pass.

``cleanup`` folds constants (never evaluating a custom node: onnxruntime does the folding and knows
every standard domain but no srdeploy op), removes dead nodes and sorts the graph topologically.
``check`` runs the ONNX checker and strict shape inference with the srdeploy schemas registered.
``trt_violations`` lists what TensorRT's ONNX parser refuses in a plain (``--ops onnx``) graph.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from models.ops.contract import ONNX_DOMAINS, STANDARD_DOMAINS

from . import ops_plugin

# TensorRT caps TopK's K below this (onnx-tensorrt docs/operators.md).
TRT_TOPK_MAX = 3840
# Ops TensorRT's ONNX parser does not take (Col2Im), or that make the output non-deterministic.
TRT_UNSUPPORTED = {"Col2Im"}
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


def cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = gs.import_onnx(model)
    graph.fold_constants(should_exclude_node=lambda node: node.domain not in STANDARD_DOMAINS)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    # graphsurgeon rebuilds the model: carry over what it does not know about.
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    return out


def check(model: onnx.ModelProto) -> None:
    """ONNX checker (full) and strict shape inference; raises onnx's errors."""
    ops_plugin.register_schemas()
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter((n.domain or "ai.onnx", n.op_type) for n in model.graph.node)


def _constant_ints(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = onnx.numpy_helper.to_array(a.t)
    return values


def trt_violations(model: onnx.ModelProto) -> list[str]:
    """What keeps a graph from TensorRT's parser without plugins (empty list: none found).

    Checks: custom domains and onnxruntime's own (ai.onnx.ml, com.microsoft), Col2Im, Random*, TopK
    whose K is not a constant below 3840, Conv / ConvTranspose whose weights are not initializers
    (TensorRT builds them into the engine), If/Loop (data-dependent control flow)."""
    found = []
    constants = _constant_ints(model)
    initializers = {t.name for t in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    for n in model.graph.node:
        where = f"{n.op_type} node {n.name!r}"
        if n.domain not in STANDARD_DOMAINS:
            found.append(f"{where}: custom domain {n.domain!r}")
        elif n.domain not in ONNX_DOMAINS:
            found.append(f"{where}: domain {n.domain!r} is onnxruntime's, not ONNX's (TensorRT parses ONNX ops)")
        elif n.op_type in TRT_UNSUPPORTED:
            found.append(f"{where}: not supported by TensorRT")
        elif n.op_type in RANDOM_OPS:
            found.append(f"{where}: random op")
        elif n.op_type in ("If", "Loop", "Scan"):
            found.append(f"{where}: control flow")
        elif n.op_type == "TopK":
            k = constants.get(n.input[1])
            if k is None or int(np.max(k)) >= TRT_TOPK_MAX:
                found.append(f"{where}: K {'is not a constant' if k is None else int(np.max(k))} "
                             f"(TensorRT needs a constant K < {TRT_TOPK_MAX})")
        elif n.op_type in ("Conv", "ConvTranspose") and n.input[1] not in initializers:
            found.append(f"{where}: weights computed in the graph (TensorRT needs initializers)")
    return found
