"""Load libsrdeploy_kernels.so with ctypes and make it the CUDA implementation of the ops.

    from plugins import kernels
    kernels.enable()            # torch.ops.srdeploy.* on CUDA tensors now use the kernels
    with kernels.reference_only():
        ...                    # CUDA tensors use the PyTorch reference again (benchmarks, tests)

``enable()`` only registers CUDA implementations with ``torch.library`` (``register_kernel("cuda")``):
the ``kernel`` part of each op of :mod:`models.ops.contract`, under the contract's torch name. It
touches neither CUDA nor the library; the layer that picks a CUDA device calls it (models.ops does not). The library is loaded on the first CUDA call, from
``$SRDEPLOY_KERNELS_LIB`` if set, else ``plugins/build/libsrdeploy_kernels.so`` (``python -m plugins.build``).
If it cannot be loaded, CUDA tensors use the reference and one warning says why and how to build
it. Kernels run on the current stream (``torch.cuda.current_stream()``) with workspace from the
torch caching allocator, so they order correctly with surrounding torch work and CUDA graphs.
CPU tensors always use the reference; so do dtypes the kernels lack (bf16, fp64) and shapes no kernel
variant fits on this GPU (``SRD_ERR_UNSUPPORTED``), with one warning per reason. An attribute outside the
contract raises ``OpAttributeError`` (a ValueError) before any call; every other failure (a CUDA error,
a bad argument) raises :class:`KernelError`: a broken GPU must not pass silently as a slow one.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any

import torch

from models import ops
from models.errors import SrdeployError
from models.ops.contract import FLOAT_DTYPES, OPS, fold_output_size, implements, registered
from .build import DEFAULT_BUILD_DIR, LIB_NAME

__all__ = ["ABI_VERSION", "LIB_ENV", "Kernels", "KernelError", "KernelsUnavailable", "enable", "get",
           "library_path", "load", "reference_only", "status", "STATUS"]

LIB_ENV = "SRDEPLOY_KERNELS_LIB"
ABI_VERSION = 1
STATUS = {0: "SRD_SUCCESS", 1: "SRD_ERR_NULL_POINTER", 2: "SRD_ERR_INVALID_SIZE", 3: "SRD_ERR_INVALID_ATTRIBUTE",
          4: "SRD_ERR_UNSUPPORTED_DTYPE", 5: "SRD_ERR_WORKSPACE_TOO_SMALL", 6: "SRD_ERR_UNSUPPORTED", 7: "SRD_ERR_CUDA"}
SRD_SUCCESS, SRD_ERR_UNSUPPORTED = 0, 6
DTYPES = {torch.float32: 0, torch.float16: 1}  # the contract's FLOAT_DTYPES -> the C ABI's SRD_FLOAT32, SRD_FLOAT16

logger = logging.getLogger("srdeploy.plugins")

_p, _i64, _sz, _int, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t, ctypes.c_int, ctypes.c_float
_psz = ctypes.POINTER(ctypes.c_size_t)
_SIGNATURES = {
    "srd_abi_version": ([], _int),
    "srd_status_string": ([_int], ctypes.c_char_p),
    "srd_last_error_message": ([], ctypes.c_char_p),
    "srd_bucket_sort_workspace_size": ([_i64, _i64, _i64, _psz], _int),
    "srd_bucket_sort": ([_p, _p, _p, _i64, _i64, _i64, _p, _sz, _p], _int),
    "srd_bucket_attention_workspace_size": ([_i64] * 6 + [_int, _psz], _int),
    "srd_bucket_attention": ([_p] * 5 + [_i64] * 6 + [_f32, _int, _p, _sz, _p], _int),
    "srd_cross_scale_fold_workspace_size": ([_i64] * 9 + [_int, _psz], _int),
    "srd_cross_scale_fold": ([_p] * 3 + [_i64] * 9 + [_int, _p, _sz, _p], _int),
}


class KernelsUnavailable(SrdeployError, RuntimeError):
    """The library cannot be loaded (missing, wrong ABI version, unloadable)."""


class KernelError(SrdeployError, RuntimeError):
    """A kernel call returned a status other than SRD_SUCCESS."""

    def __init__(self, op: str, status: int, message: str):
        self.status = status
        super().__init__(f"{op}: {STATUS.get(status, status)}: {message}")


def library_path() -> Path:
    """Where the library is looked for: $SRDEPLOY_KERNELS_LIB, else the default build folder."""
    env = os.environ.get(LIB_ENV)
    return Path(env) if env else DEFAULT_BUILD_DIR / LIB_NAME


@functools.lru_cache(maxsize=256, typed=True)
def _check_attributes(op: str, *values) -> None:
    """The contract's attribute check (OpAttributeError), remembered for values that passed: the
    kernels sit in timed loops, where a fresh check per call would be measured with them."""
    spec = OPS[op]
    spec.check_attributes(dict(zip((a.name for a in spec.attributes), values)))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class Kernels:
    """The C ABI of one loaded library, on torch tensors (CUDA, contiguous)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.lib = ctypes.CDLL(str(self.path))
        except OSError as e:
            raise KernelsUnavailable(f"cannot load {self.path}: {e}") from e
        for name, (args, res) in _SIGNATURES.items():
            try:
                fn = getattr(self.lib, name)
            except AttributeError as e:
                raise KernelsUnavailable(f"{self.path} lacks {name}: not an srdeploy kernels library") from e
            fn.argtypes, fn.restype = args, res
        version = self.lib.srd_abi_version()
        if version != ABI_VERSION:
            raise KernelsUnavailable(f"{self.path} has ABI version {version}, this loader needs {ABI_VERSION}: rebuild it")

    # -- helpers
    def check(self, op: str, status: int) -> None:
        if status != SRD_SUCCESS:
            raise KernelError(op, status, self.lib.srd_last_error_message().decode(errors="replace"))

    def workspace_size(self, fn: str, *args: Any) -> int:
        size = ctypes.c_size_t(0)
        self.check(fn, getattr(self.lib, fn)(*args, ctypes.byref(size)))
        return size.value

    @staticmethod
    def _stream(device: torch.device) -> int:
        return torch.cuda.current_stream(device).cuda_stream

    @staticmethod
    def _workspace(nbytes: int, device: torch.device, workspace: torch.Tensor | None) -> torch.Tensor:
        if workspace is not None:
            if workspace.device != device or workspace.numel() * workspace.element_size() < nbytes:
                raise ValueError(f"workspace must hold {nbytes} bytes on {device}")
            return workspace
        return torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device)

    @staticmethod
    def _output(out: torch.Tensor | None, shape, dtype, device) -> torch.Tensor:
        if out is None:
            return torch.empty(shape, dtype=dtype, device=device)
        if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous {dtype} tensor of shape {tuple(shape)} on {device}")
        return out

    @staticmethod
    def _cuda(*tensors: torch.Tensor) -> torch.device:
        device = tensors[0].device
        if device.type != "cuda" or any(t.device != device for t in tensors):
            raise ValueError("srdeploy kernels need all tensors on one CUDA device")
        return device

    @staticmethod
    def _dtype(op: str, *tensors: torch.Tensor) -> int:
        dtype = tensors[0].dtype
        if any(t.dtype != dtype for t in tensors):
            raise ValueError(f"{op}: {', '.join(str(t.dtype) for t in tensors)}: the tensors must share one dtype")
        if dtype not in DTYPES:  # decided before the call, like the library's own capability checks
            raise KernelError(op, SRD_ERR_UNSUPPORTED, f"no kernel for {dtype}: the kernels take {' or '.join(FLOAT_DTYPES)}")
        return DTYPES[dtype]

    # -- ops
    def bucket_sort(self, codes: torch.Tensor, num_buckets: int, *, out: tuple[torch.Tensor, torch.Tensor] | None = None,
                    workspace: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_attributes("BucketSort", num_buckets)
        device = self._cuda(codes)
        codes = codes.to(torch.int32).contiguous()
        batch, length = codes.shape
        order = self._output(out[0] if out else None, codes.shape, torch.int32, device)
        rank = self._output(out[1] if out else None, codes.shape, torch.int32, device)
        if codes.numel() == 0:
            return order, rank
        with torch.cuda.device(device):
            nbytes = self.workspace_size("srd_bucket_sort_workspace_size", batch, length, num_buckets)
            ws = self._workspace(nbytes, device, workspace)
            self.check("bucket_sort", self.lib.srd_bucket_sort(
                _ptr(codes), _ptr(order), _ptr(rank), batch, length, num_buckets, _ptr(ws), nbytes,
                self._stream(device)))
        return order, rank

    def bucket_attention(self, q: torch.Tensor, v: torch.Tensor, order: torch.Tensor, rank: torch.Tensor,
                         chunk_size: int, n_hashes: int, eps: float, *, out: torch.Tensor | None = None,
                         workspace: torch.Tensor | None = None) -> torch.Tensor:
        _check_attributes("BucketAttention", chunk_size, n_hashes, eps)
        device = self._cuda(q, v, order, rank)
        dtype = self._dtype("bucket_attention", q, v)
        q, v = q.contiguous(), v.contiguous()
        order, rank = order.to(torch.int32).contiguous(), rank.to(torch.int32).contiguous()
        n, length, c = q.shape
        channels = v.shape[-1]
        if v.shape[:2] != q.shape[:2] or tuple(order.shape) != (n, n_hashes * length) or order.shape != rank.shape:
            raise ValueError(f"bucket_attention shapes: q {tuple(q.shape)}, v {tuple(v.shape)}, "
                             f"order {tuple(order.shape)}, rank {tuple(rank.shape)}, n_hashes {n_hashes}")
        result = self._output(out, v.shape, v.dtype, device)
        if result.numel() == 0:
            return result
        with torch.cuda.device(device):
            nbytes = self.workspace_size("srd_bucket_attention_workspace_size", n, length, c, channels,
                                         chunk_size, n_hashes, dtype)
            ws = self._workspace(nbytes, device, workspace)
            self.check("bucket_attention", self.lib.srd_bucket_attention(
                _ptr(q), _ptr(v), _ptr(order), _ptr(rank), _ptr(result), n, length, c, channels, chunk_size,
                n_hashes, float(eps), dtype, _ptr(ws), nbytes, self._stream(device)))
        return result

    def cross_scale_fold(self, scores: torch.Tensor, patches: torch.Tensor, stride: int, padding: int, *,
                         out: torch.Tensor | None = None, workspace: torch.Tensor | None = None) -> torch.Tensor:
        _check_attributes("CrossScaleFold", stride, padding)
        device = self._cuda(scores, patches)
        dtype = self._dtype("cross_scale_fold", scores, patches)
        scores, patches = scores.contiguous(), patches.contiguous()
        n, k, h, w = scores.shape
        if patches.dim() != 5 or patches.shape[:2] != scores.shape[:2]:
            raise ValueError(f"cross_scale_fold shapes: scores {tuple(scores.shape)}, patches {tuple(patches.shape)}")
        channels, kh, kw = patches.shape[2:]
        shape = (n, channels, fold_output_size(h, kh, stride, padding), fold_output_size(w, kw, stride, padding))
        result = self._output(out, shape, scores.dtype, device)
        if result.numel() == 0:
            return result
        with torch.cuda.device(device):
            nbytes = self.workspace_size("srd_cross_scale_fold_workspace_size", n, k, h, w, channels, kh, kw,
                                         stride, padding, dtype)
            ws = self._workspace(nbytes, device, workspace)
            self.check("cross_scale_fold", self.lib.srd_cross_scale_fold(
                _ptr(scores), _ptr(patches), _ptr(result), n, k, h, w, channels, kh, kw, stride, padding, dtype,
                _ptr(ws), nbytes, self._stream(device)))
        return result


# ------------------------------------------------------------------------------------ state

_lock = threading.Lock()
_state: dict[str, Any] = {"kernels": None, "reason": None, "tried": False, "enabled": False, "warned": set()}
_local = threading.local()


def _warn_once(key: str, message: str) -> None:
    with _lock:
        if key in _state["warned"]:
            return
        _state["warned"].add(key)
    logger.warning(message)


def load(path: str | Path | None = None) -> Kernels:
    """Load the library now (no caching); raises KernelsUnavailable with the reason."""
    path = Path(path) if path else library_path()
    if not path.is_file():
        raise KernelsUnavailable(f"{path} not found; build it with `python -m plugins.build` "
                                 f"or point {LIB_ENV} at a built {LIB_NAME}")
    return Kernels(path)


def get() -> Kernels | None:
    """The process-wide library, loaded on first use; None (and one warning) if unavailable."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["kernels"] = load()
            except KernelsUnavailable as e:
                _state["reason"] = str(e)
        kernels, reason = _state["kernels"], _state["reason"]
    if kernels is None:
        _warn_once("unavailable", f"srdeploy CUDA kernels unavailable: {reason}. torch.ops.srdeploy.* on CUDA "
                                  "tensors use the PyTorch reference (correct, slower).")
    return kernels


def reset() -> None:
    """Forget the loaded library and the warnings given (tests; after building the library)."""
    with _lock:
        _state.update(kernels=None, reason=None, tried=False, warned=set())


def status() -> dict[str, Any]:
    """What the CUDA path uses, for logs and benchmark records (loads the library if not tried)."""
    kernels = get()
    return {"enabled": _state["enabled"], "library": str(kernels.path) if kernels else None,
            "reason": _state["reason"], "abi_version": ABI_VERSION}


@contextlib.contextmanager
def reference_only():
    """Within this block (this thread), CUDA tensors use the PyTorch reference."""
    previous = getattr(_local, "reference_only", False)
    _local.reference_only = True
    try:
        yield
    finally:
        _local.reference_only = previous


def _active() -> Kernels | None:
    return None if getattr(_local, "reference_only", False) else get()


def _run(op: str, call, fallback):
    """call(kernels), or fallback() when the library is unavailable or no kernel variant fits
    (SRD_ERR_UNSUPPORTED, logged once per reason); any other KernelError propagates."""
    kernels = _active()
    if kernels is None:
        return fallback()
    try:
        return call(kernels)
    except KernelError as e:
        if e.status != SRD_ERR_UNSUPPORTED:
            raise
        _warn_once(f"unsupported:{e}", f"{e}; using the PyTorch reference for these calls")
        return fallback()


@implements("BucketSort", "kernel")
def _cuda_bucket_sort(codes, num_buckets):
    return _run("bucket_sort", lambda k: k.bucket_sort(codes, num_buckets),
                lambda: ops.bucket_sort_reference(codes, num_buckets))


@implements("BucketAttention", "kernel")
def _cuda_bucket_attention(q, v, order, rank, chunk_size, n_hashes, eps):
    return _run("bucket_attention", lambda k: k.bucket_attention(q, v, order, rank, chunk_size, n_hashes, eps),
                lambda: ops.bucket_attention_reference(q, v, order, rank, chunk_size, n_hashes, eps))


@implements("CrossScaleFold", "kernel")
def _cuda_cross_scale_fold(scores, patches, stride, padding):
    return _run("cross_scale_fold", lambda k: k.cross_scale_fold(scores, patches, stride, padding),
                lambda: ops.cross_scale_fold_reference(scores, patches, stride, padding))


def enable() -> None:
    """Register the kernels as the CUDA implementation of torch.ops.srdeploy.* (idempotent).

    Touches neither CUDA nor the library (that happens on the first CUDA call), so it is safe at
    import time. Called by the layers that pick a CUDA device (backends, training, benchmarks)."""
    with _lock:
        if _state["enabled"]:
            return
        _state["enabled"] = True
    for name, fn in registered("kernel").items():
        getattr(ops, OPS[name].torch_name).register_kernel("cuda")(fn)
