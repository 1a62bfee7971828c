"""The srdeploy metadata of an exported ONNX file: the one reader and writer.

``python -m export.onnx`` stores a JSON object under the metadata key ``srdeploy``: model, scale,
rgb_range, size rules, ops mode, precision, opset, config and weights. Every later step (the
onnxruntime and TensorRT backends, ``runtime.build``, Triton export) reads it from here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

__all__ = ["KEY", "read", "read_file", "write"]

KEY = "srdeploy"


def read(model: onnx.ModelProto) -> dict[str, Any] | None:
    """The metadata of ``model``, or None when it has none."""
    for prop in model.metadata_props:
        if prop.key == KEY:
            return json.loads(prop.value)
    return None


def read_file(path: str | Path) -> dict[str, Any] | None:
    """The metadata of the ONNX file at ``path`` (weights stored beside it are not loaded)."""
    return read(onnx.load(str(path), load_external_data=False))


def write(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Set (replace) the metadata of ``model`` in place."""
    kept = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.append(onnx.StringStringEntryProto(key=KEY, value=json.dumps(meta)))
