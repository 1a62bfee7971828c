"""The CUDA kernels against their PyTorch references on a GPU (DESIGN.md §5): exact for BucketSort,
>= 100 dB in fp32 (TF32 off) and >= 60 dB in fp16 per op, on inputs shaped like the networks' own
(benchmarks/op_cases.py: peaky and flat queries, 1, 2 and 3 chunks, padding, the released NLSN block);
outputs and workspaces poisoned before every run; both BucketAttention variants
($SRDEPLOY_BUCKET_ATTENTION); a call on a non-default stream right after a long producer; whole NLSN /
CSNLN with kernels vs the reference (fp32 >= 100 dB under the near-tie rule) and fp16 end to end vs fp32
on real images (>= 45 dB).

Imports only torch, numpy and project modules that need nothing else: the GPU machine has no
polygraphy, onnx-graphsurgeon, onnxruntime-extensions or TensorRT. Every PSNR also goes to
$SRDEPLOY_PARITY_LOG when set (scripts/gpu_check.sh collects them into summary.json)."""
import math
import os

import pytest
import torch

import models
from benchmarks import common, op_cases
from benchmarks import kernels as bench_kernels
from benchmarks.gpu_summary import record_parity
from benchmarks.near_tie import compare_paths
from models import ops
from plugins import kernels
from runtime.metrics import max_abs_diff, psnr_peak1
from test_op_backends import cuda_kernels

REASON = "needs a CUDA GPU and the built kernels library (python -m plugins.build, or $SRDEPLOY_KERNELS_LIB)"
VARIANT_ENV, VARIANTS = bench_kernels.VARIANT_ENV, bench_kernels.VARIANTS
FP32_DB, FP16_DB = op_cases.FLOORS_DB[torch.float32], op_cases.FLOORS_DB[torch.float16]
END_TO_END_FP16_DB = 45.0


KERNELS, WHY_NOT = cuda_kernels()
if KERNELS is None and os.environ.get("SRDEPLOY_REQUIRE_GPU") == "1":  # scripts/gpu_check.sh: no silent all-skip
    raise RuntimeError(f"SRDEPLOY_REQUIRE_GPU=1 but the GPU tests cannot run: {WHY_NOT}")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(KERNELS is None, reason=REASON)]


