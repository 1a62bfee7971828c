"""Memory planning for a run: what one tile costs, how much there is, which tile fits, and what
counts as running out of memory.

**Estimate** (:class:`MemoryModel`): the working memory of one forward pass over a window of
P LR pixels, above what the process holds once the network is loaded::

    bytes(P) = fixed + per_pixel · P + quadratic · P²

- ``per_pixel``: :data:`FEATURE_MAPS` [arch] fp32 maps of the network's width, counted per
  LR pixel at LR and at HR resolution (:func:`feature_bytes_per_pixel`); the count per
  architecture is calibrated by ``python -m benchmarks.memory`` (results in
  ``benchmarks/results/memory.json``; the tests hold the estimate to that measurement).
- ``quadratic``: CSNLN's attentions where they are dense (exported graphs: onnxruntime,
  TensorRT; or a PyTorch model with blocking switched off): [L, L] scores and their softmax,
  8 bytes per pair. The PyTorch CSNLN computes them in blocks (``models.csnln``), which costs
  a constant ``ATTENTION_BLOCK_BYTES`` instead.
- ``fixed``: allocator and library scratch, calibrated with the rest.

The image itself (input, blended output, its copies) is tile-independent and added by
:func:`image_bytes`.

**Budget**: ``--max-memory`` (``4G``, ``512M``, ...), by default :data:`RAM_SHARE` of the
available RAM, or :data:`GPU_SHARE` of the free memory of the CUDA device.

**Tile choice** (:func:`choose_tile`): the whole image if it fits, else the largest tile whose
window fits; a tile so small that context padding multiplies the work more than
:data:`REFUSE_OVERHEAD` times is refused (:class:`TilingError`), above :data:`WARN_OVERHEAD`
times warned about.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from models.architectures import ARCHITECTURES
from models.errors import SrdeployError
from . import tiling

__all__ = [
    "FEATURE_MAPS", "FIXED_BYTES", "RAM_SHARE", "GPU_SHARE", "WARN_OVERHEAD", "REFUSE_OVERHEAD",
    "TilingError", "OutOfMemory", "MemoryModel", "memory_model", "feature_bytes_per_pixel", "image_bytes",
    "parse_size", "format_size", "default_budget", "padding_overhead", "window_pixels", "choose_tile",
    "check_tile", "smallest_tile", "TileChoice", "halve_tile", "is_out_of_memory", "release_memory", "describe_tile",
]

# Calibration (python -m benchmarks.memory, bundled x2 models, CPU, one thread; results in
# benchmarks/results/memory.json): live fp32 feature maps at peak, in units of
# feature_bytes_per_pixel (each architecture's hints.feature_maps, read here), and the constant
# part. EDSR is not measured: NLSN's count (its body without the attention) errs on the safe side.
FEATURE_MAPS = {name: arch.hints.feature_maps for name, arch in ARCHITECTURES.items()}
FIXED_BYTES = 96 << 20
#: CSNLN's dense attentions: scores and their softmax, fp32, per (query, key) pair
DENSE_ATTENTION_BYTES_PER_PAIR = 8
#: output canvas, blend, clamp, HWC copy: fp32 HR images held at once by the pipeline
IMAGE_COPIES = 4

#: default budget: this share of the available RAM (CPU), of the free device memory (CUDA)
RAM_SHARE = 0.5
GPU_SHARE = 0.8
#: context padding multiplying the work this many times is warned about / refused
WARN_OVERHEAD = 4.0
REFUSE_OVERHEAD = 64.0

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class TilingError(SrdeployError, ValueError):
    """A tile or budget that cannot work (too small a tile, too small a budget): one line that says
    what to change."""


class OutOfMemory(RuntimeError):
    """Out of memory even after halving the tile down to the smallest sensible size."""


# --------------------------------------------------------------------------- the estimate

@dataclass(frozen=True)
class MemoryModel:
    """Working memory of one forward pass as a function of the LR pixels P of its input."""

    label: str
    per_pixel: float
    quadratic: float = 0.0
    fixed: float = FIXED_BYTES

    def estimate(self, pixels: int) -> int:
        return int(self.fixed + self.per_pixel * pixels + self.quadratic * pixels * pixels)


def feature_bytes_per_pixel(scale: int, config: dict[str, Any]) -> int:
    """One fp32 feature map of the network's width per LR pixel, counted at LR and at HR."""
    return 4 * int(config.get("n_feats", 64)) * (1 + scale * scale)


