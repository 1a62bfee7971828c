"""Splitting an image into tiles for the network and putting the results back together.

Two schemes:

``tiled_forward`` (the default): the image is cut into a grid of *cores* of at most
``tile`` LR pixels a side; each tile sent to the network is its core widened by
``tile_pad`` LR pixels of context on every side (clipped to the image), then grown if
needed to a size the network accepts. Results are blended with feathered weights: across
each cut the weight of one tile falls linearly from 1 to 0 over a band ``tile_pad`` wide
centred on the cut while its neighbour's rises, so the weights sum to one and there is no
seam. Inside the band a tile is used only where it has at least ``tile_pad / 2`` pixels of
context, so for a network whose receptive field reaches at most ``tile_pad / 2`` LR pixels
the tiled output equals the untiled one (up to float rounding). Non-local networks see the
whole image and can only be approximated; more context (``tile_pad``) is closer.

``official_chop``: the official NLSN / CSNLN test-time ``forward_chop``, reproduced
exactly (recursive four-quadrant split with ``shave`` pixels of overlap, quadrant sizes
rounded up by each repository's own rule, results pasted without blending). The rule of
each network is part of its description (``models.architecture(name).chop``).

The image itself stays where it is (the CPU); only tiles are passed to ``forward``, which
moves them to the device.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

# Each network's description carries its chop rule (models.base.Architecture.chop); the rule
# type and the two official rules are re-exported here.
from models.architectures import architecture
from models.base import ChopRule
from models.csnln import CSNLN_CHOP
from models.nlsn import NLSN_CHOP

__all__ = [
    "pad_to",
    "run_padded",
    "split_even",
    "axis_weights",
    "tile_windows",
    "count_tiles",
    "tiled_forward",
    "ChopRule",
    "NLSN_CHOP",
    "CSNLN_CHOP",
    "chop_rule",
    "official_chop",
    "count_chop_pieces",
]

Forward = Callable[[torch.Tensor], torch.Tensor]
ValidSize = Callable[[int, int], "tuple[int, int]"]


def _noop() -> None:
    pass


def pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pad [N, C, H, W] at the bottom and right to (h, w): reflect where the image is big
    enough for it (it keeps edges natural), replicate otherwise."""
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} down to {(h, w)}")
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def run_padded(forward: Forward, x: torch.Tensor, scale: int, valid_size: ValidSize) -> torch.Tensor:
    """``forward(x)``, padding x to a valid size first and cropping the result back."""
    h, w = x.shape[-2:]
    vh, vw = valid_size(h, w)
    if (vh, vw) == (h, w):
        return forward(x)
    return forward(pad_to(x, vh, vw))[..., :scale * h, :scale * w]


# ----------------------------------------------------------------------------- blended tiles

