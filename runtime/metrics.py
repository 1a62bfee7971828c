"""Image-quality and parity metrics (numpy).

Two families:
- benchmark metrics on 8-bit images as SR papers report them: PSNR and SSIM
  on the luminance (Y of MATLAB's ``rgb2ycbcr``) with ``border`` pixels
  cropped on each side (border = scale by convention);
- parity metrics between two outputs in [0, 1] (DESIGN.md section 5):
  PSNR with peak 1 and the max absolute difference.

Grayscale (HxW) inputs to ``psnr_y`` / ``ssim_y`` are already luminance and
are used as they are (no 16..235 mapping), as MATLAB SR evaluation code
does for single-channel images.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "rgb_to_y",
    "psnr",
    "psnr_y",
    "ssim",
    "ssim_y",
    "psnr_peak1",
    "max_abs_diff",
]

# MATLAB rgb2ycbcr, Y row, for R, G, B in [0, 1] giving Y in [16, 235].
_Y_COEFFS = np.array([65.481, 128.553, 24.966])


def _as_numpy(x) -> np.ndarray:
    """Accept numpy arrays and torch tensors (any device) without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()  # float64 also covers bf16/fp16
    return np.asarray(x)


def rgb_to_y(img) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` for an HxWx3 image with values in [0, 255].

    Returns float64 in [16, 235], unrounded: ``16 + (65.481 R + 128.553 G
    + 24.966 B) / 255`` with R, G, B in [0, 255].
    """
    img = _as_numpy(img).astype(np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected HxWx3, got shape {img.shape}")
    return 16.0 + img @ _Y_COEFFS / 255.0


def _luma(img) -> np.ndarray:
    img = _as_numpy(img)
    if img.ndim == 2:
        return img.astype(np.float64)  # already luminance
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0].astype(np.float64)
    return rgb_to_y(img)


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    if min(img.shape[:2]) <= 2 * border:
        raise ValueError(f"image {img.shape[:2]} too small for border {border}")
    return img[border:-border, border:-border]


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")


def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR in dB of two arrays of the same shape; inf when identical."""
    a = _as_numpy(a).astype(np.float64)
    b = _as_numpy(b).astype(np.float64)
    _check_same_shape(a, b)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(peak * peak / mse))


def psnr_y(sr, hr, border: int = 0) -> float:
    """PSNR on Y (data in [0, 255]) after cropping ``border`` pixels per side."""
    y_sr, y_hr = _luma(sr), _luma(hr)
    _check_same_shape(y_sr, y_hr)
    return psnr(_crop(y_sr, border), _crop(y_hr, border), peak=255.0)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    # fspecial('gaussian', 11, 1.5) is the outer product of this normalised 1-D kernel.
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """2-D 'valid' filtering with the separable kernel outer(g, g)."""
    k = g.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g


def ssim(a, b, data_range: float = 255.0, k1: float = 0.01, k2: float = 0.03,
         win_size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) of two 2-D images, Gaussian window, 'valid' filtering.

    Matches MATLAB ``ssim_index`` (no automatic downsampling).
    """
    a = _as_numpy(a).astype(np.float64)
    b = _as_numpy(b).astype(np.float64)
    _check_same_shape(a, b)
    if a.ndim != 2:
        raise ValueError(f"ssim expects 2-D images, got shape {a.shape}")
    if min(a.shape) < win_size:
        raise ValueError(f"image {a.shape} smaller than the {win_size}x{win_size} window")
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    g = _gaussian_1d(win_size, sigma)
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim_y(sr, hr, border: int = 0) -> float:
    """SSIM on Y (data in [0, 255], L = 255) after cropping ``border`` pixels per side."""
    y_sr, y_hr = _luma(sr), _luma(hr)
    _check_same_shape(y_sr, y_hr)
    return ssim(_crop(y_sr, border), _crop(y_hr, border), data_range=255.0)


def psnr_peak1(a, b) -> float:
    """Parity PSNR (dB) for arrays or tensors in [0, 1]; inf when identical."""
    return psnr(a, b, peak=1.0)


def max_abs_diff(a, b) -> float:
    """Largest absolute elementwise difference (computed in float64)."""
    a = _as_numpy(a).astype(np.float64)
    b = _as_numpy(b).astype(np.float64)
    _check_same_shape(a, b)
    return float(np.max(np.abs(a - b))) if a.size else 0.0