def _per_pixel(arch: str, scale: int, config: dict[str, Any]) -> float:
    maps = FEATURE_MAPS.get(arch, max(FEATURE_MAPS.values())) * feature_bytes_per_pixel(scale, config)
    if arch == "csnln":  # its tail concatenates the HR estimates of all ``depth`` iterations: list + cat
        maps += 2 * 4 * int(config.get("n_feats", 64)) * int(config.get("depth", 1)) * scale * scale
    return maps


def _csnln_dense(backend) -> tuple[bool, int]:
    """(dense attention?, block bytes) of a backend running CSNLN."""
    net = getattr(backend, "model", None)
    if net is None:  # an exported graph (onnxruntime, TensorRT) holds the dense form
        return True, 0
    from models.csnln import NonLocalAttention
    blocks = [m.block_bytes for m in net.modules() if isinstance(m, NonLocalAttention)]
    if any(b is None for b in blocks):
        return True, 0
    return False, max(blocks, default=0)


def memory_model(backend) -> MemoryModel:
    """The estimate for ``backend`` (anything with ``name``, ``scale`` and a ``model.config`` or
    ``meta["config"]``)."""
    arch, scale = backend.name, int(backend.scale)
    net = getattr(backend, "model", None)
    config = dict(net.config) if net is not None else dict(getattr(backend, "meta", {}).get("config", {}))
    per_pixel = _per_pixel(arch, scale, config)
    label = f"{arch} x{scale}"
    if arch != "csnln":
        return MemoryModel(label, per_pixel)
    dense, block = _csnln_dense(backend)
    if dense:
        return MemoryModel(label + " (dense attention)", per_pixel, quadratic=DENSE_ATTENTION_BYTES_PER_PAIR)
    # at most three score tensors of one block live at once (scores, scaled, softmax)
    return MemoryModel(label, per_pixel, fixed=FIXED_BYTES + 3 * block)


def image_bytes(h: int, w: int, scale: int) -> int:
    """What the pipeline holds for an h×w image whatever the tile: HR fp32 RGB copies."""
    return IMAGE_COPIES * 4 * 3 * scale * scale * h * w


# --------------------------------------------------------------------------- the budget

