"""onnxruntime backend: run an exported srdeploy ONNX file like the PyTorch network.

    backend = OrtBackend("nlsn_x2.onnx")            # CPU; device="cuda" uses onnxruntime-gpu when present
    y = backend(x)                                   # x: float32 [N, 3, H, W] in [0, 1] -> [N, 3, sH, sW]
    h, w = backend.valid_size(37, 50)                # the size to pad an input to (then crop the output)

``OrtBackend`` is a drop-in for the torch backend: it reads everything it needs (model, scale,
rgb_range, size rules) from the metadata ``python -m export.onnx`` stores in the file. Sessions
and the srdeploy custom ops for onnxruntime live in :mod:`export.ort`.
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

from export.ort import OrtSetupError, _load_onnx, make_session, providers_for
from models.base import InputSizeError, valid_size

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
    from models.files import folder_problem
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
