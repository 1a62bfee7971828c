"""The backend interface, its one error translation, and what every backend shares.

A backend runs one network on one tile. Its contract (what every backend must honour):

- ``name``: the architecture ("nlsn", "csnln", "edsr"); ``scale``: the upscaling factor;
  ``rgb_range``: the network's value range; ``device``: where it runs;
- ``valid_size(h, w)``: the smallest input size ≥ (h, w) that it accepts;
- ``backend(x)``: ``x`` is a [N, 3, h, w] float32 CPU tensor in [0, 1] of a valid size;
  the result is [N, 3, scale·h, scale·w] float32 on the CPU, in [0, 1] but not clamped.
  The backend owns the device transfer and the network's value range, so the pipeline
  never needs to know either;
- ``Backend.open(file, model=, scale=, device=)``: the one way in from a file. It calls the
  subclass's ``_open`` and turns every failure that means "cannot be opened as asked" into a
  :class:`BackendError` with one line, then checks an explicit ``model``/``scale`` against the file.

:class:`ExportedBackend` is the shared part of the backends that run an exported file (onnxruntime,
TensorRT): what the network is (model, scale, rgb_range, size rules) comes from the srdeploy metadata
``python -m export.onnx`` stored (:func:`onnx_metadata`; a TensorRT sidecar carries a copy), read once
here with one rule for missing keys.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import torch

from models.base import InputSizeError, valid_size
from models.errors import SrdeployError

__all__ = [
    "Backend", "ExportedBackend", "BackendError", "WeightsRequired", "MetadataError", "onnx_metadata",
    "check_match", "resolve_device", "default_weights", "default_entry", "resolve_weights",
]


class BackendError(SrdeployError, ValueError):
    """A backend cannot be set up as asked (device, weights, model/scale mismatch)."""


class WeightsRequired(BackendError):
    """No weights were given and there are no default weights for the request."""


class MetadataError(BackendError):
    """An exported file without the srdeploy metadata a backend needs (model, scale, rgb_range)."""


class Backend(abc.ABC):
    name: str
    scale: int
    rgb_range: float = 1.0
    device: Any = "cpu"

    #: the device :meth:`open` uses when none is given
    default_device = "cpu"
    #: put before every message :meth:`open` translates (which library refused)
    error_prefix = ""
    #: errors of ``_open`` from outside srdeploy whose text is already the one line for the user
    open_errors: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def valid_size(self, h: int, w: int) -> tuple[int, int]: ...

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    @classmethod
    def open(cls, weights: str | Path, *, model: str | None = None, scale: int | None = None,
             device: str | None = None, **options) -> "Backend":
        """Open ``weights`` (a checkpoint, an ONNX file, an engine: what the backend runs); ``model`` /
        ``scale``, when given, must match what the file holds. Raises :class:`BackendError` only."""
        try:
            backend = cls._open(Path(weights), model=model, scale=scale,
                                device=cls.default_device if device is None else device, **options)
        except BackendError:
            raise
        except (SrdeployError, *cls.open_errors) as e:  # the one translation: one line, no traceback
            raise BackendError(f"{cls.error_prefix}{e}") from None
        check_match(backend.name, backend.scale, model, scale, weights)
        return backend

    @classmethod
    def _open(cls, path: Path, *, model: str | None, scale: int | None, device: str, **options) -> "Backend":
        """Make the backend for ``path`` (errors are translated by :meth:`open`). Backends opened from a
        file implement it; one made from objects in memory (a test's stand-in) need not."""
        raise NotImplementedError(f"{cls.__name__} is not opened from a file")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name} x{self.scale} on {self.device})"


# ------------------------------------------------------------------------- exported files

#: metadata keys an exported file must have; the size rules default to "any size"
REQUIRED_METADATA = ("model", "scale", "rgb_range")


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The srdeploy metadata (model, scale, rgb_range, size rules, ops, precision) of an ONNX file.

    Raises an SrdeployError with one line: :class:`MetadataError` when there is none, OrtSetupError
    for a file that is not ONNX."""
    from export import metadata
    from export.ort import _load_onnx  # the one-line error for a file that is not ONNX

    meta = metadata.read(_load_onnx(Path(path), load_external_data=False))
    if meta is None:
        raise MetadataError(f"{path} has no srdeploy metadata (model, scale, size rules); "
                            f"export it with python -m export.onnx")
    return meta


class ExportedBackend(Backend):
    """A backend for an exported file (``path``) whose network is described by srdeploy metadata."""

    path: Path
    meta: dict[str, Any]
    size_multiple: int = 1
    min_pixels: int = 1
    fixed_size: tuple[int, int] | None = None

    def _use_metadata(self, meta: dict[str, Any], fix: str) -> None:
        """Take model, scale, rgb_range and the size rules from ``meta``; ``fix`` says how to get a file
        that has them."""
        missing = [k for k in REQUIRED_METADATA if k not in meta]
        if missing:
            raise MetadataError(f"{self.path}: the srdeploy metadata lacks {', '.join(missing)}; {fix}")
        self.meta = meta
        self.name = str(meta["model"])
        self.scale = int(meta["scale"])
        self.rgb_range = float(meta["rgb_range"])
        self.size_multiple = int(meta.get("size_multiple", 1))
        self.min_pixels = int(meta.get("min_pixels", 1))
        self.fixed_size = tuple(meta["fixed_size"]) if meta.get("fixed_size") else None

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        """Smallest (H, W) ≥ (h, w) the file accepts (the model's rules; a fixed-size file: its size)."""
        if self.fixed_size:
            fh, fw = self.fixed_size
            if h > fh or w > fw:
                raise InputSizeError(f"{self.path} takes {fh}x{fw} inputs only, got {h}x{w}; tile the image "
                                     f"or export with --dynamic")
            return fh, fw
        return valid_size(h, w, self.size_multiple, self.min_pixels)

    def _check_input(self, x: torch.Tensor) -> None:
        """``x`` is [N, C, H, W] of a size :meth:`valid_size` accepts as it is."""
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects [N, 3, H, W], got shape {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        vh, vw = self.valid_size(h, w)
        if (vh, vw) != (h, w):
            raise InputSizeError(f"{self.name} x{self.scale} cannot take {h}x{w}; pad the input to "
                                 f"{vh}x{vw} (runtime.infer does this for you)")


# ------------------------------------------------------------------- requests and devices

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
