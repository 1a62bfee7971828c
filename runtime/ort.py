"""onnxruntime backend, and the srdeploy custom ops for onnxruntime.

    backend = OrtBackend("nlsn_x2.onnx")            # CPU; device="cuda" uses onnxruntime-gpu when present
    y = backend(x)                                   # x: float32 [N, 3, H, W] in [0, 1] -> [N, 3, sH, sW]
    h, w = backend.valid_size(37, 50)                # the size to pad an input to (then crop the output)

``OrtBackend`` is a drop-in for the torch backend: it reads everything it needs (model, scale,
rgb_range, size rules) from the metadata ``python -m export.onnx`` stores in the file.

Custom-op graphs (``--ops plugin``) run on CPU through Python implementations of BucketSort,
BucketAttention and CrossScaleFold registered with onnxruntime by onnxruntime-extensions
(``pip install onnxruntime-extensions``). They call the PyTorch references of models/ops.py, so
they compute exactly what the oracle computes. onnxruntime-extensions' Python ops take fp32
only: an fp16 graph gets Cast nodes around its custom nodes in the in-memory copy onnxruntime
runs (the file is not changed), the way onnxruntime's CPU provider itself computes fp16 ops it
has no fp16 kernel for.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch

from models import ops as reference
from models.base import InputSizeError, valid_size

CUSTOM_DOMAIN = "srdeploy"
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
IMPLEMENTED = ("BucketSort", "BucketAttention", "CrossScaleFold")


class MissingCustomOpsError(RuntimeError):
    """An ONNX file with custom nodes this onnxruntime cannot run."""


class OrtSetupError(RuntimeError, ValueError):
    """onnxruntime cannot be set up as asked (no CUDA provider, an unreadable file, a full disk):
    a ValueError, so that callers report it as one line like any other bad input."""


# --------------------------------------------------------------------------- custom ops

def _bucket_sort(codes: np.ndarray, num_buckets: int):
    order, rank = reference.bucket_sort_reference(torch.from_numpy(codes), num_buckets)
    return order.numpy(), rank.numpy()


def _bucket_attention(q, v, order, rank, chunk_size: int, n_hashes: int, eps: float):
    t = torch.from_numpy
    return reference.bucket_attention_reference(t(q), t(v), t(order), t(rank), chunk_size, n_hashes, eps).numpy()


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
        f32, i32, i64, flt = T.dt_float, T.dt_int32, T.dt_int64, T.dt_float
        # "domain::Op" puts the op in that domain (onnxruntime-extensions parses the prefix).
        onnx_op(op_type=f"{CUSTOM_DOMAIN}::BucketSort", inputs=[i32], outputs=[i32, i32],
                attrs={"num_buckets": i64})(_bucket_sort)
        onnx_op(op_type=f"{CUSTOM_DOMAIN}::BucketAttention", inputs=[f32, f32, i32, i32], outputs=[f32],
                attrs={"chunk_size": i64, "n_hashes": i64, "eps": flt})(_bucket_attention)
        onnx_op(op_type=f"{CUSTOM_DOMAIN}::CrossScaleFold", inputs=[f32, f32], outputs=[f32],
                attrs={"stride": i64, "padding": i64})(_cross_scale_fold)
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
        if node.domain != CUSTOM_DOMAIN:
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
        unknown = [op for op in needed if op.split("::")[0] != CUSTOM_DOMAIN or op.split("::")[1] not in IMPLEMENTED]
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


# --------------------------------------------------------------------------- backend

def onnx_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """The srdeploy metadata (model, scale, rgb_range, size rules, ops, precision) of an ONNX file."""
    model = _load_onnx(Path(onnx_path), load_external_data=False)
    meta = next((json.loads(p.value) for p in model.metadata_props if p.key == "srdeploy"), None)
    if meta is None:
        raise OrtSetupError(f"{onnx_path} has no srdeploy metadata (model, scale, size rules); "
                            f"export it with python -m export.onnx")
    return meta


# --------------------------------------------------------------------------- export cache

CACHE_ENV = "SRDEPLOY_CACHE_DIR"


def cache_dir() -> Path:
    """Where on-the-fly exports are kept: ``$SRDEPLOY_CACHE_DIR``, else ``$XDG_CACHE_HOME/srdeploy``,
    else ``~/.cache/srdeploy`` (the XDG rule)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "srdeploy"


