"""Inference backends: one interface that the pipeline, the CLIs and the benchmarks share.

    backend = open_backend("torch", "NLSN_x2.pt", device="cuda")    # or "ort" (ONNX file or checkpoint),
    y = backend(x)                                                  # "trt" (an engine of runtime.build)

The interface and its contract are in :mod:`.base` (:class:`Backend`); :data:`BACKENDS` lists the
implemented ones by CLI name. :class:`OrtBackend` and :class:`TrtBackend` are imported on first use,
so that onnxruntime and TensorRT load only when asked for.
"""
from __future__ import annotations

from pathlib import Path

from .base import (Backend, BackendError, ExportedBackend, MetadataError, WeightsRequired, check_match,
                   default_entry, default_weights, onnx_metadata, resolve_device, resolve_weights)
from .torch_backend import Fp32Statistics, TorchBackend

__all__ = [
    "Backend", "ExportedBackend", "TorchBackend", "OrtBackend", "TrtBackend", "Fp32Statistics", "BACKENDS",
    "BackendError", "WeightsRequired", "MetadataError", "default_weights", "default_entry", "resolve_weights",
    "resolve_device", "check_match", "onnx_metadata", "open_backend", "cache_dir", "cached_export", "CACHE_ENV",
]


def _ort_backend() -> type[Backend]:
    from .ort_backend import OrtBackend

    return OrtBackend


def _trt_backend() -> type[Backend]:
    from .trt_backend import TrtBackend

    return TrtBackend


#: backends by CLI name: a function returning the class, so that each backend's libraries
#: (onnxruntime, TensorRT) are imported only when it is used
BACKENDS = {"torch": lambda: TorchBackend, "ort": _ort_backend, "trt": _trt_backend}


def open_backend(kind: str, weights: str | Path, *, model: str | None = None, scale: int | None = None,
                 device: str | None = None) -> Backend:
    """``BACKENDS[kind].open(weights, ...)``: raises :class:`BackendError` (one line) when it cannot."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[kind]().open(Path(weights), model=model, scale=scale, device=device)


def __getattr__(name: str):  # PEP 562: the backends that import heavy libraries, and the export cache
    if name == "OrtBackend":
        return _ort_backend()
    if name == "TrtBackend":
        return _trt_backend()
    if name in ("cache_dir", "cached_export", "CACHE_ENV"):
        from . import export_cache

        return getattr(export_cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
