"""Standard-ONNX decompositions of the custom ops (``--ops onnx``).

Each function here is written in PyTorch with shape-polymorphic code only (no Python branch on a
tensor size, no ``torch.roll``/``topk``/``sort``/``fold``), so that ``ExportedProgram.run_decompositions``
traces it into plain ATen ops and the ONNX exporter lowers those into standard ONNX ops that
TensorRT's parser takes:

- ``bucket_sort``: a stable *counting rank* (one-hot, CumSum, Gather, ScatterElements) in base-32
  radix passes, instead of TopK/Sort (TensorRT caps TopK's K below 3840).
- ``bucket_attention``: gathers, batched MatMuls and reductions; the tail padding and the cyclic
  neighbour chunks are index arithmetic on dynamic sizes, so one graph serves every input size.
- ``cross_scale_fold``: one MatMul, then the overlap-add of the patches as a grouped Conv with a
  constant 0/1 kernel and a DepthToSpace, instead of Col2Im (TensorRT has none) or a ConvTranspose
  with per-sample weights (TensorRT wants weights fixed at build time).

Each of the three registers as the ``decomposition`` part of its op (:mod:`models.ops.contract`).
Every function is also a plain PyTorch function: the tests compare each one with the reference of
:mod:`models.ops.reference` directly, before any export.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from models.ops.contract import fold_output_size, implements

# Radix base of the counting sort: a pass costs a [B, M, RADIX] one-hot. 32 keeps that small while
# two passes cover every bucket count NLSN uses (n_hashes · 128 ≤ 1024 for n_hashes ≤ 8).
RADIX = 32
# The counts run through CumSum in fp32 (TensorRT's CumSum takes float types only): exact for rows
# shorter than 2**24 elements (n_hashes · H · W: 4 · 4096 · 1024 at most).


def _counting_rank(keys: Tensor, radix: int) -> Tensor:
    """Stable rank of each element of ``keys`` [B, M] (int64 in [0, radix)) within its row."""
    onehot = (keys.unsqueeze(-1) == torch.arange(radix, device=keys.device)).to(torch.float32)  # [B, M, radix]
    running = onehot.cumsum(dim=1)  # how many of each key up to and including this position
    before_equal = (running * onehot).sum(dim=-1) - 1  # earlier elements with the same key (stable)
    counts = running[:, -1, :]  # [B, radix]
    starts = counts.cumsum(dim=-1) - counts  # first sorted position of each key
    return (starts.gather(1, keys) + before_equal).to(torch.int64)


def _inverse_permutation(rank: Tensor) -> Tensor:
    """order[b, rank[b, i]] = i."""
    positions = torch.arange(rank.shape[1], device=rank.device).unsqueeze(0).expand_as(rank)
    return torch.zeros_like(rank).scatter(1, rank, positions)


def radix_passes(max_buckets: int, radix: int = RADIX) -> int:
    """Number of base-``radix`` digits needed for keys in [0, max_buckets)."""
    return max(1, math.ceil(math.log(max(max_buckets, 2), radix) - 1e-9))


@implements("BucketSort", "decomposition")
def bucket_sort(codes: Tensor, num_buckets, max_buckets: int | None = None) -> tuple[Tensor, Tensor]:
    """Stable sort of each row of ``codes`` [B, M] (int32 in [0, num_buckets)) -> (order, rank) int32.

    LSD radix sort: each pass is a stable counting rank of one base-32 digit, so the composition is
    stable on the whole code. ``num_buckets`` may be symbolic (dynamic export); the number of passes
    must be static, so it comes from ``max_buckets`` (an upper bound) when given.
    """
    bound = max_buckets if max_buckets is not None else int(num_buckets)
    keys = codes.to(torch.int64)
    rank = None  # rank[i]: sorted position of element i so far
    for p in range(radix_passes(bound)):
        digit = (keys if p == 0 else torch.div(keys, RADIX ** p, rounding_mode="floor")) % RADIX
        if rank is None:
            rank = _counting_rank(digit, RADIX)
        else:  # rank the digits in the current order, then carry that through the permutation
            in_order = digit.gather(1, _inverse_permutation(rank))
            rank = _counting_rank(in_order, RADIX).gather(1, rank)
    order = _inverse_permutation(rank)
    return order.to(torch.int32), rank.to(torch.int32)


def _mod(x: Tensor, n) -> Tensor:
    """x mod n for an int or a symbolic size (the ONNX exporter takes a symbolic divisor as a tensor)."""
    if isinstance(n, int):
        return x % n
    return x.remainder(torch.scalar_tensor(n, dtype=x.dtype, device=x.device))


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """x [N, L, C], index [N, ...] (int64, values in [0, L)) -> [N, ..., C] as one flat Gather."""
    N, L, C = x.shape
    flat = index + (torch.arange(N, device=x.device) * L).view(-1, *([1] * (index.dim() - 1)))
    return x.reshape(N * L, C).index_select(0, flat.reshape(-1)).view(*index.shape, C)


def _with_neighbours(x: Tensor, neighbours: Tensor) -> Tensor:
    """[N, R, nc, cs, C] -> [N, R, nc, 3·cs, C]: own, previous and next chunk (cyclic).

    ``neighbours`` holds the indices (i - 1) mod nc and (i + 1) mod nc; a Gather on the chunk axis
    does what ``roll`` does without a size-dependent slice (empty when nc = 1)."""
    prev_idx, next_idx = neighbours
    return torch.cat([x, x.index_select(2, prev_idx), x.index_select(2, next_idx)], dim=3)


@implements("BucketAttention", "decomposition")
def bucket_attention(q: Tensor, v: Tensor, order: Tensor, rank: Tensor,
                     chunk_size: int, n_hashes: int, eps: float) -> Tensor:
    """NLSN attention after the sort, as in ``models.ops.bucket_attention_reference``.

    All rounds at once. Scores are computed in the precision of q; the statistics (key norms,
    logsumexp per chunk row, softmax over rounds) in fp32 whatever that precision is.
    """
    N, L, c = q.shape
    C = v.shape[-1]
    R, cs = n_hashes, chunk_size
    pad = (cs - L % cs) % cs
    n_chunks = (L + pad) // cs
    # Sorted source positions per round, then copy-tail padding: padded slot p >= L repeats slot p - pad.
    source = _mod(order.to(torch.int64), L).view(N, R, L)
    slots = torch.arange(L + pad, device=q.device)
    slots = torch.where(slots < L, slots, slots - pad)
    index = source.index_select(2, slots)  # [N, R, Lp]
    qs = _gather_rows(q, index).view(N, R, n_chunks, cs, c)
    vs = _gather_rows(v, index).view(N, R, n_chunks, cs, C)
    chunk = torch.arange(n_chunks, device=q.device)
    neighbours = (_mod(chunk + n_chunks - 1, n_chunks), _mod(chunk + 1, n_chunks))
    q32 = qs.to(torch.float32)  # the key norm is a statistic too: fp32 (no fp16 overflow of Σq²)
    keys = (q32 / torch.linalg.vector_norm(q32, dim=-1, keepdim=True).clamp_min(eps)).to(q.dtype)
    keys = _with_neighbours(keys, neighbours)
    scores = torch.matmul(qs, keys.transpose(-1, -2)).to(torch.float32)  # [N, R, nc, cs, 3cs]
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    probs = torch.exp(scores - lse).to(v.dtype)
    out = torch.matmul(probs, _with_neighbours(vs, neighbours))  # [N, R, nc, cs, C]
    # Drop the padded rows, un-sort with the inverse permutation, combine rounds by softmax over lse.
    out = out.reshape(N, R, n_chunks * cs, C)[:, :, :L].reshape(N, R * L, C)
    lse = lse.reshape(N, R, n_chunks * cs)[:, :, :L].reshape(N, R * L)
    undo = rank.to(torch.int64)
    out = _gather_rows(out, undo).view(N, R, L, C)
    lse = lse.gather(1, undo).view(N, R, L, 1)
    weights = torch.softmax(lse, dim=1)
    return (out.to(torch.float32) * weights).sum(dim=1).to(v.dtype)


def _overlap_add_weights(channels: int, th: int, tw: int, dtype, device) -> Tensor:
    """Constant grouped-Conv kernel that sums th·tw tiles shifted by (a, b) blocks: group g holds the
    tiles (a, b) of channel g, and tile (a, b) meets the one 1 of its kernel at (th-1-a, tw-1-b).
    Built without in-place writes (the decomposition is traced functionally; export folds it)."""
    a = torch.arange(th, device=device).view(th, 1, 1, 1)
    b = torch.arange(tw, device=device).view(1, tw, 1, 1)
    i = torch.arange(th, device=device).view(1, 1, th, 1)
    k = torch.arange(tw, device=device).view(1, 1, 1, tw)
    one = ((i == th - 1 - a) & (k == tw - 1 - b)).to(dtype).reshape(1, th * tw, th, tw)
    return one.expand(channels, th * tw, th, tw)


@implements("CrossScaleFold", "decomposition")
def cross_scale_fold(scores: Tensor, patches: Tensor, stride: int, padding: int) -> Tensor:
    """Per-sample transposed convolution of ``scores`` [N, K, H, W] with ``patches`` [N, K, C, k, k].

    The columns ``scoresᵀ @ patches`` hold, for every input position (h, w), the k×k patch it adds to
    the output. Cut the kernel into s×s tiles (zero-padded to a multiple of the stride s): tile (a, b)
    lands on output block (h + a, w + b). Summing the shifted tiles is a grouped Conv with a constant
    0/1 kernel on the block grid (exact: each output adds the same th·tw values as the overlap-add),
    DepthToSpace turns blocks into pixels, and the transposed convolution's padding is a crop.
    """
    N, K, H, W = scores.shape
    C, kh, kw = patches.shape[2], patches.shape[3], patches.shape[4]
    s, p = stride, padding
    th, tw = -(-kh // s), -(-kw // s)  # tiles per kernel side
    if th * s != kh or tw * s != kw:  # static: kernel and stride are attributes
        patches = F.pad(patches, (0, tw * s - kw, 0, th * s - kh))
    cols = torch.matmul(scores.flatten(2).transpose(1, 2), patches.reshape(N, K, C * th * s * tw * s))
    # [N, H, W, C, a, sy, b, sx] -> [N, (C, sy, sx, a, b), H, W]: the tiles of one output channel-pixel
    tiles = cols.view(N, H, W, C, th, s, tw, s).permute(0, 3, 5, 7, 4, 6, 1, 2).reshape(N, C * s * s * th * tw, H, W)
    weight = _overlap_add_weights(C * s * s, th, tw, tiles.dtype, tiles.device)
    blocks = F.conv2d(F.pad(tiles, (tw - 1, tw - 1, th - 1, th - 1)), weight, groups=C * s * s)
    canvas = F.pixel_shuffle(blocks, s)  # [N, C, (H + th - 1)·s, (W + tw - 1)·s]
    Ho, Wo = fold_output_size(H, kh, s, p), fold_output_size(W, kw, s, p)
    return canvas[:, :, p:p + Ho, p:p + Wo]


def conv2d_as_matmul(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation,
                     groups: int) -> Tensor:
    """``F.conv2d`` as im2col + batched MatMul, for convolutions whose weights are computed in the
    graph (CSNLN's per-sample matching filters): TensorRT wants Conv weights fixed at build time
    and a build-time number of output channels, which a data-dependent, size-dependent filter
    bank is not. Groups become the batch of the MatMul."""
    N, Cin, H, W = x.shape
    Cout, cg, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), dilation=tuple(dilation), padding=tuple(padding), stride=tuple(stride))
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = cols.view(N, groups, cg * kh * kw, Ho * Wo)
    w = weight.reshape(groups, Cout // groups, cg * kh * kw)
    out = torch.matmul(w, cols).view(N, Cout, Ho, Wo)  # [N, G, Cout/G, HoWo]
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