def _export_code_digest() -> str:
    """What the export depends on besides the weights: the code of models/ and export/ (a changed
    decomposition or network makes a new file, never a stale one), torch and onnx versions."""
    import torch as _torch
    repo = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"{_torch.__version__} {onnx.__version__}".encode())
    for folder in ("models", "export"):
        for f in sorted((repo / folder).glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def cached_export(weights: Path, *, model: str | None = None, scale: int | None = None, ops: str = "onnx",
                  say: Callable[[str], None] | None = None) -> Path:
    """The ONNX export of a checkpoint, from :func:`cache_dir` when this very file (by its sha256),
    export options and export code were exported before, else exported now (atomically) and kept
    for the next run. ``say`` hears what happened and how long it took (default: stderr)."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    from runtime.paths import folder_problem
    folder = cache_dir() / "onnx"
    problem = folder_problem(folder)  # checked before the weights are read or anything exported
    if problem:
        raise OrtSetupError(f"cannot keep the on-the-fly export: {problem}; set {CACHE_ENV} to a writable "
                            f"folder or pass --onnx FILE")
    from export.onnx import DEFAULT_OPSET, FORMAT_VERSION
    from runtime.trt import sha256_file  # light: TensorRT itself loads only when used
    digest = sha256_file(weights)
    key = hashlib.sha256(json.dumps({"weights": digest, "ops": ops, "precision": "fp32", "opset": DEFAULT_OPSET,
                                     "format": FORMAT_VERSION, "code": _export_code_digest()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"{weights.stem}_{ops}_{key}.onnx"
    if path.is_file():
        try:
            onnx_metadata(path)
            say(f"onnxruntime: using the cached export of {weights.name}: {path}")
            return path
        except OrtSetupError:
            pass  # unreadable (a disk error, a foreign file): export again over it
    import models
    from export.onnx import export_model, quiet_torch_exporter
    quiet_torch_exporter()
    net = models.load(weights, model=model, scale=scale)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        export_model(net, path, mode=ops, weights=str(weights), overwrite=True)
    except OSError as e:  # a full disk, a folder removed meanwhile: the temporary file is already gone
        raise OrtSetupError(f"cannot write the on-the-fly export to {folder}: {e.strerror or e}; free space, "
                            f"set {CACHE_ENV} or pass --onnx FILE") from None
    say(f"onnxruntime: exported {weights.name} in {time.perf_counter() - start:.1f} s to {path} "
        f"(cached: the next run reuses it; remove {folder} to free the space)")
    return path


class OrtBackend:
    """onnxruntime backend for an srdeploy ONNX file (the contract of runtime/backends.py).

    ``OrtBackend(onnx_path, device="cpu")``: ``device="cuda"`` needs onnxruntime-gpu (the srdeploy
    custom ops of a ``--ops plugin`` file still run on CPU). ``OrtBackend.open(path, model=, scale=,
    device=)`` also takes a checkpoint and exports it on the fly (``--ops onnx``, fp32, dynamic) into
    the export cache (:func:`cached_export`).
    Attributes: ``name`` (architecture), ``scale``, ``rgb_range``, ``device``, ``meta`` (the export
    metadata), ``session``. ``valid_size(h, w)`` is the size to pad an input to; ``backend(x)`` maps
    float32 [N, 3, H, W] in [0, 1] (a valid size) to float32 [N, 3, sH, sW] on the CPU, not clamped.
    """

    def __init__(self, onnx_path: str | Path, device: str = "cpu", *, custom_ops: bool = True,
                 threads: int | None = None, profile: str | None = None):
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file; export one with python -m export.onnx")
        meta = onnx_metadata(path)
        self.path, self.device, self.meta = path, device, meta
        self.name = str(meta["model"])
        self.scale = int(meta["scale"])
        self.rgb_range = float(meta["rgb_range"])
        self.size_multiple = int(meta.get("size_multiple", 1))
        self.min_pixels = int(meta.get("min_pixels", 1))
        self.fixed_size = tuple(meta["fixed_size"]) if meta.get("fixed_size") else None
        self.session = make_session(path, device, custom_ops=custom_ops, threads=threads, profile=profile)
        self._input = self.session.get_inputs()[0].name

    @classmethod
    def open(cls, path: str | Path, *, model: str | None = None, scale: int | None = None,
             device: str = "cpu", ops: str = "onnx") -> "OrtBackend":
        """An ONNX file, or a checkpoint exported on the fly (through the export cache);
        ``model``/``scale``, when given, must match what the file holds."""
        path = Path(path)
        providers_for(device)  # a missing CUDA provider is found before an export, not after
        if path.suffix.lower() != ".onnx":
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such weights file")
            path = cached_export(path, model=model, scale=scale, ops=ops)
        backend = cls(path, device)
        if (model is not None and model.lower() != backend.name) or (scale is not None and scale != backend.scale):
            raise ValueError(f"{path} holds {backend.name} x{backend.scale}, not "
                             f"{model or backend.name} x{scale or backend.scale}; pass the matching --model/--scale "
                             f"or another file")
        return backend

    def __repr__(self) -> str:
        return (f"OrtBackend({str(self.path)!r}, {self.meta['model']} x{self.scale}, --ops {self.meta['ops']}, "
                f"{self.meta['precision']}, {self.session.get_providers()[0]})")

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        """Smallest (H, W) ≥ (h, w) the file accepts (the model's rules; a fixed-size file: its size)."""
        if self.fixed_size:
            fh, fw = self.fixed_size
            if h > fh or w > fw:
                raise InputSizeError(f"{self.path} takes {fh}x{fw} inputs only, got {h}x{w}; tile the image "
                                     f"or export with --dynamic")
            return fh, fw
        return valid_size(h, w, self.size_multiple, self.min_pixels)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"OrtBackend expects [N, 3, H, W], got shape {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if self.valid_size(h, w) != (h, w):
            vh, vw = self.valid_size(h, w)
            raise InputSizeError(f"{self.meta['model']} x{self.scale} cannot take {h}x{w}; pad the input to "
                                 f"{vh}x{vw} (runtime.infer does this for you)")
        feed = (x.detach().to("cpu", torch.float32) * self.rgb_range).numpy()
        out = self.session.run(None, {self._input: np.ascontiguousarray(feed)})[0]
        return torch.from_numpy(out.astype(np.float32, copy=False)) / self.rgb_range

    def end_profiling(self) -> str:
        return self.session.end_profiling()


def describe(meta: dict[str, Any]) -> str:
    return (f"{meta['model']} x{meta['scale']} --ops {meta['ops']} {meta['precision']} "
            f"{'x'.join(map(str, meta['fixed_size'])) if meta.get('fixed_size') else 'dynamic'}")
