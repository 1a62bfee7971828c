"""The op contract of DESIGN.md §3: the one description of srdeploy's custom ops every layer reads.

Per op: its ONNX/TensorRT name, the ``torch.ops.srdeploy`` name, inputs and outputs with their
element types and ranks, attributes with their types and valid ranges, and the folder that holds
its CUDA kernel and TensorRT plugin. Each implementation of an op registers itself here with
:func:`implements` (a decorator), one per part:

- ``reference``: the PyTorch oracle (:mod:`models.ops.reference`)
- ``decomposition``: standard ONNX ops for ``--ops onnx`` (:mod:`export.ops_onnx`)
- ``emitter``: the custom node for ``--ops plugin`` (:mod:`export.ops_plugin`)
- ``ort``: the onnxruntime implementation for CPU runs of custom-op graphs (:mod:`export.ort`)
- ``kernel``: the ctypes binding of the CUDA kernel (:mod:`plugins.kernels`)

The TensorRT plugin (C++) cannot register from Python: its creator's fields are checked against
this contract by the tests, through the interface driver.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

__all__ = ["DOMAIN", "VERSION", "STANDARD_DOMAINS", "PARTS", "TensorSpec", "AttributeSpec", "OpSpec", "OPS",
           "implements", "implementation", "registered"]

DOMAIN = "srdeploy"  # ONNX domain = TensorRT plugin namespace
VERSION = 1  # ONNX op-set version of DOMAIN; TensorRT plugin version "1"
#: ONNX domains that are not custom ops (a node in any other domain is one)
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
PARTS = ("reference", "decomposition", "emitter", "ort", "kernel")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int32", or "float" (float32 or float16, the same for all float tensors of the op)
    rank: int


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    type: str  # "INT" or "FLOAT" (ONNX attribute type; TensorRT field type kINT32 / kFLOAT32)
    minimum: float  # valid when value >= minimum (or > minimum where exclusive)
    exclusive: bool = False

    def problem(self, value) -> str | None:
        """Why ``value`` is not valid for this attribute, or None."""
        if self.type == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{self.name} must be a whole number, got {value!r}"
        if self.type == "FLOAT" and not isinstance(value, (int, float)):
            return f"{self.name} must be a number, got {value!r}"
        if value < self.minimum or (self.exclusive and value == self.minimum):
            return f"{self.name} must be {'>' if self.exclusive else '≥'} {self.minimum:g}, got {value}"
        return None


@dataclass(frozen=True)
class OpSpec:
    name: str  # ONNX op type and TensorRT plugin name
    torch_name: str  # torch.ops.srdeploy.<torch_name>
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttributeSpec, ...]
    folder: str  # plugins/<folder>/: CUDA kernel, launcher header, IPluginV3 class, README

    def check_attributes(self, values: dict) -> None:
        """ValueError naming the first missing, unknown or out-of-range attribute."""
        names = [a.name for a in self.attributes]
        unknown = sorted(set(values) - set(names))
        missing = [n for n in names if n not in values]
        if unknown or missing:
            raise ValueError(f"{self.name}: attributes {', '.join(names)} expected; "
                             + (f"unknown {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"))
        for a in self.attributes:
            why = a.problem(values[a.name])
            if why:
                raise ValueError(f"{self.name}: {why}")


_I, _F = "int32", "float"
OPS: dict[str, OpSpec] = {op.name: op for op in (
    OpSpec("BucketSort", "bucket_sort",
           inputs=(TensorSpec("codes", _I, 2),),
           outputs=(TensorSpec("order", _I, 2), TensorSpec("rank", _I, 2)),
           attributes=(AttributeSpec("num_buckets", "INT", 1),),
           folder="bucketSort"),
    OpSpec("BucketAttention", "bucket_attention",
           inputs=(TensorSpec("q", _F, 3), TensorSpec("v", _F, 3), TensorSpec("order", _I, 2), TensorSpec("rank", _I, 2)),
           outputs=(TensorSpec("out", _F, 3),),
           attributes=(AttributeSpec("chunk_size", "INT", 1), AttributeSpec("n_hashes", "INT", 1),
                       AttributeSpec("eps", "FLOAT", 0, exclusive=True)),
           folder="bucketAttention"),
    OpSpec("CrossScaleFold", "cross_scale_fold",
           inputs=(TensorSpec("scores", _F, 4), TensorSpec("patches", _F, 5)),
           outputs=(TensorSpec("out", _F, 4),),
           attributes=(AttributeSpec("stride", "INT", 1), AttributeSpec("padding", "INT", 0)),
           folder="crossScaleFold"),
)}

_REGISTRY: dict[str, dict[str, Callable]] = {part: {} for part in PARTS}
F = TypeVar("F", bound=Callable)


def implements(op: str, part: str) -> Callable[[F], F]:
    """Decorator: register the function as ``part`` of ``op`` (one per op and part)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; parts: {', '.join(PARTS)}")

    def register(fn: F) -> F:
        _REGISTRY[part][op] = fn
        return fn

    return register


def implementation(op: str, part: str) -> Callable:
    """The registered ``part`` of ``op`` (its module must have been imported)."""
    try:
        return _REGISTRY[part][op]
    except KeyError:
        raise LookupError(f"{op} has no registered {part!r} implementation (is its module imported?)") from None


def registered(part: str) -> dict[str, Callable]:
    """op name -> implementation, for the ops that registered ``part``."""
    return dict(_REGISTRY[part])
