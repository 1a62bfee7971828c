"""A float64 numpy emulation of the CrossScaleFold kernel (plugins/crossScaleFold/crossScaleFoldKernel.cu)
against the op reference (models/ops/reference.py), on CPU.

It follows the kernel's index arithmetic literally, so that a wrong rule fails here before any GPU
runs it: the GEMM's block grid, the per-thread slab loads with their bounds, the per-thread (fp32)
and per-warp-fragment (fp16) output ownership with the write guards, and col2im's stepped tap ranges
(start at the residue (o + pad) mod stride, raised past input positions >= in, capped by the kernel
and by o + pad) reading the columns workspace through flat offsets as the kernel does, so a range
that strays reads a wrong element instead of raising. Every columns element must be written exactly
once. Arithmetic is float64 (the kernel's fp32/fp16 rounding is the GPU tests' business); fp16 tiles
see fp16-representable inputs. The grid-stride loop of col2im only decides which thread computes an
output, not what it computes, so it is not emulated.
"""
import numpy as np
import pytest
import torch

from models import ops

# The kernel's tiling constants (crossScaleFoldKernel.cu).
G32_M, G32_N, G32_K, G32_THREADS = 128, 128, 8, 256
G32_LOADS = G32_K * G32_M // G32_THREADS
G16_M, G16_N, G16_K, G16_THREADS, FRAG = 64, 64, 32, 128, 16


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


# ------------------------------------------------------------------------------------- GEMM

