"""The op contract of DESIGN.md §3: the one description of srdeploy's custom ops every layer reads.

Per op: its ONNX/TensorRT name, the ``torch.ops.srdeploy`` name, inputs and outputs with their
element types and ranks, attributes with their types and valid ranges, and the folder that holds
its CUDA kernel and TensorRT plugin. Each implementation of an op registers itself here with
:func:`implements` (a decorator), one per part; :data:`PART_MODULES` says which module holds each part:

- ``reference``: the PyTorch oracle (:mod:`models.ops.reference`)
- ``decomposition``: standard ONNX ops for ``--ops onnx`` (:mod:`export.ops_onnx`)
- ``emitter``: the custom node for ``--ops plugin`` (:mod:`export.ops_plugin`)
- ``ort``: the onnxruntime implementation for CPU runs of custom-op graphs (:mod:`export.ort`)
- ``kernel``: the ctypes binding of the CUDA kernel (:mod:`plugins.kernels`)

What reads the contract instead of restating it: the ONNX schemas (``export.ops_plugin.schemas``),
the onnxruntime-extensions registration (``export.ort.register_custom_ops``), the export's
decomposition table (``export.onnx.decomposition_table``), the kernels' attribute checks and their
registration with ``torch.library`` (``plugins.kernels``). The TensorRT plugins (C++) and the
READMEs in ``plugins/<folder>/`` cannot read it: ``tests/test_op_contract.py`` checks them against
it (the creators' fields through the interface driver, the README tables as text), and checks that
every op has all its parts.

Attribute ranges are the ones the TensorRT plugins' creators accept (``createPlugin``); the kernels'
C ABI adds limits of its own (``n_hashes ≤ 256``, ``chunk_size ≤ L``, a non-empty fold output).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, TypeVar

from models.errors import SrdeployError

__all__ = ["DOMAIN", "VERSION", "STANDARD_DOMAINS", "ONNX_DOMAINS", "FLOAT_DTYPES", "TRT_FIELD_TYPES", "PARTS",
           "PART_MODULES", "TensorSpec", "AttributeSpec", "OpSpec", "OpAttributeError", "OPS", "implements",
           "implementation", "registered", "fold_output_size"]

DOMAIN = "srdeploy"  # ONNX domain = TensorRT plugin namespace = torch.library namespace
VERSION = 1  # ONNX op-set version of DOMAIN; TensorRT plugin version "1"
#: ONNX's own operator set (the only domain TensorRT's parser takes without plugins)
ONNX_DOMAINS = ("", "ai.onnx")
#: ONNX domains that are not custom ops (a node in any other domain is one); onnxruntime runs them all
STANDARD_DOMAINS = ONNX_DOMAINS + ("ai.onnx.ml", "com.microsoft")
#: the element types a "float" tensor may have (one of them for all float tensors of a node)
FLOAT_DTYPES = ("float32", "float16")
#: TensorRT plugin field type (PluginFieldType) of each attribute type
TRT_FIELD_TYPES = {"INT": "kINT32", "FLOAT": "kFLOAT32"}
PARTS = ("reference", "decomposition", "emitter", "ort", "kernel")
#: where each part is implemented (importing the module registers its parts)
PART_MODULES = {"reference": "models.ops.reference", "decomposition": "export.ops_onnx",
                "emitter": "export.ops_plugin", "ort": "export.ort", "kernel": "plugins.kernels"}


class OpAttributeError(SrdeployError, ValueError):
    """An op attribute that is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int32", or "float" (one of FLOAT_DTYPES, the same for all float tensors of the op)
    rank: int


@dataclass(frozen=True)
class AttributeSpec:
    name: str
    type: str  # "INT" or "FLOAT" (ONNX attribute type; TensorRT field type: TRT_FIELD_TYPES)
    minimum: float  # valid when value >= minimum (or > minimum where exclusive); FLOAT values also finite
    exclusive: bool = False

    @property
    def valid(self) -> str:
        """The valid range as text ("≥ 1", "> 0"), as the READMEs state it."""
        return f"{'>' if self.exclusive else '≥'} {self.minimum:g}"

    def problem(self, value) -> str | None:
        """Why ``value`` is not valid for this attribute, or None."""
        if self.type == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{self.name} must be a whole number, got {value!r}"
        if self.type == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{self.name} must be a number, got {value!r}"
        if not math.isfinite(value) or value < self.minimum or (self.exclusive and value == self.minimum):
            return f"{self.name} must be finite and {self.valid}, got {value}" if self.type == "FLOAT" else \
                f"{self.name} must be {self.valid}, got {value}"
        return None


@dataclass(frozen=True)
class OpSpec:
    name: str  # ONNX op type and TensorRT plugin name
    torch_name: str  # torch.ops.srdeploy.<torch_name>
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttributeSpec, ...]
    folder: str  # plugins/<folder>/: CUDA kernel, launcher header, IPluginV3 class, README

    @property
    def torch_qualname(self) -> str:
        """The ``torch.library`` name, e.g. ``srdeploy::bucket_sort``."""
        return f"{DOMAIN}::{self.torch_name}"

    def check_attributes(self, values: dict) -> None:
        """OpAttributeError (a ValueError) naming the first missing, unknown or out-of-range attribute."""
        names = [a.name for a in self.attributes]
        unknown = sorted(set(values) - set(names))
        missing = [n for n in names if n not in values]
        if unknown or missing:
            raise OpAttributeError(f"{self.name}: attributes {', '.join(names)} expected; "
                                   + (f"unknown {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"))
        for a in self.attributes:
            why = a.problem(values[a.name])
            if why:
                raise OpAttributeError(f"{self.name}: {why}")


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
                       AttributeSpec("eps", "FLOAT", 0)),
           folder="bucketAttention"),
    OpSpec("CrossScaleFold", "cross_scale_fold",
           inputs=(TensorSpec("scores", _F, 4), TensorSpec("patches", _F, 5)),
           outputs=(TensorSpec("out", _F, 4),),
           attributes=(AttributeSpec("stride", "INT", 1), AttributeSpec("padding", "INT", 0)),
           folder="crossScaleFold"),
)}

def fold_output_size(size, kernel, stride, padding):
    """CrossScaleFold's output height (width) for input height (width) ``size`` and patch size ``kernel``:
    ``(size - 1)·stride - 2·padding + kernel`` (DESIGN.md §3). Plain arithmetic, so ints and the
    symbolic sizes of tracing and export alike."""
    return (size - 1) * stride - 2 * padding + kernel


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
    """The registered ``part`` of ``op`` (its module, PART_MODULES[part], must have been imported)."""
    try:
        return _REGISTRY[part][op]
    except KeyError:
        raise LookupError(f"{op} has no registered {part!r} implementation "
                          f"(is {PART_MODULES.get(part, part)} imported?)") from None


def registered(part: str) -> dict[str, Callable]:
    """op name -> implementation, for the ops that registered ``part``."""
    return dict(_REGISTRY[part])
