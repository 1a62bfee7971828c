"""The reusable inference core: an H×W×C image in, the upscaled image out.

    backend = load_upscaler(weights="NLSN_x4.pt", device="cuda")
    sr = upscale(lr, backend, tile=256)            # lr: H×W×3 float32 in [0, 1]

``upscale`` takes 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels:

- gray is replicated to RGB for the network and the mean of the three output channels
  is returned;
- alpha does not go through the network (a network trained on photographs has no business
  inventing texture in a mask, and it would cost a second pass): it is upscaled with
  Pillow's bicubic resize and clamped to [0, 1].

The result is clamped to [0, 1] but not quantised.

``tile="auto"`` picks the largest tile that fits a memory budget (``runtime.memory``). Whatever
the tile, running out of memory (torch, onnxruntime, TensorRT) halves the tile and runs the
image again, down to the smallest tile where context padding does not dominate.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import memory, tiling
from .backends import Backend, open_backend, resolve_weights

__all__ = ["upscale", "load_upscaler", "forward_x8", "DEFAULT_TILE_PAD"]

#: LR pixels of context around each tile (the blend band is as wide; see runtime.tiling)
DEFAULT_TILE_PAD = 32


def load_upscaler(model: str | None = None, scale: int | None = None, weights=None,
                  device: str = "cpu", backend: str = "torch") -> Backend:
    """Open a backend. ``model``/``scale`` are read from the weights; given, they must match.

    Raises ``backends.BackendError`` (a ValueError) with a one-line message: no weights
    (``WeightsRequired``), an unusable device, a mismatch, an unreadable checkpoint.
    """
    path = resolve_weights(weights, model, scale)
    return open_backend(backend, path, model=model, scale=scale, device=device)


def _transform(x: torch.Tensor, i: int) -> torch.Tensor:
    """The i-th of the official forward_x8 inputs: bit 0 flips W, bit 1 flips H, bit 2 transposes."""
    if i & 1:
        x = x.flip(-1)
    if i & 2:
        x = x.flip(-2)
    if i & 4:
        x = x.transpose(-2, -1)
    return x.contiguous()


def _untransform(y: torch.Tensor, i: int) -> torch.Tensor:
    if i & 4:
        y = y.transpose(-2, -1)
    if i & 2:
        y = y.flip(-2)
    if i & 1:
        y = y.flip(-1)
    return y


def forward_x8(x: torch.Tensor, forward) -> torch.Tensor:
    """Official self-ensemble: the mean of ``forward`` over the 8 flips/transposes, each
    result transformed back. Inputs are made one at a time and the sum is kept, so memory
    holds one extra output, not eight."""
    total = None
    for i in range(8):
        y = _untransform(forward(_transform(x, i)), i)
        total = y.clone() if total is None else total.add_(y)
    return total / 8


def upscale(img: np.ndarray, backend: Backend, tile: int | str = 0, tile_pad: int = DEFAULT_TILE_PAD,
            self_ensemble: bool = False, official_chop: bool = False, progress: Any = None,
            max_memory: int | None = None, on_note: Callable[[str], None] | None = None) -> np.ndarray:
    """Upscale an H×W×C float32 [0, 1] image (C = 1, 2, 3, 4; H×W also taken as gray).

    ``tile`` is the LR core size (0: the whole image in one piece; ``"auto"``: the largest that
    fits ``max_memory`` bytes, by default a safe share of the available memory, see
    ``runtime.memory``), ``tile_pad`` the context around each tile (see ``runtime.tiling``).
    A tile so small that context padding multiplies the work more than
    ``memory.REFUSE_OVERHEAD`` times raises ``memory.TilingError``; out of memory, the tile is
    halved and the image run again (``memory.OutOfMemory`` once halving cannot help).
    ``on_note`` receives one-line notes (the auto tile, a retry, a padding warning).
    ``official_chop`` runs the official
    ``forward_chop`` instead of the blended tiles (with ``self_ensemble`` it runs inside each of
    the 8 passes, as in the official code); it excludes ``tile``. ``progress``: None, True (a
    tqdm bar of its own) or a tqdm-like object, reset to the number of tiles and advanced per tile.
    Returns sH×sW×C float32, clamped to [0, 1].
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an H×W×C image with 1-4 channels, got shape {img.shape}")
    if tile != "auto" and (not isinstance(tile, (int, np.integer)) or tile < 0) or tile_pad < 0:
        raise ValueError(f"tile must be 'auto' or an integer ≥ 0 and tile_pad ≥ 0, got {tile!r}, {tile_pad!r}")
    if official_chop and tile == "auto":
        tile = 0  # the official chop has its own tiling
    if official_chop and tile:
        raise ValueError("official_chop and tile are exclusive: the official chop has its own tiling")
    h, w, c = img.shape
    has_alpha = c in (2, 4)
    color = img[..., :c - 1] if has_alpha else img
    gray = color.shape[2] == 1
    if gray:
        color = np.repeat(color, 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(color.transpose(2, 0, 1)))[None]

    note = on_note or (lambda msg: None)
    if tile == "auto":
        budget = max_memory if max_memory is not None else memory.default_budget(getattr(backend, "device", "cpu"))[0]
        choice = memory.choose_tile(h, w, backend, budget, tile_pad)
        tile = choice.tile
        note(choice.note)
    elif tile and not official_chop:
        warning = memory.check_tile(h, w, tile, tile_pad)
        if warning:
            note(f"warning: {warning}")

    scale = backend.scale
    passes = 8 if self_ensemble else 1

    def steps_for(tile: int) -> int:
        if official_chop:
            rule = tiling.chop_rule(backend.name)
            # The transposed passes see w×h; the piece count depends on the orientation.
            return sum(tiling.count_chop_pieces(*((w, h) if i & 4 else (h, w)), scale, rule) for i in range(passes))
        return tiling.count_tiles(h, w, tile) * passes

    bar, own_bar = progress, False
    if progress is True:
        bar, own_bar = tqdm(total=steps_for(tile), unit="tile", leave=False, disable=None), True
    elif progress is not None:
        bar.reset(total=steps_for(tile))
    tick = bar.update if bar is not None else (lambda n=1: None)

    def model(t: torch.Tensor) -> torch.Tensor:  # any size in, padded and cropped around the call
        return tiling.run_padded(backend, t, scale, backend.valid_size)

    def run(tile: int) -> torch.Tensor:
        if official_chop:
            def forward(t):
                return tiling.official_chop(t, model, scale, tiling.chop_rule(backend.name), on_piece=tick)
        else:
            def forward(t):
                return tiling.tiled_forward(t, backend, scale=scale, valid_size=backend.valid_size,
                                            tile=tile, tile_pad=tile_pad, on_tile=tick)
        return forward_x8(x, forward) if self_ensemble else forward(x)

    try:
        y = _retry_out_of_memory(run, tile, h, w, tile_pad, official_chop, backend, note,
                                 lambda t: bar.reset(total=steps_for(t)) if bar is not None else None)
    finally:
        if own_bar:
            bar.close()

    out = y[0].clamp_(0, 1).permute(1, 2, 0).numpy()
    if gray:
        out = out.mean(axis=2, keepdims=True)
    if has_alpha:
        alpha = Image.fromarray(np.ascontiguousarray(img[..., -1]))  # mode F
        alpha = np.asarray(alpha.resize((w * scale, h * scale), Image.Resampling.BICUBIC), dtype=np.float32)
        out = np.concatenate([out, np.clip(alpha, 0, 1)[..., None]], axis=2)
    return np.ascontiguousarray(out, dtype=np.float32)



def _retry_out_of_memory(run: Callable[[int], torch.Tensor], tile: int, h: int, w: int, tile_pad: int,
                         official_chop: bool, backend: Backend, note: Callable[[str], None],
                         restart: Callable[[int], None]) -> torch.Tensor:
    """``run(tile)``; out of memory, again with half the tile until it works or cannot help."""
    while True:
        try:
            return run(tile)
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not memory.is_out_of_memory(e):
                raise
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        # Outside the except block: the failed attempt's frames (and tensors) are gone.
        memory.release_memory(getattr(backend, "device", "cpu"))
        smaller = None if official_chop else memory.halve_tile(h, w, tile, tile_pad)
        if smaller is None:
            hint = ("use --tile instead of --official-chop" if official_chop else
                    "free memory, lower --tile-pad or use a machine with more memory")
            raise memory.OutOfMemory(f"out of memory on a {w}x{h} image with {memory.describe_tile(tile)} "
                                     f"({why}); {hint}")
        note(f"out of memory with {memory.describe_tile(tile)}; retrying with tile {smaller}")
        tile = smaller
        restart(tile)
