"""The kernels on index inputs no network produces (GPU): TensorRT times plugins on arbitrary int32
data, and one illegal address is sticky for the whole process. Codes outside [0, num_buckets) are
clamped, `order` is taken mod L with torch's sign rule (as the reference does), `rank` is clamped:
no value may fault, and valid inputs keep their results bit for bit.

Imports only torch, pytest and project modules that need nothing else (safe for the GPU check)."""
import pytest
import torch

from benchmarks import op_cases
from models import ops
from plugins import kernels
from runtime.metrics import psnr_peak1

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


KERNELS = kernels.get() if torch.cuda.is_available() else None  # None (and one warning) when not built
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(KERNELS is None, reason="needs a CUDA GPU and the built kernels library")]


def random_int32(shape, g):
    return torch.randint(INT32_MIN, INT32_MAX, shape, dtype=torch.int64, device="cuda", generator=g).to(torch.int32)


def test_bucket_sort_clamps_any_code():
    g = torch.Generator(device="cuda").manual_seed(0)
    codes = random_int32((3, 5000), g)
    codes[:, :4] = torch.tensor([INT32_MIN, -1, 64, INT32_MAX], dtype=torch.int32)
    order, rank = KERNELS.bucket_sort(codes, 64)
    torch.cuda.synchronize()
    want = ops.bucket_sort_reference(codes.clamp(0, 63), 64)
    assert torch.equal(order, want[0]) and torch.equal(rank, want[1])


def attention_case(dtype=torch.float32):
    """Valid sorted inputs of an odd size (2 x 13 x 17, c 16, C 40, chunk 48, 3 rounds: padding, 5 chunks)."""
    cs, R = 48, 3
    return (*op_cases.sorted_attention_inputs(2, 13, 17, 16, 40, cs, R, seed=1, dtype=dtype, device="cuda"), cs, R)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bucket_attention_takes_order_mod_l_bitwise(dtype):
    """order + j*L for any j (negative too) names the same row: bitwise the same output."""
    q, v, order, rank, cs, R = attention_case(dtype=dtype)
    L = q.shape[1]
    g = torch.Generator(device="cuda").manual_seed(2)
    shift = torch.randint(-(INT32_MAX // L), INT32_MAX // L, order.shape, device="cuda", generator=g)
    shifted = (order.long() + shift * L).to(torch.int32)  # within int32: |shift| < INT32_MAX // L
    assert (shifted < 0).any() and (shifted >= L).any()
    base = KERNELS.bucket_attention(q, v, order, rank, cs, R, op_cases.KEY_EPS)
    got = KERNELS.bucket_attention(q, v, shifted, rank, cs, R, op_cases.KEY_EPS)
    torch.cuda.synchronize()
    assert torch.equal(got, base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bucket_attention_survives_arbitrary_order_and_rank(dtype):
    q, v, order, rank, cs, R = attention_case(dtype=dtype)
    g = torch.Generator(device="cuda").manual_seed(3)
    bad_order, bad_rank = random_int32(order.shape, g), random_int32(rank.shape, g)
    bad_rank[:, :2] = torch.tensor([INT32_MIN, INT32_MAX], dtype=torch.int32)
    out = KERNELS.bucket_attention(q, v, bad_order, bad_rank, cs, R, op_cases.KEY_EPS)
    torch.cuda.synchronize()  # an illegal address would raise here, and in every later test
    assert torch.isfinite(out).all()
    # rank clamped into [0, R*L): the reference on the clamped rank says what the kernel computes.
    L = q.shape[1]
    want = ops.bucket_attention_reference(q.float(), v.float(), bad_order, bad_rank.clamp(0, R * L - 1), cs, R,
                                          op_cases.KEY_EPS)
    assert psnr_peak1(out, want) >= op_cases.FLOORS_DB[dtype]  # fp16 against the fp32 oracle
