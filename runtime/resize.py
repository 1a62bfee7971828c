"""MATLAB-compatible bicubic ``imresize`` in numpy.

Super-resolution benchmarks define their LR inputs as MATLAB's
``imresize(hr, 1/s, 'bicubic')``; published PSNR tables depend on its exact
details, so this module reproduces them rather than using PIL or OpenCV:

- the cubic kernel with a = -0.5 and support 4;
- when downscaling, the kernel is stretched by 1/scale (antialiasing) and
  its height scaled by ``scale``;
- output pixel x (1-based) samples input position ``x/scale + 0.5(1 - 1/scale)``;
- out-of-range taps are mirrored symmetrically (edge pixel repeated);
- weights are normalised to sum to 1 per output pixel;
- the image is resized one dimension at a time, the dimension with the
  smallest scale factor first (rows first when equal);
- for uint8 images each one-dimensional pass rounds and saturates to uint8,
  because MATLAB's ``imresizemex`` returns the input class.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "cubic",
    "contributions",
    "output_size",
    "imresize",
    "imresize_uint8",
    "bicubic_downscale_uint8",
]

KERNEL_WIDTH = 4.0  # support of the cubic kernel, in input pixels


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def contributions(in_len: int, out_len: int, scale: float,
                  antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-pixel weights and (0-based) input indices along one axis.

    Returns ``(weights, indices)``, both of shape ``[out_len, P]``; output
    pixel i is ``sum_k weights[i, k] * in[indices[i, k]]``.
    """
    if scale < 1 and antialias:
        # Stretch the kernel so it low-passes at the output's Nyquist rate.
        def h(x):
            return scale * cubic(scale * x)
        width = KERNEL_WIDTH / scale
    else:
        h = cubic
        width = KERNEL_WIDTH

    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)       # 1-based input coordinate
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2             # MATLAB takes 2 spare taps
    ind = left[:, None] + np.arange(taps)[None, :]  # 1-based, may be out of range
    weights = h(u[:, None] - ind)
    weights /= weights.sum(axis=1, keepdims=True)

    # Symmetric padding: index sequence 1..n, n..1 repeated (edge repeated).
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    ind = mirror[np.mod(ind.astype(np.int64) - 1, 2 * in_len)]

    # Drop taps that are zero for every output pixel (they change nothing).
    used = np.any(weights != 0, axis=0)
    return weights[:, used], ind[:, used]


def output_size(in_shape: Sequence[int], scale: float | Sequence[float] | None,
                out_shape: Sequence[int] | None) -> tuple[tuple[int, int], tuple[float, float]]:
    """MATLAB's rule: size = ceil(scale * in); or scale = out / in when a size is given."""
    if (scale is None) == (out_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    h, w = int(in_shape[0]), int(in_shape[1])
    if scale is not None:
        sh, sw = (scale, scale) if np.isscalar(scale) else tuple(scale)
        sh, sw = float(sh), float(sw)
        if sh <= 0 or sw <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        return (int(math.ceil(sh * h)), int(math.ceil(sw * w))), (sh, sw)
    oh, ow = int(out_shape[0]), int(out_shape[1])
    if oh <= 0 or ow <= 0:
        raise ValueError(f"output_shape must be positive, got {out_shape}")
    return (oh, ow), (oh / h, ow / w)


def _resize_axis(img: np.ndarray, axis: int, weights: np.ndarray,
                 indices: np.ndarray) -> np.ndarray:
    """Apply one axis' contributions; taps accumulated in order, as MATLAB does."""
    shape = [1] * img.ndim
    shape[axis] = weights.shape[0]
    out = np.zeros(img.shape[:axis] + (weights.shape[0],) + img.shape[axis + 1:])
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(shape) * np.take(img, indices[:, k], axis=axis)
    return out


def _quantise_uint8(x: np.ndarray) -> np.ndarray:
    # MATLAB rounds half away from zero; values are clipped to >= 0 first,
    # so floor(x + 0.5) is that rounding (np.round would round half to even).
    return np.floor(np.clip(x, 0, 255) + 0.5).astype(np.uint8)


def _resize(img: np.ndarray, scale, out_shape, per_pass_uint8: bool) -> np.ndarray:
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    size, scales = output_size(img.shape, scale, out_shape)
    # Smallest scale first; a stable sort keeps rows first on ties.
    order = np.argsort(scales, kind="stable")
    out = img if per_pass_uint8 else img.astype(np.float64, copy=False)
    for axis in order:
        axis = int(axis)
        if size[axis] == out.shape[axis] and scales[axis] == 1:
            continue  # identity along this axis
        w, ind = contributions(img.shape[axis], size[axis], scales[axis])
        out = _resize_axis(out.astype(np.float64, copy=False), axis, w, ind)
        if per_pass_uint8:
            out = _quantise_uint8(out)
    return out if not per_pass_uint8 else out.astype(np.uint8, copy=False)


def imresize(img: np.ndarray, scale: float | Sequence[float] | None = None,
             output_shape: Sequence[int] | None = None) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` on a float HxW or HxWxC array.

    Computes and returns float64, with no clipping or rounding (callers
    quantise). Give either ``scale`` (scalar or (rows, cols); output size is
    ``ceil(scale * size)``) or ``output_shape`` (rows, cols).
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        raise TypeError("imresize works on float arrays; use imresize_uint8 for MATLAB's uint8 path")
    return _resize(img, scale, output_shape, per_pass_uint8=False)


def imresize_uint8(img: np.ndarray, scale: float | Sequence[float] | None = None,
                   output_shape: Sequence[int] | None = None) -> np.ndarray:
    """MATLAB ``imresize`` on a uint8 image: uint8 out, rounded after each axis pass."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {img.dtype}")
    return _resize(img, scale, output_shape, per_pass_uint8=True)


def bicubic_downscale_uint8(hr_uint8: np.ndarray, scale: int | float) -> np.ndarray:
    """The benchmark LR image: MATLAB ``imresize(hr, 1/scale, 'bicubic')`` on uint8."""
    if not scale or scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return imresize_uint8(hr_uint8, 1.0 / scale)
