"""Building blocks shared by the three networks.

Module and parameter names follow the official checkpoint layout (EDSR-PyTorch lineage), so
official state dicts load with ``strict=True``: ``Sequential`` indices are part of the keys.
"""
from __future__ import annotations

import math

import torch
from torch import nn

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
