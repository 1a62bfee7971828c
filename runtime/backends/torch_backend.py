"""The PyTorch backend: the reference network itself, fp32 or (CUDA) fp16."""
from __future__ import annotations

from pathlib import Path

import torch

import models

from .base import Backend, BackendError, resolve_device

__all__ = ["TorchBackend", "Fp32Statistics"]


class Fp32Statistics(torch.overrides.TorchFunctionMode):
    """fp16 inference with the fp32 parts of DESIGN.md §4: softmax, log-softmax and logsumexp
    statistics, and NLSN's bucket attention (its softmax over chunks), run in fp32 and hand back
    fp16. Hashing is fp32 already (NLSN keeps its rotations fp32 and hashes ``q.float()``)."""

    FP32_OPS = {torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax, torch.log_softmax,
                torch.nn.functional.log_softmax, torch.Tensor.log_softmax, torch.logsumexp, torch.Tensor.logsumexp}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        fp32 = func in self.FP32_OPS or func is torch.ops.srdeploy.bucket_attention.default \
            or func is torch.ops.srdeploy.bucket_attention
        if not fp32:
            return func(*args, **kwargs)
        dtype = next((a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
        if dtype != torch.float16:
            return func(*args, **kwargs)
        up = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float16 else a for a in args]
        kwargs = {k: (v if k != "dtype" else None) for k, v in kwargs.items()}
        return func(*up, **kwargs).to(dtype)


class TorchBackend(Backend):
    """The PyTorch reference network, fp32 (or fp16 after :meth:`half`, for CUDA).

    On a CUDA device the srdeploy CUDA kernels become the implementation of the custom ops
    (``plugins.kernels.enable()``): the layer that picks the device switches them on."""

    def __init__(self, model: models.SRModel, device: str = "cpu"):
        self.device = str(resolve_device(device))
        if self.device.startswith("cuda"):
            from plugins import kernels

            kernels.enable()  # idempotent; the library itself loads on the first CUDA call
        self.model = model.eval().to(self.device)
        self.name = model.name
        self.scale = int(model.scale)
        self.rgb_range = float(model.rgb_range)
        self.dtype = torch.float32

    def half(self) -> "TorchBackend":
        """Run in fp16 (inputs and outputs stay fp32); hashing and softmax statistics stay fp32."""
        self.model.half()
        self.dtype = torch.float16
        return self

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        return self.model.valid_size(h, w)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # not inference_mode: its tensors refuse in-place use by callers
            if self.dtype == torch.float32:
                y = self.model(x.to(self.device, torch.float32) * self.rgb_range)
            else:
                with Fp32Statistics():
                    y = self.model((x.to(self.device, torch.float32) * self.rgb_range).to(self.dtype))
            return (y.float() / self.rgb_range).cpu()

    @classmethod
    def _open(cls, path: Path, *, model=None, scale=None, device="cpu") -> "TorchBackend":
        device = resolve_device(device)  # fail on the device before reading a large file
        if not path.is_file():
            raise BackendError(f"weights file {path} not found")
        try:
            net = models.load(path)
        except (OSError, RuntimeError, EOFError) as e:  # unreadable or not a torch file at all
            raise BackendError(f"cannot load weights {path}: {e}") from None
        return cls(net, device)