@pytest.fixture(autouse=True)
def strict_fp32():
    """fp32 means fp32: no TF32 in the references (matmul and cuDNN convolutions)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_floor(name: str, got: torch.Tensor, want: torch.Tensor, floor: float) -> None:
    """Finite output, PSNR >= floor; the row goes to the parity log either way."""
    finite = bool(torch.isfinite(got).all())
    db = psnr_peak1(got, want) if finite else -math.inf
    record_parity(name, psnr_db=db, floor_db=floor, max_abs=max_abs_diff(got, want) if finite else None,
                  passed=finite and db >= floor, note="" if finite else "non-finite output")
    assert finite, f"{name}: non-finite output (poison left unwritten?)"
    assert db >= floor, f"{name}: {db:.1f} dB < {floor} dB"


def dname(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16"}[dtype]


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan")) if t.is_floating_point() else torch.full_like(t, -7)


def poisoned_workspace(nbytes: int) -> torch.Tensor:
    return torch.full((max(nbytes, 1),), 0xFF, dtype=torch.uint8, device="cuda")  # NaN as fp32 and fp16


# ---------------------------------------------------------------------------- variants

@pytest.fixture(scope="module")
def variants_built():
    return bench_kernels.variants_of(KERNELS)


@pytest.fixture(params=VARIANTS)
def variant(request, monkeypatch, variants_built):
    """Runs the test under one BucketAttention variant (the C ABI reads the variable at every call)."""
    if request.param not in variants_built:
        pytest.skip(f"this kernels library ignores ${VARIANT_ENV}: only the gather kernel is built in")
    monkeypatch.setenv(VARIANT_ENV, request.param)
    return request.param


# ------------------------------------------------------------------------------- BucketSort

@pytest.mark.parametrize("B,M,buckets", op_cases.SORT_CASES)
def test_bucket_sort_exact(B, M, buckets):
    codes = op_cases.sort_inputs(B, M, buckets, seed=M)
    want_order = torch.sort(codes, dim=-1, stable=True).indices.to(torch.int32)
    nbytes = KERNELS.workspace_size("srd_bucket_sort_workspace_size", B, M, buckets)
    exact, inverse = [], []
    for _ in range(2):  # outputs and workspace poisoned before each run
        out = (poisoned_like(codes), poisoned_like(codes))
        order, rank = KERNELS.bucket_sort(codes, buckets, out=out, workspace=poisoned_workspace(nbytes))
        torch.cuda.synchronize()
        exact.append(torch.equal(order, want_order))
        # rank is the inverse permutation: rank[order[p]] = p
        inverse.append(torch.equal(rank.gather(1, order.long()),
                                   torch.arange(M, device="cuda", dtype=torch.int32).expand(B, M)))
    record_parity(f"bucket_sort {B}x{M} buckets {buckets}", exact=all(exact) and all(inverse))
    assert all(exact), f"order differs from torch.sort(stable=True) (runs: {exact})"
    assert all(inverse), f"rank is not the inverse of order (runs: {inverse})"


# -------------------------------------------------------------------------- BucketAttention

CASE_IDS = [c.id for c in op_cases.ATTENTION_CASES]


def _attention_check(case, variant, peaky, dtype):
    q, v, order, rank = op_cases.sorted_attention_inputs(*case[:7], seed=case.H * case.W + case.C,
                                                         dtype=dtype, peaky=peaky)
    want = ops.bucket_attention_reference(q.float(), v.float(), order, rank, case.cs, case.R, op_cases.KEY_EPS)
    nbytes = KERNELS.workspace_size("srd_bucket_attention_workspace_size", case.N, case.H * case.W, case.c, case.C,
                                    case.cs, case.R, kernels.DTYPES[dtype])
    for _ in range(2):  # outputs and workspace poisoned before each run; the second sees what the first left
        got = KERNELS.bucket_attention(q, v, order, rank, case.cs, case.R, op_cases.KEY_EPS, out=poisoned_like(v),
                                       workspace=poisoned_workspace(nbytes))
        torch.cuda.synchronize()
        assert got.dtype == dtype
    name = (f"bucket_attention {variant} {dname(dtype)} "
            f"{'peaky' if peaky else 'flat'} {case.id} ({case.note}, {op_cases.num_chunks(case.H * case.W, case.cs)} "
            f"chunks)")
    check_floor(name, got, want, FP32_DB if dtype == torch.float32 else FP16_DB)


@pytest.mark.parametrize("peaky", [False, True], ids=["flat", "peaky"])
@pytest.mark.parametrize("case", op_cases.ATTENTION_CASES, ids=CASE_IDS)
def test_bucket_attention_fp32(case, peaky, variant):
    _attention_check(case, variant, peaky, torch.float32)


@pytest.mark.parametrize("peaky", [False, True], ids=["flat", "peaky"])
@pytest.mark.parametrize("case", op_cases.ATTENTION_CASES, ids=CASE_IDS)
def test_bucket_attention_fp16(case, peaky, variant):
    _attention_check(case, variant, peaky, torch.float16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_bucket_attention_on_a_side_stream_after_a_long_producer(dtype, variant):
    """The kernels run on the caller's stream: inputs written on a side stream right before the call,
    behind ~20 ms of GPU work, must be what the kernel reads (a default-stream launch would read
    the poison)."""
    case = op_cases.AttentionCase(1, 64, 64, 64, 256, 144, 4, "side stream")
    q, v, order, rank = op_cases.sorted_attention_inputs(*case[:7], seed=5, dtype=dtype, peaky=True)
    want = ops.bucket_attention_reference(q.float(), v.float(), order, rank, case.cs, case.R, op_cases.KEY_EPS)
    q_in, v_in = poisoned_like(q), poisoned_like(v)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(40_000_000)  # ~20 ms of spinning at ~2 GHz: the long producer
        q_in.copy_(q)
        v_in.copy_(v)
        got = KERNELS.bucket_attention(q_in, v_in, order, rank, case.cs, case.R, op_cases.KEY_EPS)
    side.synchronize()
    check_floor(f"bucket_attention {variant} {dname(dtype)} side stream after a long producer", got, want,
                FP32_DB if dtype == torch.float32 else FP16_DB)


# --------------------------------------------------------------------------- CrossScaleFold

@pytest.mark.parametrize("N,H,W,C,u", op_cases.FOLD_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_cross_scale_fold(N, H, W, C, u, dtype):
    scores, patches = op_cases.fold_inputs(N, H, W, C, u, seed=H * W + C, dtype=dtype)
    want = ops.cross_scale_fold_reference(scores.float(), patches.float(), u, u)
    nbytes = KERNELS.workspace_size("srd_cross_scale_fold_workspace_size", N, scores.shape[1], H, W, C,
                                    3 * u, 3 * u, u, u, kernels.DTYPES[dtype])
    for _ in range(2):
        got = KERNELS.cross_scale_fold(scores, patches, u, u, out=poisoned_like(want.to(dtype)),
                                       workspace=poisoned_workspace(nbytes))
        torch.cuda.synchronize()
        assert got.dtype == dtype
    check_floor(f"cross_scale_fold {dname(dtype)} {N}x{C}x{H}x{W} u{u}", got, want,
                FP32_DB if dtype == torch.float32 else FP16_DB)


# ------------------------------------------------------------------------ dispatch and models

@pytest.fixture
def kernels_enabled(monkeypatch):
    """torch.ops.srdeploy.* on CUDA tensors use this session's library."""
    kernels.reset()
    monkeypatch.setenv(kernels.LIB_ENV, str(KERNELS.path))
    kernels.enable()
    yield
    kernels.reset()


