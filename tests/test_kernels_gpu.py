"""The CUDA kernels against their PyTorch references on a GPU (DESIGN.md section 5):
>= 100 dB in fp32 (TF32 off), >= 60 dB in fp16, exact for BucketSort; outputs and workspace are
poisoned before every run; whole NLSN / CSNLN with kernels vs reference >= 100 dB in fp32."""
import math

import pytest
import torch

import models
from models import ops
from plugins import loader

REASON = "needs a CUDA GPU and the built kernels library"


def _kernels():
    if not torch.cuda.is_available():
        return None
    try:
        return loader.load()
    except loader.KernelsUnavailable:
        return None


KERNELS = _kernels()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(KERNELS is None, reason=REASON)]


@pytest.fixture(autouse=True)
def strict_fp32():
    """fp32 means fp32: no TF32 in the references (matmul and cuDNN convolutions)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def psnr(a, b, peak=1.0):
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def poisoned_like(t):
    return torch.full_like(t, float("nan")) if t.is_floating_point() else torch.full_like(t, -7)


def poisoned_workspace(nbytes):
    return torch.full((max(nbytes, 1),), 0xFF, dtype=torch.uint8, device="cuda")  # NaN as fp32 / fp16


# ------------------------------------------------------------------------------- BucketSort

@pytest.mark.parametrize("B,M,buckets", [(1, 4 * 128 * 128, 4 * 112), (2, 4 * 48 * 48, 4 * 16),
                                         (3, 1000, 7), (1, 1, 1), (4, 4 * 96 * 96, 4 * 64)])
def test_bucket_sort_matches_reference_exactly(B, M, buckets):
    g = torch.Generator(device="cuda").manual_seed(M)
    codes = torch.randint(0, buckets, (B, M), dtype=torch.int32, device="cuda", generator=g)
    want = ops.bucket_sort_reference(codes, buckets)
    nbytes = KERNELS.workspace_size("srd_bucket_sort_workspace_size", B, M, buckets)
    for _ in range(2):
        out = (poisoned_like(want[0]), poisoned_like(want[1]))
        got = KERNELS.bucket_sort(codes, buckets, out=out, workspace=poisoned_workspace(nbytes))
        torch.cuda.synchronize()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


# -------------------------------------------------------------------------- BucketAttention

def attention_inputs(N, H, W, c, C, cs, R, seed, dtype=torch.float32):
    """Realistic magnitudes: features like conv outputs, codes from real LSH hashing."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    L = H * W
    q = 0.5 * torch.randn(N, L, c, device="cuda", generator=g)
    v = torch.rand(N, L, C, device="cuda", generator=g)
    hb = min(L // cs + (L // cs) % 2, 128)
    rot = torch.randn(c, R, hb // 2, device="cuda", generator=g)  # hb >= 2 whenever L >= cs
    proj = torch.einsum("ntf,fri->nrti", q, rot)
    codes = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)  # [N, R, L] in [0, hb)
    codes = (codes.long() + torch.arange(R, device="cuda").view(1, -1, 1) * hb).reshape(N, -1).to(torch.int32)
    order, rank = ops.bucket_sort_reference(codes, R * hb)
    return q.to(dtype), v.to(dtype), order, rank


ATTENTION_CASES = [
    # N, H, W, c, C, cs, R: released NLSN sizes, padding and odd shapes
    (1, 64, 64, 64, 256, 144, 4),
    (1, 96, 96, 64, 256, 144, 4),
    (2, 48, 40, 64, 256, 144, 4),   # L % cs != 0: padding path
    (1, 12, 12, 64, 256, 144, 4),   # nc = 1
    (1, 16, 17, 64, 256, 144, 2),   # nc = 2 with padding
    (2, 19, 23, 20, 70, 50, 3),     # odd c, C, cs; partial tiles everywhere
    (1, 40, 40, 16, 300, 144, 1),   # C > 256: two column tiles
]


@pytest.mark.parametrize("N,H,W,c,C,cs,R", ATTENTION_CASES)
def test_bucket_attention_fp32(N, H, W, c, C, cs, R):
    q, v, order, rank = attention_inputs(N, H, W, c, C, cs, R, seed=H * W + C)
    want = ops.bucket_attention_reference(q, v, order, rank, cs, R, 5e-5)
    nbytes = KERNELS.workspace_size("srd_bucket_attention_workspace_size", N, H * W, c, C, cs, R, 0)
    for _ in range(2):
        got = KERNELS.bucket_attention(q, v, order, rank, cs, R, 5e-5, out=poisoned_like(want),
                                       workspace=poisoned_workspace(nbytes))
        torch.cuda.synchronize()
        assert torch.isfinite(got).all()
        assert psnr(got, want) >= 100, f"{psnr(got, want):.1f} dB"


@pytest.mark.parametrize("N,H,W,c,C,cs,R", ATTENTION_CASES)
def test_bucket_attention_fp16(N, H, W, c, C, cs, R):
    q, v, order, rank = attention_inputs(N, H, W, c, C, cs, R, seed=H * W + C + 1, dtype=torch.float16)
    want = ops.bucket_attention_reference(q.float(), v.float(), order, rank, cs, R, 5e-5)  # fp32 oracle
    nbytes = KERNELS.workspace_size("srd_bucket_attention_workspace_size", N, H * W, c, C, cs, R, 1)
    got = KERNELS.bucket_attention(q, v, order, rank, cs, R, 5e-5, out=poisoned_like(v),
                                   workspace=poisoned_workspace(nbytes))
    torch.cuda.synchronize()
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    assert psnr(got, want) >= 60, f"{psnr(got, want):.1f} dB"


# --------------------------------------------------------------------------- CrossScaleFold

def fold_inputs(N, H, W, C, u, seed, dtype=torch.float32):
    """CSNLN sizes: K = (H/u)(W/u) patches of (3u)^2, scores a softmax over K. Patches of
    feature scale (σ 0.25), so PSNR at peak 1 measures arithmetic error, not output range
    (fp16 rounding alone of a σ-3 output would sit near 61 dB)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    K = (H // u) * (W // u)
    scores = torch.softmax(10 * torch.randn(N, K, H, W, device="cuda", generator=g), dim=1)
    patches = 0.25 * torch.randn(N, K, C, 3 * u, 3 * u, device="cuda", generator=g)
    return scores.to(dtype), patches.to(dtype)


FOLD_CASES = [(1, 48, 48, 128, 2), (2, 32, 32, 128, 2), (1, 36, 36, 128, 3), (2, 10, 14, 5, 2), (3, 9, 6, 7, 3)]


@pytest.mark.parametrize("N,H,W,C,u", FOLD_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cross_scale_fold(N, H, W, C, u, dtype):
    scores, patches = fold_inputs(N, H, W, C, u, seed=H * W + C, dtype=dtype)
    want = ops.cross_scale_fold_reference(scores.float(), patches.float(), u, u)
    nbytes = KERNELS.workspace_size("srd_cross_scale_fold_workspace_size", N, scores.shape[1], H, W, C,
                                    3 * u, 3 * u, u, u, 1 if dtype == torch.float16 else 0)
    for _ in range(2):
        got = KERNELS.cross_scale_fold(scores, patches, u, u, out=poisoned_like(want.to(dtype)),
                                       workspace=poisoned_workspace(nbytes))
        torch.cuda.synchronize()
        assert got.dtype == dtype and torch.isfinite(got).all()
        floor = 100 if dtype == torch.float32 else 60
        assert psnr(got, want) >= floor, f"{psnr(got, want):.1f} dB"


# ------------------------------------------------------------------------ dispatch and models

def test_torch_ops_dispatch_to_kernels_on_cuda(monkeypatch):
    loader.reset()
    monkeypatch.setenv(loader.LIB_ENV, str(KERNELS.path))
    loader.enable()
    calls = []
    original = loader.Kernels.bucket_attention
    monkeypatch.setattr(loader.Kernels, "bucket_attention", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    q, v, order, rank = attention_inputs(1, 24, 24, 64, 256, 144, 4, seed=1)
    got = torch.ops.srdeploy.bucket_attention(q, v, order, rank, 144, 4, 5e-5)
    assert calls and psnr(got, ops.bucket_attention_reference(q, v, order, rank, 144, 4, 5e-5)) >= 100
    with loader.reference_only():
        torch.ops.srdeploy.bucket_attention(q, v, order, rank, 144, 4, 5e-5)
    assert len(calls) == 1
    loader.reset()


@pytest.mark.parametrize("name,scale,cfg,size", [
    ("nlsn", 2, dict(n_resblocks=8, n_feats=64), (40, 36)),
    ("nlsn", 4, dict(n_resblocks=8), (24, 24)),
    ("csnln", 2, dict(n_feats=32, depth=2), (24, 20)),
    ("csnln", 3, dict(n_feats=32, depth=2), (18, 21)),
])
def test_whole_model_kernels_vs_reference(name, scale, cfg, size, monkeypatch):
    loader.reset()
    monkeypatch.setenv(loader.LIB_ENV, str(KERNELS.path))
    loader.enable()
    torch.manual_seed(0)
    model = models.build(name, scale, **cfg).cuda()
    x = 255 * torch.rand(1, 3, *size, device="cuda")
    with torch.no_grad():
        with loader.reference_only():
            want = model(x)
        got = model(x)
    assert loader.get() is not None
    assert psnr(got / 255, want / 255) >= 100, f"{psnr(got / 255, want / 255):.1f} dB"
    loader.reset()
