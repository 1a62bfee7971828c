"""What every srdeploy network shares: its identity, its size rules and its input range."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import SrdeployError


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


class SRModel(nn.Module):
    """Base of NLSN, CSNLN and EDSR.

    ``forward`` takes [N, n_colors, H, W] in [0, rgb_range] (the official convention: released
    checkpoints use rgb_range 255) and returns [N, n_colors, scale·H, scale·W], not clamped.
    """

    name: str = ""
    #: H and W must be multiples of this (CSNLN's attention up-factor; 1 otherwise)
    size_multiple: int = 1

    def __init__(self, scale: int, config: dict[str, Any]):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"{type(self).__name__}: scale {scale} is not supported (use 2, 3 or 4)")
        self.scale = scale
        self.config = dict(config)

    @property
    def rgb_range(self) -> float:
        return float(self.config["rgb_range"])

    def min_pixels(self) -> int:
        """Smallest H·W the network accepts."""
        return 1

    def size_error(self, h: int, w: int) -> str | None:
        """Why (h, w) is not a valid input size, or None if it is."""
        m = self.size_multiple
        vh, vw = self.valid_size(h, w)
        if h % m or w % m:
            return (f"{self.name} x{self.scale} needs H and W divisible by {m}, got {h}x{w}; "
                    f"pad the input to {vh}x{vw} (runtime.infer does this for you)")
        if h * w < self.min_pixels():
            return (f"{self.name} needs at least {self.min_pixels()} input pixels (H·W), got {h}x{w}; "
                    f"pad the input to {vh}x{vw} (runtime.infer does this for you)")
        return None

    def check_size(self, h: int, w: int) -> None:
        msg = self.size_error(h, w)
        if msg:
            raise InputSizeError(msg)

    def valid_size(self, h: int, w: int) -> tuple[int, int]:
        """Smallest (H, W) ≥ (h, w) elementwise that the network accepts."""
        return valid_size(h, w, self.size_multiple, self.min_pixels())

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
