"""Inputs of the custom ops shaped like the networks' own, shared by the GPU tests
(tests/test_kernels_gpu.py) and the kernel benchmarks (benchmarks/kernels.py).

Every builder takes a ``device`` (so the same shapes run on CPU in the CPU tests of the benchmark
logic) and a seed, and returns plain tensors. Queries come from ``0.5·randn`` (``flat``) or that
scaled ×20 (``peaky``, like real conv outputs): peaky queries make the softmax nearly one-hot and the
round weights nearly 0/1, which exercises the online-softmax rescale. Hash codes come from real LSH
hashing (the NLSN rule, models.nlsn.num_buckets), so buckets have realistic, uneven sizes.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from models import ops
from models.nlsn import KEY_EPS, num_buckets

__all__ = ["KEY_EPS", "AttentionCase", "ATTENTION_CASES", "RELEASED_NLSA", "FOLD_CASES", "SORT_CASES",
           "attention_inputs", "sorted_attention_inputs", "lsh_codes", "fold_inputs", "sort_inputs", "num_chunks"]


class AttentionCase(NamedTuple):
    N: int
    H: int
    W: int
    c: int
    C: int
    cs: int
    R: int
    note: str

    @property
    def id(self) -> str:
        return f"{self.N}x{self.H}x{self.W}_c{self.c}_C{self.C}_cs{self.cs}_R{self.R}"


def num_chunks(L: int, cs: int) -> int:
    return -(-L // cs)


# 1, 2 and 3 chunks, the padding path, the released NLSN block shape (c = 64, C = 256, cs = 144,
# R = 4) at real feature-map sizes, odd sizes with partial tiles everywhere, C > 256.
ATTENTION_CASES = [
    AttentionCase(1, 12, 12, 64, 256, 144, 4, "1 chunk"),
    AttentionCase(1, 16, 17, 64, 256, 144, 2, "2 chunks, padding"),
    AttentionCase(1, 18, 24, 64, 256, 144, 4, "3 chunks"),
    AttentionCase(2, 48, 40, 64, 256, 144, 4, "padding, batch 2"),
    AttentionCase(1, 64, 64, 64, 256, 144, 4, "released block, 64x64"),
    AttentionCase(1, 96, 96, 64, 256, 144, 4, "released block, 96x96"),
    AttentionCase(2, 19, 23, 20, 70, 50, 3, "odd c, C, cs"),
    AttentionCase(1, 40, 40, 16, 300, 144, 1, "C > 256, one round"),
]
# What the benchmarks time: one NLSN attention block of the released x4 model (n_feats 256).
RELEASED_NLSA = dict(c=64, C=256, cs=144, R=4)

# N, H, W, C, u of CrossScaleFold (K = (H/u)(W/u) patches of (3u)^2)
FOLD_CASES = [(1, 48, 48, 128, 2), (2, 32, 32, 128, 2), (1, 36, 36, 128, 3), (2, 10, 14, 5, 2), (3, 9, 6, 7, 3)]

# B, M, num_buckets of BucketSort: the released block at 128^2 and 48^2, odd sizes, one element
SORT_CASES = [(1, 4 * 128 * 128, 4 * 112), (2, 4 * 48 * 48, 4 * 16), (3, 1000, 7), (1, 1, 1), (4, 4 * 96 * 96, 4 * 64)]


def _generator(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def lsh_codes(q: torch.Tensor, cs: int, R: int, g: torch.Generator) -> tuple[torch.Tensor, int]:
    """Round-offset LSH codes of q [N, L, c] as NLSN computes them (fp32): int32 [N, R·L] and the
    total bucket count R·hb (the ``num_buckets`` of BucketSort)."""
    N, L, c = q.shape
    hb = num_buckets(L, cs)  # >= 2 whenever L >= cs
    rot = torch.randn(c, R, hb // 2, device=q.device, generator=g)
    proj = torch.einsum("ntf,fri->nrti", q.float(), rot)
    codes = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)  # [N, R, L] in [0, hb)
    codes = codes + torch.arange(R, device=q.device).view(1, -1, 1) * hb
    return codes.reshape(N, -1).to(torch.int32), R * hb


def attention_inputs(N: int, H: int, W: int, c: int, C: int, cs: int, R: int, *, seed: int = 0,
                     dtype: torch.dtype = torch.float32, device="cuda", peaky: bool = False):
    """(q [N, L, c], v [N, L, C], codes int32 [N, R·L], num_buckets): features like conv outputs
    (``peaky``: queries ×20), codes from real LSH hashing of the fp32 queries."""
    g = _generator(device, seed)
    L = H * W
    q = 0.5 * torch.randn(N, L, c, device=device, generator=g)
    if peaky:
        q = 20 * q
    v = torch.rand(N, L, C, device=device, generator=g)
    q, v = q.to(dtype), v.to(dtype)
    codes, nb = lsh_codes(q, cs, R, g)
    return q, v, codes, nb


def sorted_attention_inputs(*args, **kwargs):
    """attention_inputs plus the reference sort: (q, v, order, rank)."""
    q, v, codes, nb = attention_inputs(*args, **kwargs)
    order, rank = ops.bucket_sort_reference(codes, nb)
    return q, v, order, rank


def fold_inputs(N: int, H: int, W: int, C: int, u: int, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                device="cuda"):
    """(scores [N, K, H, W], patches [N, K, C, 3u, 3u]) as CSNLN makes them: K = (H/u)(W/u) patches,
    scores a peaky softmax over K (CSNLN's softmax_scale 10). Patches of feature scale (σ 0.25), so
    PSNR at peak 1 measures arithmetic error, not output range (fp16 rounding alone of a σ-3 output
    would sit near 61 dB)."""
    g = _generator(device, seed)
    K = (H // u) * (W // u)
    scores = torch.softmax(10 * torch.randn(N, K, H, W, device=device, generator=g), dim=1)
    patches = 0.25 * torch.randn(N, K, C, 3 * u, 3 * u, device=device, generator=g)
    return scores.to(dtype), patches.to(dtype)


def sort_inputs(B: int, M: int, buckets: int, *, seed: int = 0, device="cuda") -> torch.Tensor:
    """Uniform codes int32 [B, M] in [0, buckets)."""
    return torch.randint(0, buckets, (B, M), dtype=torch.int32, device=device, generator=_generator(device, seed))
