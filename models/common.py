"""Building blocks shared by the three networks, and reading their layout back from a state dict.

Module and parameter names follow the official checkpoint layout (EDSR-PyTorch lineage), so
official state dicts load with ``strict=True``: ``Sequential`` indices are part of the keys.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from .base import StateDict

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean used by every official model


def conv3(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """'Same' convolution for odd kernels (the official ``default_conv``)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """1×1 conv that subtracts (sign=-1) or adds (sign=+1) ``rgb_range · RGB_MEAN``; not trained."""

    def __init__(self, rgb_range: float, sign: int = -1):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(RGB_MEAN))
        for p in self.parameters():
            p.requires_grad_(False)


def conv_act(in_ch: int, out_ch: int, kernel_size: int, act: nn.Module | None) -> nn.Sequential:
    """Conv followed by an optional activation (the official ``BasicBlock`` without BN)."""
    layers: list[nn.Module] = [conv3(in_ch, out_ch, kernel_size)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """conv-act-conv, scaled, plus identity. Keys: ``body.0``, ``body.1`` (act), ``body.2``."""

    def __init__(self, n_feats: int, kernel_size: int = 3, act: nn.Module | None = None, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            conv3(n_feats, n_feats, kernel_size),
            act if act is not None else nn.ReLU(inplace=True),
            conv3(n_feats, n_feats, kernel_size),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: log2(scale) × (conv to 4C, PixelShuffle 2) or one (conv to 9C, PixelShuffle 3)."""

    def __init__(self, scale: int, n_feats: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv3(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale {scale} is not supported (use 2, 3 or 4)")
        super().__init__(*layers)


# ----------------------------------------------------------------------------- reading a layout back

def mean_shift_range(sd: StateDict) -> float:
    """rgb_range read back from the official MeanShift bias, -rgb_range · mean (1 or 255 in practice)."""
    bias = sd.get("sub_mean.bias")
    if bias is None or bias.numel() != 3:
        return 255.0
    value = float(-bias[0]) / RGB_MEAN[0]
    return float(round(value)) if abs(value - round(value)) < 1e-3 else value


def is_residual_backbone(sd: StateDict) -> bool:
    """The EDSR layout (NLSN's too): one head conv ``head.0`` and a sub-pixel upsampler ``tail.0``."""
    return "head.0.weight" in sd and "tail.0.0.weight" in sd


def read_residual_backbone(sd: StateDict) -> tuple[int, dict[str, Any]]:
    """(scale, options) of an EDSR-layout state dict: width, res-block count, colours, rgb_range."""
    n_feats = sd["head.0.weight"].shape[0]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.body\.0\.weight$", k))}
    first_up = sd["tail.0.0.weight"].shape[0]  # 9C: one x3 shuffle; 4C: x2, repeated (tail.0.2) for x4
    scale = 3 if first_up == 9 * n_feats else (4 if "tail.0.2.weight" in sd else 2)
    # res_scale is not in the file: released wide models (256 features) use 0.1, baselines 1.
    return scale, dict(n_resblocks=len(blocks), n_feats=n_feats, n_colors=sd["head.0.weight"].shape[1],
                       rgb_range=mean_shift_range(sd), res_scale=0.1 if n_feats >= 256 else 1.0)