def split_even(n: int, tile: int) -> list[tuple[int, int]]:
    """Cut [0, n) into the fewest near-equal parts of at most ``tile`` (no sliver at the end)."""
    if tile <= 0 or tile >= n:
        return [(0, n)]
    k = -(-n // tile)
    cuts = [round(i * n / k) for i in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def axis_weights(cores: list[tuple[int, int]], n: int, scale: int, band: float) -> np.ndarray:
    """Blend weights along one axis, [len(cores), scale·n], summing to 1 at every output pixel.

    Across each interior cut c the weight ramps linearly over LR positions [c - band/2,
    c + band/2] (evaluated at HR pixel centres); image borders get no ramp. ``band`` 0
    gives hard cuts.
    """
    u = (np.arange(n * scale) + 0.5) / scale  # HR pixel centres in LR coordinates
    half = band / 2
    weights = np.ones((len(cores), n * scale))
    for k, (lo, hi) in enumerate(cores):
        if lo > 0:
            weights[k] *= np.clip((u - (lo - half)) / band, 0, 1) if band > 0 else (u >= lo)
        if hi < n:
            weights[k] *= np.clip((hi + half - u) / band, 0, 1) if band > 0 else (u < hi)
    # Ramps of adjacent cuts overlap when a core is narrower than the band: renormalise.
    return weights / weights.sum(axis=0, keepdims=True)


def _fit_window(lo: int, hi: int, length: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) to ``length`` inside [0, limit): extend the end, then the start."""
    hi = min(limit, lo + length)
    return max(0, hi - length), hi


def _valid_window(y0, y1, x0, x1, hp, wp, valid_size: ValidSize):
    """Grow a window inside the (valid) padded image until the network accepts its size."""
    while True:
        h, w = y1 - y0, x1 - x0
        vh, vw = valid_size(h, w)
        if (vh, vw) == (h, w):
            return y0, y1, x0, x1
        nh, nw = min(vh, hp), min(vw, wp)
        if (nh, nw) == (h, w):  # the growth it asks for is blocked by an image edge: use the other side
            if w < wp:
                nw = w + 1
            else:
                nh = h + 1
        y0, y1 = _fit_window(y0, y1, nh, hp)
        x0, x1 = _fit_window(x0, x1, nw, wp)


def tile_windows(h: int, w: int, tile: int, tile_pad: int, valid_size: ValidSize):
    """The tiling plan for an h×w image: (padded size, cores per axis, windows).

    Windows are ``(i, j, y0, y1, x0, x1)`` in the padded image, for core i along H and j along W.
    """
    hp, wp = valid_size(h, w)
    cores_y, cores_x = split_even(h, tile), split_even(w, tile)
    windows = []
    for i, (cy0, cy1) in enumerate(cores_y):
        for j, (cx0, cx1) in enumerate(cores_x):
            if len(cores_y) == 1 and len(cores_x) == 1:
                box = (0, hp, 0, wp)  # a single tile is the whole (padded) image
            else:
                box = (max(0, cy0 - tile_pad), min(hp, cy1 + tile_pad),
                       max(0, cx0 - tile_pad), min(wp, cx1 + tile_pad))
            windows.append((i, j, *_valid_window(*box, hp, wp, valid_size)))
    return (hp, wp), (cores_y, cores_x), windows


def count_tiles(h: int, w: int, tile: int) -> int:
    return len(split_even(h, tile)) * len(split_even(w, tile))


def tiled_forward(x: torch.Tensor, forward: Forward, *, scale: int, valid_size: ValidSize,
                  tile: int = 0, tile_pad: int = 32, on_tile: Callable[[], None] = _noop) -> torch.Tensor:
    """Upscale [1, C, h, w] tile by tile with feathered blending; ``tile`` 0 = one tile.

    The image is padded to a valid size (and the result cropped), so the tiles and the
    whole image see the same border. ``forward`` gets valid sizes only.
    """
    _, c, h, w = x.shape
    (hp, wp), (cores_y, cores_x), windows = tile_windows(h, w, tile, tile_pad, valid_size)
    xp = pad_to(x, hp, wp)
    if len(windows) == 1:
        out = forward(xp)[..., :scale * h, :scale * w]
        on_tile()
        return out
    wy = torch.from_numpy(axis_weights(cores_y, h, scale, tile_pad)).float()
    wx = torch.from_numpy(axis_weights(cores_x, w, scale, tile_pad)).float()
    out = torch.zeros(1, c, scale * h, scale * w)
    for i, j, y0, y1, x0, x1 in windows:
        sr = forward(xp[..., y0:y1, x0:x1])
        # Only the part of the tile with non-zero weight (always inside the window) is added.
        ry0, ry1 = _nonzero_range(wy[i])
        rx0, rx1 = _nonzero_range(wx[j])
        assert scale * y0 <= ry0 and ry1 <= scale * y1 and scale * x0 <= rx0 and rx1 <= scale * x1
        block = sr[..., ry0 - scale * y0:ry1 - scale * y0, rx0 - scale * x0:rx1 - scale * x0]
        out[..., ry0:ry1, rx0:rx1] += block * (wy[i, ry0:ry1, None] * wx[j, None, rx0:rx1])
        on_tile()
    return out


def _nonzero_range(v: torch.Tensor) -> tuple[int, int]:
    nz = torch.nonzero(v).flatten()
    return int(nz[0]), int(nz[-1]) + 1


# ----------------------------------------------------------------------------- official chop

def chop_rule(arch: str) -> ChopRule:
    """The official ``forward_chop`` rule of the architecture called ``arch``."""
    return architecture(arch).chop


def official_chop(x: torch.Tensor, forward: Forward, scale: int, rule: ChopRule,
                  min_size: int | None = None, on_piece: Callable[[], None] = _noop) -> torch.Tensor:
    """The official ``forward_chop`` for a [N, C, h, w] tensor (one GPU: pieces run one by one).

    ``min_size`` overrides the rule's (the official CSNLN code forces 3600 at x4 even over
    an override; here an explicit value wins). A piece too small to be split at all (its
    quadrant would be larger than itself, where the official code fails on mismatched
    shapes) is passed to ``forward`` whole.
    """
    min_size = rule.min_size if min_size is None else min_size
    h, w = x.shape[-2:]
    h_half, w_half = h // 2, w // 2
    h_size, w_size = rule.quadrant(h, w, scale)
    if h_size > h or w_size > w:
        out = forward(x)
        on_piece()
        return out
    pieces = [x[..., :h_size, :w_size], x[..., :h_size, w - w_size:],
              x[..., h - h_size:, :w_size], x[..., h - h_size:, w - w_size:]]
    if h_size * w_size < min_size:
        results = []
        for piece in pieces:
            results.append(forward(piece))
            on_piece()
    else:
        results = [official_chop(p, forward, scale, rule, min_size, on_piece) for p in pieces]

    H, W, Hh, Wh, Hs, Ws = (scale * v for v in (h, w, h_half, w_half, h_size, w_size))
    out = results[0].new_empty(*x.shape[:-2], H, W)
    out[..., :Hh, :Wh] = results[0][..., :Hh, :Wh]
    out[..., :Hh, Wh:] = results[1][..., :Hh, Ws - W + Wh:]
    out[..., Hh:, :Wh] = results[2][..., Hs - H + Hh:, :Wh]
    out[..., Hh:, Wh:] = results[3][..., Hs - H + Hh:, Ws - W + Wh:]
    return out


def count_chop_pieces(h: int, w: int, scale: int, rule: ChopRule, min_size: int | None = None) -> int:
    """How many times ``official_chop`` calls ``forward`` for an h×w input."""
    min_size = rule.min_size if min_size is None else min_size
    h_size, w_size = rule.quadrant(h, w, scale)
    if h_size > h or w_size > w:
        return 1
    if h_size * w_size < min_size:
        return 4
    return 4 * count_chop_pieces(h_size, w_size, scale, rule, min_size)
