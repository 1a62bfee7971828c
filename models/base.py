"""What every srdeploy network shares, and the description each one carries.

An :class:`Architecture` (one per network, defined next to its class in ``nlsn.py``, ``csnln.py``,
``edsr.py`` and collected in :mod:`models.architectures`) says all that the rest of srdeploy asks
about a network without building it: its released configuration, how a state dict shows it is
this network and what the file tells (scale, width, depth...), the input sizes it accepts, the
official repository's test-time chop, and hints for the runtime (fp16, tiling, memory).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from .errors import SrdeployError, UsageError

StateDict = Mapping[str, torch.Tensor]


class InputSizeError(SrdeployError, ValueError):
    """An input of a size the network cannot take (the runtime pads to ``valid_size`` instead)."""


def valid_size(h: int, w: int, size_multiple: int = 1, min_pixels: int = 1) -> tuple[int, int]:
    """Smallest (H, W) ≥ (h, w) elementwise with H, W multiples of ``size_multiple`` and
    H·W ≥ ``min_pixels``: the size rule of every network, shared by all backends."""
    m = size_multiple
    h, w = -(-h // m) * m, -(-w // m) * m
    while h * w < min_pixels:  # grow the shorter side, keeping the multiple
        if h <= w:
            h += m
        else:
            w += m
    return h, w


# ----------------------------------------------------------------------------- descriptions

@dataclass(frozen=True)
class SizeRule:
    """The inputs a network accepts: H and W multiples of ``multiple``, H·W ≥ ``min_pixels``."""

    multiple: int = 1
    min_pixels: int = 1

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        return valid_size(h, w, self.multiple, self.min_pixels)


def any_size(scale: int, config: Mapping[str, Any]) -> SizeRule:
    """The size rule of a fully convolutional network: every input size."""
    return SizeRule()


@dataclass(frozen=True)
class ChopRule:
    """One official repository's test-time ``forward_chop`` (run by ``runtime.tiling.official_chop``):
    ``shave`` pixels of overlap, quadrants split further while larger than ``min_size`` pixels, and
    quadrant sizes rounded up to steps of ``round_to`` (H, W), or of the scale when None."""

    shave: int
    min_size: int
    round_to: tuple[int, int] | None = None

    def quadrant(self, h: int, w: int, scale: int) -> tuple[int, int]:
        hs, ws = h // 2 + self.shave, w // 2 + self.shave
        sh, sw = self.round_to or (scale, scale)
        # Both repositories add a full step even when the size is already a multiple.
        return hs + sh - hs % sh, ws + sw - ws % sw


@dataclass(frozen=True)
class Hints:
    """What the runtime may want to know before it runs the network."""

    #: runs in half precision (hashing and softmax statistics stay fp32, DESIGN.md §4)
    fp16: bool = True
    #: memory grows faster than the image: large inputs should be tiled
    tiling_advised: bool = False
    #: exported graphs score every pair of positions (memory ∝ (H·W)²; eager runs work in blocks)
    dense_attention: bool = False
    #: live fp32 feature maps at peak, in units of runtime.memory.feature_bytes_per_pixel
    #: (calibrated by python -m benchmarks.memory)
    feature_maps: float = 16.0
    #: what else matters for memory and tiling, in words
    note: str = ""


@dataclass(frozen=True, eq=False, repr=False)
class Architecture:
    """One network as srdeploy knows it; creating it links ``model`` to it (``model.architecture``)."""

    model: type[SRModel]
    #: released configuration, by the official option names
    defaults: Mapping[str, Any]
    #: whether a state dict's keys are this network's (exactly one architecture claims each layout)
    detect: Callable[[StateDict], bool]
    #: (scale, options) read back from the keys and shapes of a state dict ``detect`` claimed;
    #: may raise KeyError/IndexError for a file that lacks what it needs
    read: Callable[[StateDict], tuple[int, dict[str, Any]]]
    #: the inputs accepted at a scale and configuration
    size_rule: Callable[[int, Mapping[str, Any]], SizeRule]
    #: the official repository's test-time chop
    chop: ChopRule
    hints: Hints = field(default_factory=Hints)

    def __post_init__(self):
        self.model.architecture = self

    @property
    def name(self) -> str:
        return self.model.name

    def __repr__(self) -> str:
        return f"<Architecture {self.name} ({self.model.__module__}.{self.model.__qualname__})>"

    def build(self, scale: int, **cfg: Any) -> SRModel:
        """The network with the released configuration overridden by ``cfg``, in eval mode."""
        unknown = sorted(set(cfg) - set(self.defaults))
        if unknown:
            raise UsageError(f"{self.name} has no option {', '.join(unknown)}; its options are "
                             f"{', '.join(self.defaults)}")
        return self.model(scale, **{**self.defaults, **cfg}).eval()


# ----------------------------------------------------------------------------- the networks

class SRModel(nn.Module):
    """Base of NLSN, CSNLN and EDSR.

    ``forward`` takes [N, n_colors, H, W] in [0, rgb_range] (the official convention: released
    checkpoints use rgb_range 255) and returns [N, n_colors, scale·H, scale·W], not clamped.
    """

    name: ClassVar[str] = ""
    #: the network's description (set when its Architecture is created)
    architecture: ClassVar[Architecture]

    def __init__(self, scale: int, config: dict[str, Any]):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"{type(self).__name__}: scale {scale} is not supported (use 2, 3 or 4)")
        self.scale = scale
        self.config = dict(config)

    @property
    def rgb_range(self) -> float:
        return float(self.config["rgb_range"])

    @property
    def size_rule(self) -> SizeRule:
        return self.architecture.size_rule(self.scale, self.config)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (CSNLN's attention up-factor; 1 otherwise)."""
        return self.size_rule.multiple

    def min_pixels(self) -> int:
        """Smallest H·W the network accepts."""
        return self.size_rule.min_pixels

    def size_error(self, h: int, w: int) -> str | None:
        """Why (h, w) is not a valid input size, or None if it is."""
        rule = self.size_rule
        vh, vw = rule.valid_size(h, w)
        if h % rule.multiple or w % rule.multiple:
            return (f"{self.name} x{self.scale} needs H and W divisible by {rule.multiple}, got {h}x{w}; "
                    f"pad the input to {vh}x{vw} (runtime.infer does this for you)")
        if h * w < rule.min_pixels:
            return (f"{self.name} needs at least {rule.min_pixels} input pixels (H·W), got {h}x{w}; "
                    f"pad the input to {vh}x{vw} (runtime.infer does this for you)")
        return None

    def check_size(self, h: int, w: int) -> None:
        msg = self.size_error(h, w)
        if msg:
            raise InputSizeError(msg)

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        """Smallest (H, W) ≥ (h, w) elementwise that the network accepts."""
        return self.size_rule.valid_size(h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.name} expects a 4-d [N, C, H, W] tensor, got shape {tuple(x.shape)}")
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            self.check_size(int(x.shape[-2]), int(x.shape[-1]))
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"scale={self.scale}, config={self.config}"
