"""Training data for :mod:`models.train`: HR images in memory with their MATLAB-bicubic LR, and the
aligned, augmented LR/HR patch batches drawn from them (seeded by the caller's numpy generator).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from models.errors import SrdeployError

__all__ = ["TrainError", "default_data_dir", "read_rgb_uint8", "PatchData", "validation_crops"]


class TrainError(SrdeployError, ValueError):
    """A bad training request; reported as one line, exit status 2."""


def default_data_dir() -> Path:
    root = Path(os.environ.get("SRDEPLOY_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return root / "data" / "train" / "T91"


def read_rgb_uint8(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


class PatchData:
    """HR images in memory with their bicubic LR; draws aligned, augmented LR/HR patch batches."""

    def __init__(self, files: list[Path], scale: int, lr_patch: int):
        from runtime.resize import bicubic_downscale_uint8

        self.scale, self.lr_patch = scale, lr_patch
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for f in files:
            hr = read_rgb_uint8(f)
            h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
            if h // scale < lr_patch or w // scale < lr_patch:
                continue  # too small for one patch
            hr = np.ascontiguousarray(hr[:h, :w])
            self.pairs.append((bicubic_downscale_uint8(hr, scale), hr))
        if not self.pairs:
            raise TrainError(f"no training image is at least {lr_patch * scale} px on each side "
                             f"(LR patch {lr_patch} at x{scale})")
        # images drawn in proportion to their number of patch positions (big images more often)
        area = np.array([(lr.shape[0] - lr_patch + 1) * (lr.shape[1] - lr_patch + 1) for lr, _ in self.pairs],
                        dtype=np.float64)
        self.p = area / area.sum()

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, p = self.scale, self.lr_patch
        lrs, hrs = [], []
        for _ in range(n):
            lr, hr = self.pairs[int(rng.choice(len(self.pairs), p=self.p))]
            y = int(rng.integers(0, lr.shape[0] - p + 1))
            x = int(rng.integers(0, lr.shape[1] - p + 1))
            a = lr[y:y + p, x:x + p]
            b = hr[y * s:(y + p) * s, x * s:(x + p) * s]
            k = int(rng.integers(0, 8))  # one of the 8 flips/rotations of the square
            if k & 1:
                a, b = a[:, ::-1], b[:, ::-1]
            if k & 2:
                a, b = a[::-1], b[::-1]
            if k & 4:
                a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
            lrs.append(np.ascontiguousarray(a))
            hrs.append(np.ascontiguousarray(b))
        to = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div_(255.0)  # noqa: E731
        return to(lrs), to(hrs)


def validation_crops(data: PatchData, n: int = 8, seed: int = 12345) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed LR/HR crops (no augmentation) for the PSNR that the log and the summary report."""
    rng = np.random.default_rng(seed)
    p, s = data.lr_patch, data.scale
    lrs, hrs = [], []
    for i in rng.choice(len(data.pairs), size=min(n, len(data.pairs)), replace=False):
        lr, hr = data.pairs[int(i)]
        y = (lr.shape[0] - p) // 2
        x = (lr.shape[1] - p) // 2
        lrs.append(lr[y:y + p, x:x + p])
        hrs.append(hr[y * s:(y + p) * s, x * s:(x + p) * s])
    to = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div_(255.0)  # noqa: E731
    return to(lrs), to(hrs)