def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``1.5GiB``, ``800MB``, ``1000000`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"expected a size such as 4G, 512M or 1.5G, got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ValueError(f"a memory budget must be positive, got {text!r}")
    return int(value)


def format_size(n: float) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.1f} {unit}B"
    return f"{int(n)} B"


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_budget(device: str | torch.device = "cpu") -> tuple[int, str]:
    """(bytes, where they come from) when no ``--max-memory`` is given."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free * GPU_SHARE), f"{GPU_SHARE:.0%} of free GPU memory"
    available = _available_ram()
    if available is None:
        return 4 << 30, "4 GB (available RAM unknown)"
    return int(available * RAM_SHARE), f"{RAM_SHARE:.0%} of available RAM"


# --------------------------------------------------------------------------- tiles

def _axis_windows(n: int, tile: int, pad: int) -> list[int]:
    """Lengths along one axis of the windows ``runtime.tiling`` sends (size growth ignored)."""
    cores = tiling.split_even(n, tile)
    if len(cores) == 1:
        return [n]
    return [min(n, hi + pad) - max(0, lo - pad) for lo, hi in cores]


def padding_overhead(h: int, w: int, tile: int, tile_pad: int) -> float:
    """How many times the tiles' windows cover the image: 1 without tiles; ((t + 2p)/t)² for
    tiles t of a large image with context p."""
    ys, xs = _axis_windows(h, tile, tile_pad), _axis_windows(w, tile, tile_pad)
    if len(ys) == 1 and len(xs) == 1:
        return 1.0
    return sum(ys) * sum(xs) / (h * w)


def window_pixels(h: int, w: int, tile: int, tile_pad: int, valid_size: Callable[[int, int], tuple[int, int]]) -> int:
    """LR pixels of the largest window the tiling of an h×w image sends to the network."""
    ys, xs = _axis_windows(h, tile, tile_pad), _axis_windows(w, tile, tile_pad)
    if len(ys) == 1 and len(xs) == 1:
        vh, vw = valid_size(h, w)
    else:
        vh, vw = valid_size(max(ys), max(xs))
    return vh * vw


def _refusal(h: int, w: int, tile: int, tile_pad: int, overhead: float) -> str:
    return (f"--tile {tile} with --tile-pad {tile_pad} on a {w}x{h} image multiplies the work {overhead:.0f} times "
            f"(each tile carries {tile_pad} pixels of context on every side)")


def check_tile(h: int, w: int, tile: int, tile_pad: int) -> str | None:
    """An explicit tile: a warning line if padding dominates; TilingError if it is absurd."""
    overhead = padding_overhead(h, w, tile, tile_pad)
    if overhead > REFUSE_OVERHEAD:
        raise TilingError(f"{_refusal(h, w, tile, tile_pad, overhead)}: use a larger --tile "
                          f"(e.g. {smallest_tile(h, w, tile_pad, WARN_OVERHEAD)}), a smaller --tile-pad, or --tile auto")
    if overhead > WARN_OVERHEAD:
        return f"{_refusal(h, w, tile, tile_pad, overhead)}; a larger --tile is faster"
    return None


def smallest_tile(h: int, w: int, tile_pad: int, limit: float) -> int:
    """The smallest tile whose padding overhead is at most ``limit`` (overhead falls with the tile)."""
    lo, hi = 1, max(h, w)
    while lo < hi:
        mid = (lo + hi) // 2
        if padding_overhead(h, w, mid, tile_pad) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class TileChoice:
    tile: int  # 0: the whole image
    estimate: int  # bytes, with the image's own
    budget: int
    note: str  # one line for the user


def choose_tile(h: int, w: int, backend, budget: int, tile_pad: int) -> TileChoice:
    """The largest tile (0 = whole image) whose estimated working memory fits ``budget``."""
    mm = memory_model(backend)
    fixed = image_bytes(h, w, backend.scale)

    def need(tile: int) -> int:
        return fixed + mm.estimate(window_pixels(h, w, tile, tile_pad, backend.valid_size))

    what = f"{mm.label} on {w}x{h}"
    if need(0) <= budget:
        return TileChoice(0, need(0), budget, f"tile auto: whole image ({what}: ~{format_size(need(0))} "
                                              f"of {format_size(budget)} budget)")
    lo, hi = 0, max(h, w) - 1  # largest tile in [1, hi] that fits; 0 when none does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    lo = _effective_tile(h, w, lo)
    floor = smallest_tile(h, w, tile_pad, REFUSE_OVERHEAD)
    if lo < floor:
        raise TilingError(f"memory budget {format_size(budget)} is too small for {what}: even --tile {floor} "
                          f"needs ~{format_size(need(floor))}; raise --max-memory or lower --tile-pad")
    note = (f"tile auto: {lo} ({what}: ~{format_size(need(lo))} per tile of {format_size(budget)} budget; "
            f"the whole image would need ~{format_size(need(0))})")
    return TileChoice(lo, need(lo), budget, note)


def _effective_tile(h: int, w: int, tile: int) -> int:
    """The largest core ``tile`` really gives (cores are near-equal parts): the same tiling, a
    truthful number (2047 on a 2048 image is 1024)."""
    if tile <= 0:
        return tile
    return max(hi - lo for lo, hi in tiling.split_even(h, tile) + tiling.split_even(w, tile))


def halve_tile(h: int, w: int, tile: int, tile_pad: int) -> int | None:
    """The next tile after running out of memory with ``tile`` (0: whole image), or None when
    halving would make padding dominate (see :data:`REFUSE_OVERHEAD`)."""
    current = tile if 0 < tile < max(h, w) else max(h, w)
    new = current // 2
    if new < 1 or padding_overhead(h, w, new, tile_pad) > REFUSE_OVERHEAD:
        return None
    return new


# --------------------------------------------------------------------------- running out

_OOM_PHRASES = ("out of memory", "not enough memory", "failed to allocate memory", "bad_alloc",
                "bad allocation", "cudaerrormemoryallocation", "cuda_error_out_of_memory",
                "cannot allocate memory", "outofmemory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the backend ran out of memory: torch (CPU and CUDA), Python/numpy,
    onnxruntime (its allocation failures are RuntimeExceptions naming the failed allocation),
    TensorRT (its errors name CUDA's out-of-memory code)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOMEM
    if isinstance(exc, (ValueError, KeyboardInterrupt)) or not isinstance(exc, Exception):
        return False
    text = str(exc).lower()
    return any(p in text for p in _OOM_PHRASES)


def release_memory(device: str | torch.device = "cpu") -> None:
    """Give back what a failed attempt left (its tensors die with the exception's frames)."""
    import gc
    gc.collect()
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe_tile(tile: int) -> str:
    return "the whole image" if tile == 0 else f"tile {tile}"
