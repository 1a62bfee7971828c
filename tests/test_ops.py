"""Each custom op's reference against a straightforward, independent re-computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers torch.ops.srdeploy)
from models.ops import bucket_attention_reference
from runtime.metrics import psnr_peak1


# ----------------------------------------------------------------------------- BucketSort

@pytest.mark.parametrize("B,M,buckets", [(1, 1, 1), (2, 600, 8), (3, 4 * 4096, 4 * 128), (2, 1000, 2)])
def test_bucket_sort_is_stable_sort_and_inverse(B, M, buckets):
    codes = torch.randint(0, buckets, (B, M), dtype=torch.int32, generator=torch.Generator().manual_seed(M))
    order, rank = torch.ops.srdeploy.bucket_sort(codes, buckets)
    assert order.dtype == rank.dtype == torch.int32 and order.shape == rank.shape == codes.shape
    for b in range(B):
        expected = np.argsort(codes[b].numpy(), kind="stable")
        np.testing.assert_array_equal(order[b].numpy(), expected)
        np.testing.assert_array_equal(rank[b].numpy()[expected], np.arange(M))


def test_bucket_sort_ties_keep_position_order():
    codes = torch.tensor([[3, 1, 3, 1, 0, 3]], dtype=torch.int32)
    order, rank = torch.ops.srdeploy.bucket_sort(codes, 4)
    assert order.tolist() == [[4, 1, 3, 0, 2, 5]]
    assert rank.tolist() == [[3, 1, 4, 2, 0, 5]]


# ----------------------------------------------------------------------------- BucketAttention

def dense_bucket_attention(q, v, codes, chunk_size, n_hashes, eps):
    """Dense masked formulation: per round, all Lp×Lp scores of the padded sorted sequence, with a
    multiplicity mask counting how often key chunk j is among (own, previous, next) of query chunk i
    (so nc = 1 and nc = 2 count repeated chunks repeatedly), written back by scatter, not by rank."""
    N, L, _ = q.shape
    R, cs = n_hashes, chunk_size
    Lp = -(-L // cs) * cs
    nc = Lp // cs
    chunk = torch.arange(Lp) // cs
    mult = sum((chunk[None, :] == (chunk[:, None] + d) % nc).double() for d in (0, -1, 1))  # [Lp, Lp]
    out = torch.zeros(N, R, L, v.shape[-1], dtype=torch.float64)
    lse = torch.zeros(N, R, L, dtype=torch.float64)
    for n in range(N):
        for r in range(R):
            c = codes[n, r * L:(r + 1) * L].tolist()
            srt = sorted(range(L), key=lambda t: (c[t], t))
            srt = srt + srt[L - (Lp - L):] if Lp > L else srt
            qs, vs = q[n, srt].double(), v[n, srt].double()
            s = qs @ (qs / qs.norm(dim=-1, keepdim=True).clamp_min(eps)).T
            weights = mult * torch.exp(s)
            z = weights.sum(-1)
            o = (weights @ vs) / z[:, None]
            for p in range(L):
                out[n, r, srt[p]] = o[p]
                lse[n, r, srt[p]] = torch.log(z[p])
    return (out * torch.softmax(lse, dim=1)[..., None]).sum(1)


@pytest.mark.parametrize("L,cs,R,N", [
    (16, 16, 2, 1),    # nc = 1, no padding
    (21, 16, 2, 2),    # nc = 2, padding path
    (32, 16, 3, 1),    # nc = 2, no padding
    (55, 16, 1, 2),    # nc = 4, padding path, one round
    (48, 16, 4, 1),    # nc = 3
])
def test_bucket_attention_matches_dense(L, cs, R, N):
    g = torch.Generator().manual_seed(L * 100 + cs)
    c, C = 4, 6
    q = torch.randn(N, L, c, generator=g, dtype=torch.float64)
    v = torch.randn(N, L, C, generator=g, dtype=torch.float64)
    hb = 4
    codes = (torch.randint(0, hb, (N, R, L), generator=g) + torch.arange(R).view(1, R, 1) * hb).view(N, -1).int()
    order, rank = torch.ops.srdeploy.bucket_sort(codes, R * hb)
    got = torch.ops.srdeploy.bucket_attention(q, v, order, rank, cs, R, 5e-5)
    want = dense_bucket_attention(q, v, codes, cs, R, 5e-5)
    assert got.shape == (N, L, C)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # fp32 reference against the fp64 dense oracle: the DESIGN §5 floor.
    got32 = bucket_attention_reference(q.float(), v.float(), order, rank, cs, R, 5e-5)
    assert psnr_peak1(got32 / want.abs().max(), want / want.abs().max()) >= 100


def test_bucket_attention_gradients():
    g = torch.Generator().manual_seed(0)
    N, L, cs, R = 1, 10, 4, 2
    q = torch.randn(N, L, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(N, L, 5, generator=g, dtype=torch.float64, requires_grad=True)
    codes = (torch.randint(0, 2, (N, R, L), generator=g) + torch.arange(R).view(1, R, 1) * 2).view(N, -1).int()
    order, rank = torch.ops.srdeploy.bucket_sort(codes, 2 * R)
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.srdeploy.bucket_attention(a, b, order, rank, cs, R, 5e-5),
                                    (q, v))


# ----------------------------------------------------------------------------- CrossScaleFold

@pytest.mark.parametrize("N,K,C,k,stride,padding,H,W", [
    (1, 9, 4, 6, 2, 2, 3, 3),    # x2 / x4 attention geometry
    (2, 12, 5, 9, 3, 3, 3, 4),   # x3 geometry, batch of 2
    (3, 4, 2, 3, 1, 0, 2, 5),
])
def test_cross_scale_fold_matches_per_sample_and_col2im(N, K, C, k, stride, padding, H, W):
    g = torch.Generator().manual_seed(K)
    scores = torch.rand(N, K, H, W, generator=g, dtype=torch.float64)
    patches = torch.randn(N, K, C, k, k, generator=g, dtype=torch.float64)
    got = torch.ops.srdeploy.cross_scale_fold(scores, patches, stride, padding)
    # the contract's definition, one sample at a time
    loop = torch.cat([F.conv_transpose2d(scores[n:n + 1], patches[n], stride=stride, padding=padding)
                      for n in range(N)])
    # an independent formulation: outer product into columns, then col2im (fold)
    Ho, Wo = (H - 1) * stride - 2 * padding + k, (W - 1) * stride - 2 * padding + k
    cols = torch.einsum("nkhw,nkcij->ncijhw", scores, patches).reshape(N, C * k * k, H * W)
    folded = F.fold(cols, (Ho, Wo), k, padding=padding, stride=stride)
    assert got.shape == (N, C, Ho, Wo)
    torch.testing.assert_close(got, loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, folded, rtol=1e-12, atol=1e-12)


def test_cross_scale_fold_gradients():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(2, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    patches = torch.randn(2, 3, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, p: torch.ops.srdeploy.cross_scale_fold(s, p, 2, 2), (scores, patches))


def test_fake_implementations_give_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        codes = torch.empty(2, 40, dtype=torch.int32)
        order, rank = torch.ops.srdeploy.bucket_sort(codes, 8)
        out = torch.ops.srdeploy.bucket_attention(torch.empty(2, 10, 3), torch.empty(2, 10, 7), order, rank, 4, 4, 5e-5)
        fold = torch.ops.srdeploy.cross_scale_fold(torch.empty(2, 9, 3, 3), torch.empty(2, 9, 5, 6, 6), 2, 2)
    assert order.shape == (2, 40) and order.dtype == torch.int32
    assert out.shape == (2, 10, 7)
    assert fold.shape == (2, 5, 6, 6)