def gemm_f32(A, B, M, N, K):
    """gemmF32: C[b][m][n] = sum_k A[b][k][m] B[b][k][n], A [n, K*M], B [n, K*N] flat, in 128 x 128
    blocks of 16 x 16 threads, k-slabs of 8 loaded by (lrow + 2e, lcol)."""
    batch = A.shape[0]
    C = np.full((batch, M * N), np.nan)
    writes = np.zeros((batch, M * N), dtype=np.int64)
    tid = np.arange(G32_THREADS)
    tx, ty = tid & 15, tid >> 4
    row_step = G32_THREADS // G32_M
    lcol, lrow = tid % G32_M, tid // G32_M
    # Output ownership: thread (ty, tx) holds rows 4ty + 64(i // 4) + i % 4, columns likewise with tx.
    own = np.arange(8)
    rows_of = 4 * ty[:, None] + 64 * (own // 4) + own % 4  # [256, 8]
    cols_of = 4 * tx[:, None] + 64 * (own // 4) + own % 4
    for b in range(batch):
        for by in range(ceil_div(M, G32_M)):
            for bx in range(ceil_div(N, G32_N)):
                m0, n0 = by * G32_M, bx * G32_N
                a_in, b_in = m0 + lcol < M, n0 + lcol < N
                acc = np.zeros((G32_THREADS, 8, 8))
                for k0 in range(0, K, G32_K):
                    As, Bs = np.full((G32_K, G32_M), np.nan), np.full((G32_K, G32_N), np.nan)
                    for e in range(G32_LOADS):
                        k = k0 + lrow + row_step * e
                        kin = k < K
                        As[lrow + row_step * e, lcol] = np.where(
                            kin & a_in, A[b, np.where(kin & a_in, k * M + m0 + lcol, 0)], 0.0)
                        Bs[lrow + row_step * e, lcol] = np.where(
                            kin & b_in, B[b, np.where(kin & b_in, k * N + n0 + lcol, 0)], 0.0)
                    assert not np.isnan(As).any() and not np.isnan(Bs).any(), "a slab element was never loaded"
                    for k in range(G32_K):
                        acc += As[k, rows_of][:, :, None] * Bs[k, cols_of][:, None, :]
                m = np.broadcast_to((m0 + rows_of)[:, :, None], acc.shape)
                n = np.broadcast_to((n0 + cols_of)[:, None, :], acc.shape)
                keep = (m < M) & (n < N)
                np.add.at(writes[b], m[keep] * N + n[keep], 1)
                C[b, m[keep] * N + n[keep]] = acc[keep]
    return C, writes


def gemm_f16(A, B, M, N, K):
    """gemmF16: 64 x 64 blocks of 4 warps (wm, wn) = (warp >> 1, warp & 1), each 2 x 2 fragments of
    16 x 16; k-slabs of 32 loaded by idx = tid + 128 t as (idx / 64, idx % 64); Cs copied out guarded."""
    batch = A.shape[0]
    C = np.full((batch, M * N), np.nan)
    writes = np.zeros((batch, M * N), dtype=np.int64)
    idx = np.arange(0, G16_K * G16_M)  # every slab element, as the strided loop over tid covers them
    sk, scol = idx // G16_M, idx % G16_M
    for b in range(batch):
        for by in range(ceil_div(M, G16_M)):
            for bx in range(ceil_div(N, G16_N)):
                m0, n0 = by * G16_M, bx * G16_N
                acc = np.zeros((G16_M, G16_N))  # the 4 warps' fragments tile it exactly
                for k0 in range(0, K, G16_K):
                    k = k0 + sk
                    a_ok, b_ok = (k < K) & (m0 + scol < M), (k < K) & (n0 + scol < N)
                    As, Bs = np.zeros((G16_K, G16_M)), np.zeros((G16_K, G16_N))
                    As[sk, scol] = np.where(a_ok, A[b, np.where(a_ok, k * M + m0 + scol, 0)], 0.0)
                    Bs[sk, scol] = np.where(b_ok, B[b, np.where(b_ok, k * N + n0 + scol, 0)], 0.0)
                    for warp in range(G16_THREADS // 32):
                        wm, wn = warp >> 1, warp & 1
                        for kk in range(0, G16_K, FRAG):
                            for i in range(2):
                                for j in range(2):
                                    r, c = wm * 32 + i * FRAG, wn * 32 + j * FRAG
                                    # A(m, k) = As[k][m] (column-major), B(k, n) = Bs[k][n].
                                    acc[r:r + FRAG, c:c + FRAG] += (As[kk:kk + FRAG, r:r + FRAG].T
                                                                    @ Bs[kk:kk + FRAG, c:c + FRAG])
                rr, cc = np.divmod(np.arange(G16_M * G16_N), G16_N)
                keep = (m0 + rr < M) & (n0 + cc < N)
                flat = (m0 + rr[keep]) * N + n0 + cc[keep]
                np.add.at(writes[b], flat, 1)
                C[b, flat] = acc[rr[keep], cc[keep]]
    return C, writes


# ----------------------------------------------------------------------------------- col2im

def tap_range(o: int, pad: int, stride: int, size_in: int, kernel: int) -> tuple[int, int]:
    """tapRange: taps k = o + pad - i*stride with 0 <= i < size_in; inclusive, step stride."""
    t = o + pad
    first = t % stride
    lowest = t - (size_in - 1) * stride
    if first < lowest:
        first += ceil_div(lowest - first, stride) * stride
    last = kernel - 1 if kernel - 1 < t else t
    return first, last


def col2im(cols, n, C, h, w, kh, kw, stride, pad, out_h, out_w, taps=tap_range):
    """col2im on the flat columns workspace [n*C*kh*kw*h*w]: output (b*C + c, oy, ox) sums, in
    increasing (ky, kx) order, the elements at the flat offsets the kernel computes."""
    position, tap_offset = [], []  # the (output position, offset within its b*C + c plane) pairs summed
    for oy in range(out_h):
        ry = taps(oy, pad, stride, h, kh)
        for ox in range(out_w):
            rx = taps(ox, pad, stride, w, kw)
            for ky in range(ry[0], ry[1] + 1, stride):
                iy = (oy + pad - ky) // stride
                for kx in range(rx[0], rx[1] + 1, stride):
                    ix = (ox + pad - kx) // stride
                    position.append(oy * out_w + ox)
                    tap_offset.append((ky * kw + kx) * h * w + iy * w + ix)
    bc = np.arange(n * C)[:, None]
    offset = bc * kh * kw * h * w + np.array(tap_offset, dtype=np.int64)[None, :]
    if offset.size and offset.min() < 0:  # numpy would wrap around; the kernel reads before the buffer
        raise IndexError("col2im reads before the columns workspace")
    out = np.zeros((n * C, out_h * out_w))
    np.add.at(out, (np.broadcast_to(bc, offset.shape), np.broadcast_to(np.array(position), offset.shape)),
              cols[offset])
    return out


def cross_scale_fold(scores, patches, stride, pad, tiling="f32", taps=tap_range):
    """launchCrossScaleFold: GEMM M = C*kh*kw, N = h*w, K = k over patches [n, K, M] and scores
    [n, K, N] into columns [n, M, N], then col2im."""
    n, k, h, w = scores.shape
    C, kh, kw = patches.shape[2:]
    M, N, K = C * kh * kw, h * w, k
    gemm = gemm_f32 if tiling == "f32" else gemm_f16
    cols, writes = gemm(patches.reshape(n, K * M), scores.reshape(n, K * N), M, N, K)
    assert (writes == 1).all(), "every columns element is written exactly once"
    out_h, out_w = (h - 1) * stride - 2 * pad + kh, (w - 1) * stride - 2 * pad + kw
    return col2im(cols.reshape(-1), n, C, h, w, kh, kw, stride, pad, out_h, out_w, taps).reshape(n, C, out_h, out_w)


# ------------------------------------------------------------------------------------ tests

# (n, K, h, w, C, kh, kw, stride, padding): CSNLN's x2/x3/x4 folds (kernel 3u, stride u, padding u)
# with M = C*kh*kw and N = h*w past one tile; then stride 1, kernel < stride (outputs without taps),
# non-square kernels, padding 0, padding >= stride, a 1x1 input, K not a multiple of either k-slab.
CASES = [
    (2, 19, 11, 13, 5, 6, 6, 2, 2),
    (1, 12, 7, 6, 3, 9, 9, 3, 3),
    (1, 9, 5, 4, 2, 12, 12, 4, 4),
    (2, 7, 6, 5, 3, 3, 3, 1, 1),
    (1, 5, 4, 3, 2, 2, 3, 3, 0),
    (1, 33, 3, 9, 4, 5, 7, 2, 3),
    (1, 4, 1, 1, 3, 4, 4, 2, 1),
]


def inputs(case, seed, half: bool):
    n, K, h, w, C, kh, kw = case[:7]
    g = np.random.default_rng(seed)
    scores, patches = g.random((n, K, h, w)), g.standard_normal((n, K, C, kh, kw))
    if half:  # what the fp16 kernel reads
        scores, patches = scores.astype(np.float16).astype(np.float64), patches.astype(np.float16).astype(np.float64)
    return scores, patches


def reference(scores, patches, stride, pad):
    return ops.cross_scale_fold_reference(torch.from_numpy(scores), torch.from_numpy(patches), stride, pad).numpy()


@pytest.mark.parametrize("tiling", ["f32", "f16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}K{}h{}w{}C{}k{}x{}s{}p{}".format(*c))
def test_emulated_kernel_matches_reference(case, tiling):
    stride, pad = case[7:]
    scores, patches = inputs(case, seed=sum(case), half=tiling == "f16")
    want = reference(scores, patches, stride, pad)
    got = cross_scale_fold(scores, patches, stride, pad, tiling)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-13, f"max relative error {err:.2e}"


def test_tap_range_visits_exactly_the_contributing_taps():
    """Against the rule the kernel used to apply to all k taps (o + pad - k >= 0, divisible by stride,
    quotient < in), over every position of small configurations."""
    for stride in range(1, 5):
        for pad in range(0, 5):
            for kernel in range(1, 13):
                for size_in in range(1, 5):
                    out = (size_in - 1) * stride - 2 * pad + kernel
                    for o in range(max(out, 0)):
                        t = o + pad
                        want = [k for k in range(kernel) if t - k >= 0 and (t - k) % stride == 0
                                and (t - k) // stride < size_in]
                        first, last = tap_range(o, pad, stride, size_in, kernel)
                        assert list(range(first, last + 1, stride)) == want, (o, pad, stride, size_in, kernel)


@pytest.mark.parametrize("broken", ["no raise past the input", "no cap at o + pad", "start at 0"])
def test_a_wrong_tap_rule_fails_the_emulation(broken):
    """The check above has teeth: each plausible slip in the start/step rule changes the result."""
    def wrong(o, pad, stride, size_in, kernel):
        first, last = tap_range(o, pad, stride, size_in, kernel)
        t = o + pad
        if broken == "no raise past the input":
            first = t % stride
        elif broken == "no cap at o + pad":
            last = kernel - 1
        else:
            first = 0
        return first, last

    case = CASES[0]
    stride, pad = case[7:]
    scores, patches = inputs(case, seed=1, half=False)
    want = reference(scores, patches, stride, pad)
    try:
        got = cross_scale_fold(scores, patches, stride, pad, "f32", taps=wrong)
    except IndexError:  # read past the end of the columns: as wrong as it gets
        return
    assert np.abs(got - want).max() > 1e-3
