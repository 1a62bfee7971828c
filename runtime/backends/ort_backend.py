"""onnxruntime backend: run an exported srdeploy ONNX file like the PyTorch network.

    backend = OrtBackend("nlsn_x2.onnx")            # CPU; device="cuda" uses onnxruntime-gpu when present
    y = backend(x)                                   # x: float32 [N, 3, H, W] in [0, 1] -> [N, 3, sH, sW]
    h, w = backend.valid_size(37, 50)                # the size to pad an input to (then crop the output)

It reads everything it needs (model, scale, rgb_range, size rules) from the metadata
``python -m export.onnx`` stores in the file. Sessions and the srdeploy custom ops for onnxruntime
live in :mod:`export.ort`; checkpoints are exported on the fly through :mod:`.export_cache`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from export.ort import make_session, providers_for

from .base import ExportedBackend, onnx_metadata
from .export_cache import cached_export

__all__ = ["OrtBackend"]


class OrtBackend(ExportedBackend):
    """onnxruntime backend for an srdeploy ONNX file (the contract of :mod:`runtime.backends.base`).

    ``OrtBackend(onnx_path, device="cpu")``: ``device="cuda"`` needs onnxruntime-gpu (the srdeploy
    custom ops of a ``--ops plugin`` file still run on CPU). ``OrtBackend.open(path, model=, scale=,
    device=)`` also takes a checkpoint and exports it on the fly (``--ops onnx``, fp32, dynamic) into
    the export cache (:func:`~.export_cache.cached_export`).
    Attributes: ``name`` (architecture), ``scale``, ``rgb_range``, ``device``, ``meta`` (the export
    metadata), ``session``.
    """

    error_prefix = "onnxruntime: "
    open_errors = (FileNotFoundError, ValueError)

    def __init__(self, onnx_path: str | Path, device: str = "cpu", *, custom_ops: bool = True,
                 threads: int | None = None, profile: str | None = None):
        self.path, self.device = Path(onnx_path), device
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file; export one with python -m export.onnx")
        self._use_metadata(onnx_metadata(self.path), "export it again with python -m export.onnx")
        self.session = make_session(self.path, device, custom_ops=custom_ops, threads=threads, profile=profile)
        self._input = self.session.get_inputs()[0].name

    @classmethod
    def _open(cls, path: Path, *, model=None, scale=None, device="cpu", ops: str = "onnx") -> "OrtBackend":
        """An ONNX file, or a checkpoint exported on the fly (through the export cache)."""
        providers_for(device)  # a missing CUDA provider is found before an export, not after
        if path.suffix.lower() != ".onnx":
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such weights file")
            path = cached_export(path, model=model, scale=scale, ops=ops)
        return cls(path, device)

    def __repr__(self) -> str:
        return (f"OrtBackend({str(self.path)!r}, {self.name} x{self.scale}, --ops {self.meta.get('ops')}, "
                f"{self.meta.get('precision')}, {self.session.get_providers()[0]})")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        feed = (x.detach().to("cpu", torch.float32) * self.rgb_range).numpy()
        out = self.session.run(None, {self._input: np.ascontiguousarray(feed)})[0]
        return torch.from_numpy(out.astype(np.float32, copy=False)) / self.rgb_range

    def end_profiling(self) -> str:
        return self.session.end_profiling()
