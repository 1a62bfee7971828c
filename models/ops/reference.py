"""The custom-op boundary (DESIGN.md §3) as ``torch.ops.srdeploy.*``.

Each op has a fake (meta) implementation for tracing/export and a PyTorch reference
implementation that runs on any device. The references are the oracle for every other
backend (CUDA kernels, ONNX decompositions, TensorRT plugins), so they are written for
clarity and exactness first, and kept memory-sane: BucketAttention never forms an L×L
tensor (one round at a time, [L, 3·cs] scores), CrossScaleFold is one grouped transposed
convolution for the whole batch (no per-sample loop).

Backward passes (needed for training) recompute the reference under autograd. The references
register as the ``reference`` part of their op (:mod:`models.ops.contract`), and the
``torch.library`` names come from the contract's ``torch_name``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .contract import OPS, fold_output_size, implements

__all__ = ["bucket_sort", "bucket_attention", "cross_scale_fold",
           "bucket_sort_reference", "bucket_attention_reference", "cross_scale_fold_reference"]


# --------------------------------------------------------------------------- references

@implements("BucketSort", "reference")
def bucket_sort_reference(codes: Tensor, num_buckets: int) -> tuple[Tensor, Tensor]:
    """Stable sort of each row of ``codes`` [B, M] (int32, values in [0, num_buckets)).

    Returns ``order`` (index of the element at sorted position p) and ``rank`` (its inverse,
    ``rank[b, order[b, p]] = p``), both int32.
    """
    order = torch.sort(codes, dim=-1, stable=True).indices
    positions = torch.arange(codes.shape[-1], device=codes.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)
    return order.to(torch.int32), rank.to(torch.int32)


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """x [N, L, C], index [N, M] (long) -> [N, M, C]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _with_neighbours(x: Tensor) -> Tensor:
    """[N, nc, cs, C] -> [N, nc, 3·cs, C]: own chunk, previous chunk, next chunk (cyclic)."""
    return torch.cat([x, x.roll(1, dims=1), x.roll(-1, dims=1)], dim=2)


@implements("BucketAttention", "reference")
def bucket_attention_reference(q: Tensor, v: Tensor, order: Tensor, rank: Tensor,
                               chunk_size: int, n_hashes: int, eps: float) -> Tensor:
    """NLSN attention after the sort (DESIGN.md §2/§3).

    q [N, L, c] (queries; keys are q L2-normalised), v [N, L, C], order/rank [N, R·L] from
    BucketSort of the round-offset hash codes. Returns [N, L, C] (no residual).
    """
    N, L, _ = q.shape
    C = v.shape[-1]
    R, cs = n_hashes, chunk_size
    pad = (cs - L % cs) % cs
    n_chunks = (L + pad) // cs
    # Codes carry round offsets, so round r occupies sorted positions [r·L, (r+1)·L).
    source = (order.long() % L).view(N, R, L)
    outs, lses = [], []
    for r in range(R):
        idx = source[:, r]
        if pad:  # duplicate the last `pad` sorted rows: they are real keys
            idx = torch.cat([idx, idx[:, L - pad:]], dim=1)
        qs = _gather_rows(q, idx).view(N, n_chunks, cs, -1)
        vs = _gather_rows(v, idx).view(N, n_chunks, cs, C)
        keys = _with_neighbours(F.normalize(qs, p=2, dim=-1, eps=eps))
        scores = torch.einsum("nkie,nkje->nkij", qs, keys)  # [N, nc, cs, 3cs]
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)
        out = torch.einsum("nkij,nkje->nkie", torch.exp(scores - lse), _with_neighbours(vs))
        outs.append(out.reshape(N, -1, C)[:, :L])
        lses.append(lse.reshape(N, -1)[:, :L])
    # Un-sort with the inverse permutation, then combine rounds by softmax over their lse.
    undo = rank.long()
    ret = _gather_rows(torch.cat(outs, dim=1), undo).view(N, R, L, C)
    lse = torch.cat(lses, dim=1).gather(1, undo).view(N, R, L, 1)
    return (ret * torch.softmax(lse, dim=1)).sum(dim=1)


@implements("CrossScaleFold", "reference")
def cross_scale_fold_reference(scores: Tensor, patches: Tensor, stride: int, padding: int) -> Tensor:
    """Per sample ``conv_transpose2d(scores[n:n+1], patches[n], stride, padding)``, batched.

    scores [N, K, H, W], patches [N, K, C, k, k] -> [N, C, (H-1)·stride - 2·padding + k, ...].
    """
    N, K, H, W = scores.shape
    _, _, C, kh, kw = patches.shape
    out = F.conv_transpose2d(scores.reshape(1, N * K, H, W), patches.reshape(N * K, C, kh, kw),
                             stride=stride, padding=padding, groups=N)
    return out.view(N, C, out.shape[-2], out.shape[-1])


# --------------------------------------------------------------------------- torch.library ops

@torch.library.custom_op(OPS["BucketSort"].torch_qualname, mutates_args=())  # srdeploy::bucket_sort
def bucket_sort(codes: Tensor, num_buckets: int) -> tuple[Tensor, Tensor]:
    return bucket_sort_reference(codes, num_buckets)


@bucket_sort.register_fake
def _(codes, num_buckets):
    return torch.empty_like(codes, dtype=torch.int32), torch.empty_like(codes, dtype=torch.int32)


@torch.library.custom_op(OPS["BucketAttention"].torch_qualname, mutates_args=())  # srdeploy::bucket_attention
def bucket_attention(q: Tensor, v: Tensor, order: Tensor, rank: Tensor,
                     chunk_size: int, n_hashes: int, eps: float) -> Tensor:
    return bucket_attention_reference(q, v, order, rank, chunk_size, n_hashes, eps)


@bucket_attention.register_fake
def _(q, v, order, rank, chunk_size, n_hashes, eps):
    return v.new_empty(v.shape)


@torch.library.custom_op(OPS["CrossScaleFold"].torch_qualname, mutates_args=())  # srdeploy::cross_scale_fold
def cross_scale_fold(scores: Tensor, patches: Tensor, stride: int, padding: int) -> Tensor:
    return cross_scale_fold_reference(scores, patches, stride, padding)


@cross_scale_fold.register_fake
def _(scores, patches, stride, padding):
    N, _, H, W = scores.shape
    C, kh, kw = patches.shape[2:]
    return scores.new_empty(N, C, fold_output_size(H, kh, stride, padding), fold_output_size(W, kw, stride, padding))


def _recompute_backward(reference, n_tensor_inputs: int, differentiable: tuple[int, ...]):
    """Autograd for an op by re-running its reference under autograd in backward."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n_tensor_inputs])
        ctx.attrs = inputs[n_tensor_inputs:]

    def backward(ctx, grad):
        tensors = [t.detach().requires_grad_(i in differentiable) for i, t in enumerate(ctx.saved_tensors)]
        with torch.enable_grad():
            out = reference(*tensors, *ctx.attrs)
        grads = torch.autograd.grad(out, [tensors[i] for i in differentiable], grad)
        result = [None] * (n_tensor_inputs + len(ctx.attrs))
        for i, g in zip(differentiable, grads):
            result[i] = g
        return tuple(result)

    return backward, setup_context


_ba_backward, _ba_setup = _recompute_backward(bucket_attention_reference, 4, (0, 1))
bucket_attention.register_autograd(_ba_backward, setup_context=_ba_setup)
_csf_backward, _csf_setup = _recompute_backward(cross_scale_fold_reference, 2, (0, 1))
cross_scale_fold.register_autograd(_csf_backward, setup_context=_csf_setup)
