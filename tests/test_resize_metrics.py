"""MATLAB-compatible imresize and the PSNR / SSIM metrics (CPU, fast)."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.metrics import (max_abs_diff, psnr, psnr_peak1, psnr_y, rgb_to_y, ssim,
                             ssim_y)
from runtime.resize import (bicubic_downscale_uint8, contributions, cubic, imresize,
                            imresize_uint8)

# ----------------------------------------------------------------- kernel

def test_cubic_kernel_values():
    # Keys' kernel, a = -0.5, at the offsets an x2 upscale uses (exact binary fractions).
    x = np.array([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5])
    want = np.array([1, 111 / 128, 0.5625, 29 / 128, 0, -9 / 128, -0.0625, -3 / 128, 0, 0])
    np.testing.assert_array_equal(cubic(x), want)
    np.testing.assert_array_equal(cubic(-x), want)


# ----------------------------------------------------------------- imresize

def test_upscale_hand_computed_values():
    # x2 upscale of [1 2 3 4]: output pixel 1 samples u = 0.75 (1-based) with taps
    # at distances 1.75, 0.75, 0.25, 1.25 on pixels 0 (mirror of 1), 1, 1, 2:
    #   -3/128*2 + 29/128*1 + 111/128*1 - 9/128*2 = 0.90625
    # output pixel 2 samples u = 1.25: -9/128*1 + 111/128*1 + 29/128*2 - 3/128*3 = 1.1796875
    # In the interior bicubic reproduces a linear ramp exactly (2.25, 2.75).
    out = imresize(np.array([[1.0, 2, 3, 4]]), output_shape=(1, 8))
    want = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375]
    np.testing.assert_allclose(out[0], want, rtol=0, atol=1e-12)


def test_constant_image_stays_constant():
    img = np.full((17, 23, 3), 0.37)
    for scale in (0.5, 1 / 3, 0.25, 2, 3, 4):
        np.testing.assert_allclose(imresize(img, scale), 0.37, rtol=0, atol=1e-12)
    img8 = np.full((24, 36, 3), 201, np.uint8)
    for scale in (2, 3, 4):
        assert (bicubic_downscale_uint8(img8, scale) == 201).all()
        assert (imresize_uint8(img8, scale) == 201).all()


def test_downscale_by_2_of_linear_ramp():
    # scale 1/2: output i (1-based) samples u = 2i - 0.5 with a symmetric 8-tap
    # kernel, so away from the mirrored edges a ramp v_j = j gives exactly 2i - 0.5.
    ramp = np.tile(np.arange(1, 33, dtype=np.float64), (6, 1))  # 6 x 32, ramp along columns
    out = imresize(ramp, 0.5)
    assert out.shape == (3, 16)
    i = np.arange(1, 17)
    interior = slice(2, 14)  # taps j in [2i-4, 2i+3] stay inside 1..32
    np.testing.assert_allclose(out[:, interior], np.broadcast_to(2 * i[interior] - 0.5, (3, 12)),
                               rtol=0, atol=1e-12)
    # at the edges the mirrored (not extended) ramp changes the result
    assert abs(out[0, 0] - 1.5) > 1e-3 and abs(out[0, -1] - 31.5) > 1e-3


@pytest.mark.parametrize("scale,in_shape,out_shape", [
    (0.5, (5, 7), (3, 4)),        # ceil(scale * size)
    (1 / 3, (9, 12), (3, 4)),
    (1 / 4, (10, 13), (3, 4)),
    (2, (5, 7), (10, 14)),
    (3, (4, 5), (12, 15)),
    ((2, 0.5), (4, 8), (8, 4)),   # per-axis scales
])
def test_shape_rules(scale, in_shape, out_shape):
    assert imresize(np.zeros(in_shape), scale).shape == out_shape
    out = imresize(np.zeros(in_shape + (3,), np.float32), scale)
    assert out.shape == out_shape + (3,) and out.dtype == np.float64


def test_output_shape_argument_and_errors():
    assert imresize(np.zeros((10, 10)), output_shape=(7, 13)).shape == (7, 13)
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 2, output_shape=(8, 8))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), -2)
    with pytest.raises(ValueError):
        imresize(np.zeros((1, 4, 4, 3)), 2)
    with pytest.raises(TypeError):
        imresize(np.zeros((4, 4), np.uint8), 2)
    with pytest.raises(TypeError):
        imresize_uint8(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError):
        bicubic_downscale_uint8(np.zeros((4, 4), np.uint8), 0)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 2, 4])
def test_antialias_kernel_width(scale):
    # Downscaling stretches the kernel from 4 to 4/scale input pixels (and
    # scales its height by `scale`); upscaling keeps 4.
    in_len = 96
    out_len = int(math.ceil(in_len * scale))
    w, ind = contributions(in_len, out_len, scale)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert ind.min() >= 0 and ind.max() < in_len
    assert w.shape[1] <= math.ceil(4 / min(scale, 1)) + 2
    half = 2 / min(scale, 1)
    x = np.arange(1, out_len + 1)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based sample positions
    for r in range(out_len // 4, 3 * out_len // 4):  # interior rows: no mirroring
        nz = np.abs(w[r]) > 0
        d = u[r] - (ind[r, nz] + 1)
        assert np.abs(d).max() < half and np.abs(d).max() >= half - 1
        want = cubic(d * min(scale, 1))
        np.testing.assert_allclose(w[r, nz], want / want.sum(), rtol=0, atol=1e-12)


def test_symmetric_boundary_indices():
    # First x2 output of a 4-pixel line: 1-based taps -1, 0, 1, 2 (after dropping
    # all-zero columns) read pixels 2, 1, 1, 2 (edge repeated, then mirrored).
    w, ind = contributions(4, 8, 2.0)
    used = np.abs(w[0]) > 0
    assert list(ind[0][used]) == [1, 0, 0, 1]
    w, ind = contributions(4, 8, 2.0)
    used = np.abs(w[-1]) > 0
    assert list(ind[-1][used]) == [2, 3, 3, 2]


def test_matches_pil_in_the_interior():
    # PIL's BICUBIC uses the same kernel (a = -0.5), sample positions and
    # antialiasing, but clamps instead of mirroring at the edges: an independent
    # check of everything but the boundary (float32 precision).
    rng = np.random.default_rng(0)
    x = rng.random((48, 60))
    for scale, margin in ((0.5, 3), (0.25, 3), (2, 4), (3, 6)):
        ours = imresize(x, scale)
        pil = np.asarray(Image.fromarray(x.astype(np.float32), "F")
                         .resize((ours.shape[1], ours.shape[0]), Image.BICUBIC))
        inner = (slice(margin, -margin),) * 2
        np.testing.assert_allclose(ours[inner], pil[inner], rtol=0, atol=1e-6)


def test_uint8_rounds_after_each_pass_smallest_scale_first():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)

    def one_pass(a, axis, scale):
        w, ind = contributions(a.shape[axis], int(math.ceil(a.shape[axis] * scale)), scale)
        out = sum(np.expand_dims(w[:, k], tuple(i for i in range(a.ndim) if i != axis))
                  * np.take(a.astype(np.float64), ind[:, k], axis=axis) for k in range(w.shape[1]))
        return np.floor(np.clip(out, 0, 255) + 0.5).astype(np.uint8)

    # (rows 0.5, cols 2): rows first; (rows 2, cols 0.5): columns first
    np.testing.assert_array_equal(imresize_uint8(img, (0.5, 2)),
                                  one_pass(one_pass(img, 0, 0.5), 1, 2))
    np.testing.assert_array_equal(imresize_uint8(img, (2, 0.5)),
                                  one_pass(one_pass(img, 1, 0.5), 0, 2))
    # equal scales: rows first
    np.testing.assert_array_equal(bicubic_downscale_uint8(img, 2),
                                  one_pass(one_pass(img, 0, 0.5), 1, 0.5))
    # per-pass rounding stays within one level of the float path
    diff = bicubic_downscale_uint8(img, 2).astype(float) - np.clip(imresize(img.astype(float), 0.5), 0, 255)
    assert np.abs(diff).max() <= 1.0


# ----------------------------------------------------------------- metrics

def test_rgb_to_y():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(img)[0], [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    with pytest.raises(ValueError):
        rgb_to_y(np.zeros((4, 4)))


def test_psnr_known_values():
    a = np.full((8, 8), 100.0)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1
    assert psnr_peak1(a / 255, a / 255) == math.inf
    assert psnr_peak1(np.zeros(10), np.full(10, 0.01)) == pytest.approx(40.0)
    with pytest.raises(ValueError):
        psnr(np.zeros(3), np.zeros(4))


def test_psnr_y_border_and_grayscale():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:2] = 0  # damage only the 2-pixel border
    assert psnr_y(sr, hr, border=2) == math.inf
    assert psnr_y(sr, hr, border=1) < 60
    # grayscale: used as is (already luminance), not mapped to 16..235
    g1 = rng.integers(0, 256, (20, 20)).astype(np.uint8)
    g2 = np.clip(g1.astype(int) + 3, 0, 255).astype(np.uint8)
    assert psnr_y(g1, g2, border=0) == pytest.approx(psnr(g1, g2))
    # Y of RGB data: a uniform offset d in every channel is an offset d*219/255 in Y
    off = np.clip(hr.astype(float), 0, 250)
    assert psnr_y(off + 5, off) == pytest.approx(20 * math.log10(255 / (5 * 219 / 255)))


def _ssim_bruteforce(a, b):
    # Direct 11x11 windows, fspecial('gaussian', 11, 1.5), no separability.
    x = np.arange(11) - 5
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (g * pa).sum(), (g * pb).sum()
            va = (g * pa * pa).sum() - ma * ma
            vb = (g * pb * pb).sum() - mb * mb
            cov = (g * pa * pb).sum() - ma * mb
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return np.mean(vals)


def test_ssim_matches_bruteforce_and_sanity():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (22, 25)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert ssim(a, b) == pytest.approx(_ssim_bruteforce(a, b), rel=1e-10)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    c = np.clip(a + rng.normal(0, 60, a.shape), 0, 255)
    assert 0 < ssim(a, c) < ssim(a, b) < 1
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))  # smaller than the window


def test_ssim_y_identical_and_border():
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    assert ssim_y(hr, hr, border=3) == pytest.approx(1.0, abs=1e-12)
    sr = hr.copy()
    sr[:, :3] = 255
    assert ssim_y(sr, hr, border=3) == pytest.approx(1.0, abs=1e-12)
    assert ssim_y(sr, hr, border=0) < 1.0


def test_parity_metrics_accept_tensors():
    a = torch.rand(1, 3, 8, 8)
    b = a + 1e-3
    assert psnr_peak1(a, a.clone()) == math.inf
    assert psnr_peak1(a, b) == pytest.approx(60.0, abs=1e-3)
    assert max_abs_diff(a, b) == pytest.approx(1e-3, rel=1e-4)
    assert max_abs_diff(a.half(), a.half()) == 0.0
    assert max_abs_diff(np.zeros(3), np.array([0, -2.5, 1])) == 2.5



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_psnr_takes_tensors_of_any_float_dtype(dtype):
    """The one parity PSNR (tests and benchmarks use it): tensors as they are (grad, dtype), numpy and
    torch mixed, never broadcast."""
    a = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    b = (a.double() + 1e-3).to(dtype)
    want = psnr(a.double().numpy(), b.double().numpy(), peak=1.0)
    assert 40 < want < 80
    assert psnr_peak1(a, b) == want and psnr_peak1(a.double().numpy(), b) == want
    assert psnr(a.requires_grad_(), b, peak=255.0) == pytest.approx(want + 20 * math.log10(255))
    assert psnr_peak1(a, a.detach().clone()) == math.inf
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr_peak1(a, b[..., :6])


def test_psnr_math_is_float64():
    # float64 tensors 2^-30 apart: a difference fp32 math would round away (1 + 2^-30 is 1 in fp32)
    a = torch.ones(4, dtype=torch.float64)
    assert psnr_peak1(a, a + 2 ** -30) == pytest.approx(600 * math.log10(2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tensors on another device)")
def test_psnr_takes_cuda_tensors():
    a = torch.rand(3, 4, device="cuda", dtype=torch.float16)
    assert psnr_peak1(a, a + 1e-2) == psnr_peak1(a.cpu(), (a + 1e-2).cpu())
