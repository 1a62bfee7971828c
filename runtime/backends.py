"""Inference backends: one small interface that the pipeline, the CLI and the benchmarks share.

A backend runs one network on one tile. Its contract (what every backend must honour):

- ``name``: the architecture ("nlsn", "csnln", "edsr"); ``scale``: the upscaling factor;
- ``valid_size(h, w)``: the smallest input size ≥ (h, w) that it accepts;
- ``backend(x)``: ``x`` is a [1, 3, h, w] float32 CPU tensor in [0, 1] of a valid size;
  the result is [1, 3, scale·h, scale·w] float32 on the CPU, in [0, 1] but not clamped.
  The backend owns the device transfer and the network's value range (``rgb_range``),
  so the pipeline never needs to know either.

Backends are opened from a weights file with ``open_backend(kind, weights, ...)``. Only
implemented backends are listed in :data:`BACKENDS`; onnxruntime ("ort") and TensorRT
("trt") register themselves there when they land, and the CLI's choices follow.
"""
from __future__ import annotations

import abc
from pathlib import Path

import torch

from models.errors import SrdeployError
import models

__all__ = [
    "Backend",
    "TorchBackend",
    "BACKENDS",
    "BackendError",
    "WeightsRequired",
    "default_weights",
    "default_entry",
    "resolve_weights",
    "resolve_device",
    "open_backend",
]


class BackendError(SrdeployError, ValueError):
    """A backend cannot be set up as asked (device, weights, model/scale mismatch)."""


class WeightsRequired(BackendError):
    """No weights were given and there are no default weights for the request."""


class Backend(abc.ABC):
    name: str
    scale: int
    device: str = "cpu"

    @abc.abstractmethod
    def valid_size(self, h: int, w: int) -> tuple[int, int]: ...

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    @classmethod
    @abc.abstractmethod
    def open(cls, weights: Path, *, model: str | None = None, scale: int | None = None,
             device: str = "cpu") -> "Backend":
        """Open ``weights``; ``model``/``scale``, when given, must match what the file holds."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name} x{self.scale} on {self.device})"


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
    """The PyTorch reference network, fp32 (or fp16 after :meth:`half`, for CUDA)."""

    def __init__(self, model: models.SRModel, device: str = "cpu"):
        self.device = str(resolve_device(device))
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
    def open(cls, weights, *, model=None, scale=None, device="cpu"):
        device = resolve_device(device)  # fail on the device before reading a large file
        weights = Path(weights)
        if not weights.is_file():
            raise BackendError(f"weights file {weights} not found")
        try:
            net = models.load(weights)
        except models.CheckpointError as e:
            raise BackendError(str(e)) from None
        except (OSError, RuntimeError, EOFError) as e:  # unreadable or not a torch file at all
            raise BackendError(f"cannot load weights {weights}: {e}") from None
        check_match(net.name, net.scale, model, scale, weights)
        return cls(net, device)


#: implemented backends by CLI name; "ort" and "trt" are added here when they exist
def _ort_backend():
    from export.ort import MissingCustomOpsError
    from .ort import OrtBackend  # late: onnx and onnxruntime load only when used

    class OrtFromFile(OrtBackend):
        @classmethod
        def open(cls, weights, *, model=None, scale=None, device="cpu"):
            try:
                return super().open(weights, model=model, scale=scale, device=device)
            except models.CheckpointError as e:
                raise BackendError(str(e)) from None
            except (MissingCustomOpsError, FileNotFoundError, ValueError) as e:
                raise BackendError(f"onnxruntime: {e}") from None

    return OrtFromFile


def _trt_backend():
    from .trt import TrtBackend  # late: TensorRT loads only when used

    return TrtBackend


#: backends by CLI name: a function returning the class, so that each backend's libraries
#: (onnxruntime, TensorRT) are imported only when it is used
BACKENDS = {"torch": lambda: TorchBackend, "ort": _ort_backend, "trt": _trt_backend}


def check_match(name: str, scale: int, want_model: str | None, want_scale: int | None, source) -> None:
    """An explicit --model/--scale must agree with what the weights hold."""
    if want_model is not None and want_model.lower() != name:
        raise BackendError(f"--model {want_model} does not match {source}, which holds {name} x{scale}; "
                           f"drop --model or pass {want_model} weights")
    if want_scale is not None and int(want_scale) != scale:
        raise BackendError(f"--scale {want_scale} does not match {source}, which holds {name} x{scale}; "
                           f"drop --scale or pass x{want_scale} weights")


def default_weights(model: str | None, scale: int | None) -> Path | None:
    """Bundled weights for (model, scale) (``models/weights/manifest.json``), or None.

    A missing model or scale takes the bundled default's (see :func:`default_entry`).
    """
    entry = default_entry(model, scale)
    return entry.path if entry is not None else None


def default_entry(model: str | None, scale: int | None):
    """The bundled ``models.weights.Entry`` for (model, scale), or None where nothing is bundled."""
    from models import weights as bundled

    return bundled.find(model, scale)


def resolve_weights(weights: str | Path | None, model: str | None = None, scale: int | None = None) -> Path:
    """The weights to use: the ones given, else the bundled default; the one place this is decided."""
    if weights is not None:
        return Path(weights)
    found = default_weights(model, scale)
    if found is None:
        from models import weights as bundled

        what = " ".join(filter(None, [model, f"x{scale}" if scale else None]))
        have = ", ".join(f"{e.model} x{e.scale}" for e in bundled.entries()) or "none"
        raise WeightsRequired(f"no weights given{' for ' + what if what else ''} and none bundled for it "
                              f"(bundled: {have}): pass --weights PATH to an official NLSN/CSNLN/EDSR checkpoint")
    return found


def resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise BackendError(f"--device cuda: CUDA is not available ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise BackendError(f"--device {device}: unsupported device (use cpu or cuda)")
    return dev


def open_backend(kind: str, weights: str | Path, *, model: str | None = None, scale: int | None = None,
                 device: str = "cpu") -> Backend:
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[kind]().open(Path(weights), model=model, scale=scale, device=device)