def test_torch_ops_dispatch_to_kernels_on_cuda(kernels_enabled, monkeypatch):
    calls = []
    original = kernels.Kernels.bucket_attention
    monkeypatch.setattr(kernels.Kernels, "bucket_attention",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    q, v, order, rank = op_cases.sorted_attention_inputs(1, 24, 24, 64, 256, 144, 4, seed=1)
    got = torch.ops.srdeploy.bucket_attention(q, v, order, rank, 144, 4, op_cases.KEY_EPS)
    assert calls and psnr_peak1(got, ops.bucket_attention_reference(q, v, order, rank, 144, 4, op_cases.KEY_EPS)) >= 100
    with kernels.reference_only():
        torch.ops.srdeploy.bucket_attention(q, v, order, rank, 144, 4, op_cases.KEY_EPS)
    assert len(calls) == 1


def run_kernels(model, x):
    assert kernels.get() is not None, "the kernels library did not load"
    return model(x)


def run_reference(model, x):
    with kernels.reference_only():
        return model(x)


# Small configurations of both networks at x2 and x4 (NLSN with the released chunk size and rounds,
# so its blocks take the released code paths: 2-4 chunks, padding).
WHOLE = [
    ("nlsn", 2, dict(n_resblocks=8, n_feats=64), (40, 36)),
    ("nlsn", 4, dict(n_resblocks=8, n_feats=64), (24, 30)),
    ("csnln", 2, dict(n_feats=32, depth=2), (24, 20)),
    ("csnln", 4, dict(n_feats=32, depth=2), (20, 24)),
]


@pytest.mark.parametrize("name,scale,cfg,size", WHOLE, ids=[f"{w[0]}_x{w[1]}" for w in WHOLE])
def test_whole_model_kernels_vs_reference_fp32(name, scale, cfg, size, variant, kernels_enabled):
    """Hash codes compared first: a bucket flip at a near-tie is reported as such (DESIGN §5)."""
    torch.manual_seed(0)
    model = models.build(name, scale, **cfg).cuda()
    x, source = common.real_lr(*size, scale, index=scale)
    row = compare_paths(model, run_kernels, model, run_reference, 255 * x.cuda(), floor_db=FP32_DB, peak=255)
    record_parity(f"{name} x{scale} {cfg} {size[0]}x{size[1]} kernels ({variant}) vs reference fp32 ({source})",
                  **row)
    assert row["passed"], row


def _bundled(name, scale):
    from models import weights
    entry = weights.find(name, scale)
    if entry is None:
        pytest.skip(f"no bundled {name} x{scale} weights")
    return models.load(entry.path, model=name, scale=scale, **entry.overrides).eval()


@pytest.mark.parametrize("name,scale", [("nlsn", 2), ("nlsn", 4), ("csnln", 2), ("csnln", 4)])
def test_fp16_end_to_end_vs_fp32_on_real_images(name, scale, variant, kernels_enabled):
    """The bundled (trained) network in fp16 with the kernels against the fp32 reference on a Set5 crop."""
    model32 = _bundled(name, scale).cuda()
    model16 = _bundled(name, scale).cuda().half()
    h, w = model32.valid_size(48, 48)
    x, source = common.real_lr(h, w, scale, index=scale)
    if not source.startswith("Set5"):
        pytest.skip(f"Set5 images not found under {common.SHARED}/data (scripts/prepare_gpu_run.sh copies them)")
    x = (255 * x).cuda()
    row = compare_paths(model16, lambda m, t: run_kernels(m, t.half()).float(), model32, run_reference, x,
                        floor_db=END_TO_END_FP16_DB, peak=255)
    record_parity(f"{name} x{scale} bundled {h}x{w} fp16 kernels ({variant}) vs fp32 reference ({source})", **row)
    assert row["passed"], row

