"""runtime.tiling and runtime.pipeline: blended tiles, official chop, self-ensemble, padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import models
from runtime import tiling
from runtime.backends import Backend, TorchBackend
from runtime.metrics import psnr_peak1
from runtime.pipeline import forward_x8, upscale

TINY = {
    "edsr": dict(n_resblocks=1, n_feats=8, rgb_range=1),
    "nlsn": dict(n_resblocks=1, n_feats=16, chunk_size=16, n_hashes=2, rgb_range=1),
    "csnln": dict(n_feats=16, depth=1, rgb_range=1),
}


def tiny_backend(name: str, scale: int = 2, seed: int = 0) -> TorchBackend:
    torch.manual_seed(seed)
    return TorchBackend(models.build(name, scale, **TINY[name]))


@pytest.fixture(scope="module")
def baby(shared_dir) -> np.ndarray:
    """A small real image: Set5 baby, downscaled to 52×60."""
    im = Image.open(shared_dir / "data/benchmark/Set5/HR/baby.png").convert("RGB").resize((60, 52), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255


class Recorder(Backend):
    """A stand-in network: nearest-neighbour upscale plus a per-call offset; records input sizes."""

    def __init__(self, name="edsr", scale=2, step=0.0, multiple=1, min_pixels=1):
        self.name, self.scale, self.step = name, scale, step
        self.multiple, self.min_pixels = multiple, min_pixels
        self.shapes: list[tuple[int, int]] = []

    def valid_size(self, h, w):
        m = self.multiple
        h, w = -(-h // m) * m, -(-w // m) * m
        while h * w < self.min_pixels:
            h, w = (h + m, w) if h <= w else (h, w + m)
        return h, w

    def __call__(self, x):
        assert self.valid_size(*x.shape[-2:]) == tuple(x.shape[-2:]), "backend got an invalid size"
        self.shapes.append(tuple(x.shape[-2:]))
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") + self.step * len(self.shapes)

    @classmethod
    def open(cls, weights, **kw):  # pragma: no cover - not used
        raise NotImplementedError


# ----------------------------------------------------------------------------- blended tiles

def test_split_even_and_weights_partition_of_unity():
    assert tiling.split_even(10, 0) == [(0, 10)]
    assert tiling.split_even(10, 4) == [(0, 3), (3, 7), (7, 10)]  # 3 near-equal parts, no sliver
    for n, tile, band, s in [(50, 16, 8, 2), (50, 16, 0, 3), (37, 5, 12, 4)]:
        cores = tiling.split_even(n, tile)
        w = tiling.axis_weights(cores, n, s, band)
        np.testing.assert_allclose(w.sum(0), 1, atol=1e-12)
        assert (w >= 0).all()
        u = (np.arange(n * s) + 0.5) / s
        for k, (lo, hi) in enumerate(cores):  # zero beyond half the band outside the core
            outside = (u <= lo - band / 2) | (u >= hi + band / 2) if band else (u < lo) | (u >= hi)
            assert not w[k][outside].any()


@pytest.mark.parametrize("tile,pad", [(24, 16), (17, 12), (8, 14), (40, 20)])
def test_tiled_equals_untiled_edsr(baby, tile, pad):
    # Tiny EDSR sees about 6 LR pixels around a pixel, less than pad/2: tiling is exact.
    b = tiny_backend("edsr")
    full = upscale(baby, b)
    tiled = upscale(baby, b, tile=tile, tile_pad=pad)
    assert tiled.shape == full.shape == (104, 120, 3)
    assert psnr_peak1(tiled, full) >= 100


def test_tiled_close_to_untiled_nlsn(baby):
    # Non-local attention sees the whole image: tiling can only approximate it.
    b = tiny_backend("nlsn")
    full = upscale(baby, b)
    assert psnr_peak1(upscale(baby, b, tile=32, tile_pad=16), full) >= 40


def test_blending_is_seam_free():
    # Each tile's output is offset by a different constant: hard cuts show a step of the
    # offset difference, the blend spreads it over the band.
    img = np.full((40, 40, 3), 0.5, np.float32)
    step, pad, s = 0.01, 8, 2
    hard = upscale(img, Recorder(step=step), tile=10, tile_pad=0)
    soft_backend = Recorder(step=step)
    soft = upscale(img, soft_backend, tile=10, tile_pad=pad)
    assert len(soft_backend.shapes) == 16
    jumps = lambda a: max(np.abs(np.diff(a, axis=0)).max(), np.abs(np.diff(a, axis=1)).max())
    assert jumps(hard) >= step * 0.99  # the seams are there without blending
    max_offset_gap = step * 5  # neighbours differ by at most 4 calls (row-major order): 1 or 4 steps
    assert jumps(soft) <= max_offset_gap / (pad * s) + 1e-6


def test_only_tiles_reach_the_backend():
    img = np.random.default_rng(0).random((70, 50, 3), dtype=np.float32)
    rec = Recorder()
    out = upscale(img, rec, tile=16, tile_pad=6)
    np.testing.assert_allclose(out, img.repeat(2, 0).repeat(2, 1), atol=1e-6)
    assert len(rec.shapes) == 5 * 4
    assert max(h for h, _ in rec.shapes) <= 14 + 12 and max(w for _, w in rec.shapes) <= 13 + 12


def test_tiles_are_grown_to_valid_sizes():
    # A tile smaller than the network accepts is grown inside the image, never refused.
    img = np.random.default_rng(1).random((31, 23, 3), dtype=np.float32)
    rec = Recorder(multiple=3, min_pixels=150)
    out = upscale(img, rec, tile=5, tile_pad=2)
    np.testing.assert_allclose(out, img.repeat(2, 0).repeat(2, 1), atol=1e-6)
    assert all(h % 3 == 0 and w % 3 == 0 and h * w >= 150 for h, w in rec.shapes)


def test_progress_counts_tiles():
    class Bar:
        def __init__(self):
            self.total, self.n = None, 0

        def reset(self, total):
            self.total, self.n = total, 0

        def update(self, n=1):
            self.n += n

    img = np.zeros((30, 20, 3), np.float32)
    bar = Bar()
    upscale(img, Recorder(), tile=8, tile_pad=2, self_ensemble=True, progress=bar)
    assert bar.n == bar.total == 4 * 3 * 8
    upscale(np.zeros((40, 40, 3), np.float32), Recorder(), official_chop=True, progress=bar)
    assert bar.n == bar.total == 4


# ----------------------------------------------------------------------------- padding

@pytest.mark.parametrize("name,scale,size,tile", [
    ("nlsn", 2, (3, 4), 0),      # 12 positions < chunk_size 16
    ("nlsn", 2, (11, 13), 5),    # tiles below chunk_size
    ("csnln", 2, (13, 11), 0),   # odd sizes, up-factor 2
    ("csnln", 3, (10, 8), 0),    # not multiples of 3
    ("csnln", 2, (15, 13), 7),   # odd tiles
])
def test_padding_gives_the_right_size(name, scale, size, tile):
    img = np.random.default_rng(2).random((*size, 3), dtype=np.float32)
    b = tiny_backend(name, scale)
    out = upscale(img, b, tile=tile, tile_pad=4)
    assert out.shape == (size[0] * scale, size[1] * scale, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_csnln_official_chop_odd_size():
    img = np.random.default_rng(3).random((31, 29, 3), dtype=np.float32)
    out = upscale(img, tiny_backend("csnln"), official_chop=True)
    assert out.shape == (62, 58, 3)


# ----------------------------------------------------------------------------- official chop

def manual_chop(x, model, scale, variant, shave=10, min_size=120000):
    """The official forward_chop, written out directly as the oracle (one GPU)."""
    b, c, h, w = x.size()
    h_half, w_half = h // 2, w // 2
    h_size, w_size = h_half + shave, w_half + shave
    if variant == "csnln":
        h_size += scale - h_size % scale
        w_size += scale - w_size % scale
    else:
        h_size += 4 - h_size % 4
        w_size += 8 - w_size % 8
    lr_list = [x[:, :, 0:h_size, 0:w_size], x[:, :, 0:h_size, (w - w_size):w],
               x[:, :, (h - h_size):h, 0:w_size], x[:, :, (h - h_size):h, (w - w_size):w]]
    if w_size * h_size < min_size:
        sr_list = [model(p) for p in lr_list]
    else:
        sr_list = [manual_chop(p, model, scale, variant, shave, min_size) for p in lr_list]
    h, w = scale * h, scale * w
    h_half, w_half = scale * h_half, scale * w_half
    h_size, w_size = scale * h_size, scale * w_size
    output = x.new(b, c, h, w)
    output[:, :, 0:h_half, 0:w_half] = sr_list[0][:, :, 0:h_half, 0:w_half]
    output[:, :, 0:h_half, w_half:w] = sr_list[1][:, :, 0:h_half, (w_size - w + w_half):w_size]
    output[:, :, h_half:h, 0:w_half] = sr_list[2][:, :, (h_size - h + h_half):h_size, 0:w_half]
    output[:, :, h_half:h, w_half:w] = sr_list[3][:, :, (h_size - h + h_half):h_size, (w_size - w + w_half):w_size]
    return output


def test_chop_rules_round_like_the_official_code():
    assert tiling.NLSN_CHOP.quadrant(60, 60, 2) == (44, 48)  # 40 is a multiple of 4 and 8: a full step added
    assert tiling.NLSN_CHOP.quadrant(61, 75, 4) == (44, 48)
    assert tiling.CSNLN_CHOP.quadrant(60, 62, 3) == (42, 42)
    assert tiling.CSNLN_CHOP.quadrant(70, 70, 3) == (48, 48)  # 45 -> 48
    assert tiling.chop_rule("edsr") is tiling.NLSN_CHOP and tiling.chop_rule("csnln") is tiling.CSNLN_CHOP
    assert (tiling.NLSN_CHOP.min_size, tiling.CSNLN_CHOP.min_size) == (120000, 3600)


@pytest.mark.parametrize("variant,scale,size,min_size", [
    ("nlsn", 2, (70, 90), 1500),   # two levels: 16 pieces
    ("nlsn", 2, (70, 90), None),   # official min_size: one level
    ("csnln", 2, (66, 58), 900),
    ("csnln", 3, (61, 64), 1200),
])
def test_official_chop_matches_the_official_code(variant, scale, size, min_size):
    name = "csnln" if variant == "csnln" else "edsr"  # EDSR is fast and uses the NLSN rule
    if name == "csnln":  # a fast stand-in with CSNLN's size rule; chop only cares about sizes
        net = lambda t: F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)
    else:
        net = tiny_backend("edsr", scale)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    rule = tiling.chop_rule(name)
    calls = []
    counted = lambda t: (calls.append(t.shape), net(t))[1]
    ours = tiling.official_chop(x, counted, scale, rule, min_size=min_size)
    kw = {} if min_size is None else {"min_size": min_size}
    theirs = manual_chop(x, net, scale, variant, **kw)
    assert torch.equal(ours, theirs)
    assert len(calls) == tiling.count_chop_pieces(*size, scale, rule, min_size)
    if variant == "nlsn" and min_size == 1500:
        assert len(calls) == 16


def test_official_chop_pastes_in_the_right_place():
    # A receptive field under shave = 10: chopping changes nothing.
    b = tiny_backend("edsr")
    x = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    whole = b(x)
    chopped = tiling.official_chop(x, b, 2, tiling.NLSN_CHOP, min_size=1500)
    assert psnr_peak1(chopped.numpy(), whole.numpy()) >= 100


def test_official_chop_too_small_to_split_runs_whole():
    rec = Recorder()
    x = torch.rand(1, 3, 12, 30)  # quadrant height 16 > 12: the official code cannot split this
    out = tiling.official_chop(x, rec, 2, tiling.NLSN_CHOP)
    assert rec.shapes == [(12, 30)] and out.shape == (1, 3, 24, 60)


# ----------------------------------------------------------------------------- self-ensemble

def official_x8(x, forward):
    """forward_x8 as in the official code: numpy flips and transposes, mean of the concatenation."""
    def tf(v, op):
        a = v.numpy()
        a = {"v": a[:, :, :, ::-1], "h": a[:, :, ::-1, :], "t": a.transpose(0, 1, 3, 2)}[op].copy()
        return torch.from_numpy(a)

    lr_list = [x]
    for op in "vht":
        lr_list.extend([tf(t, op) for t in lr_list])
    sr_list = [forward(aug) for aug in lr_list]
    for i in range(len(sr_list)):
        if i > 3:
            sr_list[i] = tf(sr_list[i], "t")
        if i % 4 > 1:
            sr_list[i] = tf(sr_list[i], "h")
        if (i % 4) % 2 == 1:
            sr_list[i] = tf(sr_list[i], "v")
    return torch.cat(sr_list, dim=0).mean(dim=0, keepdim=True)


def test_self_ensemble_is_the_official_mean_of_eight(baby):
    b = tiny_backend("edsr")
    x = torch.from_numpy(baby.transpose(2, 0, 1).copy())[None]
    expected = official_x8(x, b)
    torch.testing.assert_close(forward_x8(x, b), expected, rtol=0, atol=1e-6)
    ours = upscale(baby, b, self_ensemble=True)
    np.testing.assert_allclose(ours, expected[0].clamp(0, 1).permute(1, 2, 0).numpy(), atol=1e-6)
    assert psnr_peak1(ours, upscale(baby, b)) < 80  # the ensemble does change the result


def test_self_ensemble_with_official_chop_chops_each_pass(baby):
    b = tiny_backend("edsr")
    x = torch.from_numpy(baby.transpose(2, 0, 1).copy())[None]
    expected = official_x8(x, lambda t: manual_chop(t, b, 2, "nlsn"))
    ours = upscale(baby, b, self_ensemble=True, official_chop=True)
    np.testing.assert_allclose(ours, expected[0].clamp(0, 1).permute(1, 2, 0).numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- channels

def test_gray_and_alpha(baby):
    b = tiny_backend("edsr")
    gray = baby.mean(axis=2, keepdims=True)
    out = upscale(gray, b)
    assert out.shape == (104, 120, 1)
    np.testing.assert_allclose(out[..., 0], upscale(np.repeat(gray, 3, 2), b).mean(2), atol=1e-6)
    assert upscale(gray[..., 0], b).shape == (104, 120, 1)  # H×W is gray too

    alpha = np.linspace(0, 1, 52 * 60, dtype=np.float32).reshape(52, 60, 1)
    rgba = upscale(np.concatenate([baby, alpha], 2), b)
    assert rgba.shape == (104, 120, 4)
    np.testing.assert_allclose(rgba[..., :3], upscale(baby, b), atol=1e-6)
    bicubic = np.asarray(Image.fromarray(alpha[..., 0]).resize((120, 104), Image.BICUBIC))
    np.testing.assert_allclose(rgba[..., 3], np.clip(bicubic, 0, 1), atol=1e-6)
    la = upscale(np.concatenate([gray, alpha], 2), b)
    assert la.shape == (104, 120, 2)


def test_bad_arguments():
    b = Recorder()
    with pytest.raises(ValueError, match="exclusive"):
        upscale(np.zeros((8, 8, 3), np.float32), b, tile=4, official_chop=True)
    with pytest.raises(ValueError, match="channels"):
        upscale(np.zeros((8, 8, 5), np.float32), b)
