"""Float64 numpy emulations of both BucketAttention CUDA variants, tile by tile, against the op
reference (models.ops.bucket_attention_reference in float64). CPU only: no GPU runs here.

Each emulation follows its kernel's index arithmetic: the block grid, the rows a block (or a warp)
owns, the key tiles in the kernel's loop order with the keys each lane holds, the wrap-around of
neighbour chunks, the padding rule, the zero-fill of rows and columns past the data, the online
softmax rescale per tile (the gather variant's fp16 path: its two passes), the rows dropped at
p >= L, and the round combine through `rank`. Rounding is not emulated (float64 throughout), so
agreement to ~1e-15 shows the tiling is the reference's computation, and a wrong rule (a wrap,
a pad, a tile bound) shows as an O(1) error: test_emulation_detects_a_broken_rule checks that.

Kernels: plugins/bucketAttention/bucketAttentionKernel.cu (gather, the default) and
bucketAttentionChunkKernel.cu (chunk, SRDEPLOY_BUCKET_ATTENTION=chunk).
"""
import math
import sys

import numpy as np
import pytest
import torch

import models  # noqa: F401  (registers torch.ops.srdeploy)
from models.ops import bucket_attention_reference, bucket_sort_reference

NEG_INF = -np.inf


def ceil_div(a, b):
    return -(-a // b)


def round_up(x, m):
    return ceil_div(x, m) * m


# ------------------------------------------------------------------- rules both kernels share

def wrap_index(i, L):
    """wrapIndex / `order % L`: C's remainder made non-negative, i.e. Python's modulo."""
    r = np.fmod(i, L)
    return np.where(r < 0, r + L, r)


def source_position(p, L, pad):
    """Sorted position within the round of padded row p: rows past L repeat the last `pad` rows."""
    return np.where(p < L, p, p - pad)


def key_position(j, chunk, cs, nc):
    """keyPosition: key j in [0, 3cs) of `chunk` -> sorted position; own, previous, next (cyclic)."""
    which = (j >= cs).astype(int) + (j >= 2 * cs)  # the kernel's two compares (j < 3cs)
    kc = np.where(which == 1, nc - 1 if chunk == 0 else chunk - 1,
                  np.where(which == 2, 0 if chunk == nc - 1 else chunk + 1, chunk))
    return kc * cs + (j - which * cs)


class Geometry:
    def __init__(self, L, cs):
        self.L, self.cs = L, cs
        self.pad = (cs - L % cs) % cs
        self.nc = (L + self.pad) // cs
        self.Lp = self.nc * cs
        self.n_keys = 3 * cs


def no_rounding(x):
    return x


def to_fp16(x):
    """Rounding to fp16 and back: the fp16 kernels' storage points, when emulating fp16."""
    return np.asarray(x).astype(np.float16).astype(np.float64)


def online_softmax_step(m, lsum, O, S, V, rnd=no_rounding):
    """One key tile of the online softmax: new row max, rescale of the old sum and outputs by
    exp(m_old - m_new) (0 on the first tile), then this tile's exp(S - m_new); the sum takes P
    as computed, the product P.V as stored (`rnd`: fp16 in the mma path)."""
    m_new = np.maximum(m, S.max(1))
    alpha = np.exp(m - m_new)
    P = np.exp(S - m_new[:, None])
    return m_new, lsum * alpha + P.sum(1), O * alpha[:, None] + rnd(P) @ V


def combine(out_ws, lse_ws, rank, N, R, L, C):
    """combineRounds / combineChunkRounds: one output row per (n, l); rank clamped to [0, R*L)."""
    m = np.clip(rank.reshape(N, R, L), 0, R * L - 1)             # [N, R, L] rows of the round results
    lse = np.take_along_axis(lse_ws, m.reshape(N, R * L), 1).reshape(N, R, L)
    w = np.exp(lse - lse.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    rows = np.take_along_axis(out_ws[:, :, :C], m.reshape(N, R * L, 1), 1).reshape(N, R, L, C)
    return (w[..., None] * rows).sum(1)


# ------------------------------------------------------------------------- variant `gather`

GATHER_BM, GATHER_BN = 48, 64  # kBM query rows per block, kBN keys per tile


def emulate_gather(q, v, order, rank, cs, R, eps, precision="fp32", rnd=no_rounding):
    """bucketAttentionKernel.cu: one block per (column tile, query tile, chunk, round, n) gathering
    its rows through `order`; fp32 = online softmax over 64-key tiles, fp16 = two passes."""
    N, L, c = q.shape
    C = v.shape[-1]
    g = Geometry(L, cs)
    den = np.maximum(np.sqrt((q ** 2).sum(-1)), eps)  # keyDenominators
    bc = next((b for b in (64, 128, 256) if b >= C), 256)  # widest tile needed (fits on sm_80+)
    c_tiles, q_tiles = ceil_div(C, bc), ceil_div(cs, GATHER_BM)
    out_ws = np.full((N, R * L, C), np.nan)
    lse_ws = np.full((N, R * L), np.nan)
    for n in range(N):
        for r in range(R):
            order_round = order[n, r * L:(r + 1) * L]

            def source_row(p):  # sourceRow (no clamp of negative values in this kernel)
                return order_round[source_position(p, L, g.pad)] % L

            for chunk in range(g.nc):
                for qt in range(q_tiles):
                    qi = qt * GATHER_BM + np.arange(GATHER_BM)
                    q_valid = qi < cs
                    rows = source_row(np.where(q_valid, chunk * cs + qi, 0))
                    Q = np.where(q_valid[:, None], q[n, rows], 0.0)
                    for ct in range(c_tiles):
                        cols = ct * bc + np.arange(bc)
                        c_valid = cols < C

                        def key_tile(t):
                            j = t * GATHER_BN + np.arange(GATHER_BN)
                            valid = j < g.n_keys
                            s = source_row(key_position(np.where(valid, j, 0), chunk, cs, g.nc))
                            K = np.where(valid[:, None], rnd(q[n, s] / den[n, s][:, None]), 0.0)
                            V = np.where(valid[:, None] & c_valid[None, :], v[n, s][:, np.minimum(cols, C - 1)], 0.0)
                            S = Q @ K.T
                            S[:, ~valid] = NEG_INF
                            return S, V

                        n_tiles = ceil_div(g.n_keys, GATHER_BN)
                        m = np.full(GATHER_BM, NEG_INF)
                        lsum = np.zeros(GATHER_BM)
                        O = np.zeros((GATHER_BM, bc))
                        if precision == "fp32":  # one pass, online softmax
                            for t in range(n_tiles):
                                m, lsum, O = online_softmax_step(m, lsum, O, *key_tile(t))
                            O = O / lsum[:, None]
                        else:  # pass 1: exact max and sum; pass 2: exp(S - lse) . V
                            for t in range(n_tiles):
                                S, _ = key_tile(t)
                                m_new = np.maximum(m, S.max(1))
                                lsum = lsum * np.exp(m - m_new) + np.exp(S - m_new[:, None]).sum(1)
                                m = m_new
                            lse = m + np.log(lsum)
                            for t in range(n_tiles):
                                S, V = key_tile(t)
                                O = O + rnd(np.exp(S - lse[:, None])) @ V
                        p = chunk * cs + qi
                        keep = q_valid & (p < L)
                        mm = r * L + p[keep]
                        out_ws[n, mm[:, None], cols[c_valid][None, :]] = O[keep][:, c_valid]
                        if ct == 0:
                            lse_ws[n, mm] = m[keep] + np.log(lsum[keep])
    return rnd(combine(out_ws, lse_ws, rank, N, R, L, C))  # per-round outputs stay fp32


# -------------------------------------------------------------------------- variant `chunk`

MAX_WARPS, FRAG_ROWS, MAX_BC = 8, 16, 128
CHUNK_TILING = {  # per precision: c rounding (k-step), 16-byte row rounding, keys per tile
    "fp16": dict(dim_step=16, vec=8, tile_keys=64),
    "fp32": dict(dim_step=4, vec=4, tile_keys=32),
}


def lane_keys(precision, tig):
    """Keys of a tile that lane (g, tig) holds: fp16 the mma D layout 8(i/2) + 2t + i%2 (i < 16),
    fp32 t + 4i (i < 8)."""
    if precision == "fp16":
        return np.array([8 * (i // 2) + 2 * tig + (i % 2) for i in range(16)])
    return np.array([tig + 4 * i for i in range(8)])


def chunk_launch(cs, C):
    """runChunk's tiling when shared memory allows 8 warps: the narrowest column tile covering C
    (at most 128), passes of up to 8 warps of 16 rows, warps spread evenly over the passes."""
    bc = 64
    while bc < C and bc < MAX_BC:
        bc *= 2
    n_frags = ceil_div(cs, FRAG_ROWS)
    passes = ceil_div(n_frags, MAX_WARPS)
    warps = ceil_div(n_frags, passes)
    return bc, passes, warps


def emulate_chunk(q, v, order, rank, cs, R, eps, precision="fp32", rnd=no_rounding):
    """bucketAttentionChunkKernel.cu: pre-gather into sorted buffers, then one block per (n,
    round, chunk, pass, column tile) streaming the K/V tiles in the kernel's order."""
    N, L, c = q.shape
    C = v.shape[-1]
    tiling = CHUNK_TILING[precision]
    tile_keys = tiling["tile_keys"]
    g = Geometry(L, cs)
    ldQ, ldV = round_up(c, tiling["dim_step"]), round_up(C, tiling["vec"])
    bc, passes, warps = chunk_launch(cs, C)
    c_tiles = ceil_div(C, bc)
    rows_per_pass = warps * FRAG_ROWS

    # 1. gatherSorted: every padded sorted row of every round, rows zero-padded to ldQ / ldV.
    sq = np.zeros((N, R, g.Lp, ldQ))
    sk = np.zeros((N, R, g.Lp, ldQ))
    sv = np.zeros((N, R, g.Lp, c_tiles * bc))  # columns past ldV: what cp.async zero-fills
    p_all = np.arange(g.Lp)
    for n in range(N):
        for r in range(R):
            s = wrap_index(order[n, r * L + source_position(p_all, L, g.pad)], L)
            den = np.maximum(np.sqrt((q[n, s] ** 2).sum(-1)), eps)
            sq[n, r, :, :c] = q[n, s]
            sk[n, r, :, :c] = rnd(q[n, s] / den[:, None])
            sv[n, r, :, :C] = v[n, s]

    # The tile's keys in lane order (every lane tig of a quad; the 8 quads share them).
    tile_order = np.concatenate([lane_keys(precision, t) for t in range(4)])
    assert sorted(tile_order.tolist()) == list(range(tile_keys)), "lanes must cover the tile once"

    out_ws = np.full((N, R * L, ldV), np.nan)
    lse_ws = np.full((N, R * L), np.nan)
    n_tiles = ceil_div(g.n_keys, tile_keys)
    for n in range(N):  # grid (nc, R, N)
        for r in range(R):
            for chunk in range(g.nc):
                for ct in range(c_tiles):
                    col0 = ct * bc
                    cols = col0 + np.arange(bc)
                    c_valid = cols < ldV  # 16-byte chunks past the row are zero-filled
                    for pas in range(passes):
                        qi = pas * rows_per_pass + np.arange(rows_per_pass)
                        q_valid = qi < cs
                        Q = np.where(q_valid[:, None], sq[n, r, np.minimum(chunk * cs + qi, g.Lp - 1)], 0.0)
                        m = np.full(rows_per_pass, NEG_INF)
                        lsum = np.zeros(rows_per_pass)
                        O = np.zeros((rows_per_pass, bc))
                        for t in range(n_tiles):
                            j = t * tile_keys + tile_order
                            valid = j < g.n_keys
                            pos = key_position(np.where(valid, j, 0), chunk, cs, g.nc)
                            K = np.where(valid[:, None], sk[n, r, pos], 0.0)
                            V = np.where(valid[:, None], sv[n, r, pos, col0:col0 + bc], 0.0)
                            S = Q @ K.T
                            S[:, ~valid] = NEG_INF
                            m, lsum, O = online_softmax_step(m, lsum, O, S, V, rnd)
                        p = chunk * cs + qi
                        keep = q_valid & (p < L)
                        mm = r * L + p[keep]
                        out_ws[n, mm[:, None], cols[c_valid][None, :]] = rnd(O / lsum[:, None])[keep][:, c_valid]
                        if ct == 0:
                            lse_ws[n, mm] = m[keep] + np.log(lsum[keep])
    return rnd(combine(out_ws, lse_ws, rank, N, R, L, C))  # per-round outputs in fp16 too


# ------------------------------------------------------------------------------------ cases

def make_case(N, L, c, C, cs, R, peaky, seed):
    """float64 q, v and the order/rank of round-offset codes, as the network produces them."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(N, L, c, generator=gen, dtype=torch.float64) * (20.0 if peaky else 0.5)
    v = torch.randn(N, L, C, generator=gen, dtype=torch.float64)
    nb = max(2, min(L // cs + (L // cs) % 2, 128))
    codes = torch.randint(0, nb, (N, R, L), generator=gen, dtype=torch.int32) + nb * torch.arange(R, dtype=torch.int32)[:, None]
    order, rank = bucket_sort_reference(codes.reshape(N, R * L), nb * R)
    return q, v, order, rank


def reference(q, v, order, rank, cs, R, eps):
    return bucket_attention_reference(q, v, order, rank, cs, R, eps).numpy()


# (N, L, c, C, cs, R, peaky): chunks = ceil(L / cs)
CASES = {
    "1 chunk": (2, 11, 5, 9, 11, 4, False),
    "1 chunk R=1": (1, 40, 16, 64, 40, 1, True),
    "2 chunks padded": (2, 13, 7, 11, 7, 4, False),
    "2 chunks padded, 3cs over one tile": (1, 70, 33, 130, 37, 4, True),
    "3 chunks": (1, 27, 6, 17, 9, 4, True),
    "3 chunks padded": (2, 25, 67, 203, 9, 1, False),
    "8 chunks": (1, 136, 12, 40, 17, 4, False),
    "9 chunks padded, odd cs": (1, 9 * 21 - 5, 9, 33, 21, 4, True),
    "released block (c 64, C 256, cs 144), 3 chunks padded": (1, 3 * 144 - 50, 64, 256, 144, 4, True),
}
EPS = 5e-5


GATHER_CASES = ["1 chunk", "2 chunks padded", "3 chunks", "8 chunks", "9 chunks padded, odd cs",
                "released block (c 64, C 256, cs 144), 3 chunks padded"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("variant,case", [("chunk", c) for c in CASES] + [("gather", c) for c in GATHER_CASES])
def test_variant_tiling_matches_reference(variant, case, precision):
    N, L, c, C, cs, R, peaky = CASES[case]
    q, v, order, rank = make_case(N, L, c, C, cs, R, peaky, seed=len(case) * 7 + L)
    emulate = emulate_chunk if variant == "chunk" else emulate_gather
    got = emulate(q.numpy(), v.numpy(), order.numpy(), rank.numpy(), cs, R, EPS, precision)
    want = reference(q, v, order, rank, cs, R, EPS)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["chunk", "gather"])
@pytest.mark.parametrize("case", ["2 chunks padded", "8 chunks", "9 chunks padded, odd cs"])
def test_fp16_storage_rounding_stays_above_the_parity_floor(variant, case):
    """fp16 inputs, keys, P and outputs rounded where each fp16 kernel stores them (chunk: per-round
    outputs in fp16 too, finding 6; accumulation is float64 here, fp32 on the GPU, far below fp16's
    rounding): an estimate of the GPU parity against the 60 dB floor of DESIGN.md section 5
    (about 79-81 dB at these sizes; fp16 output rounding alone is about 82-84 dB)."""
    N, L, c, C, cs, R, peaky = CASES[case]
    q, v, order, rank = make_case(N, L, c, C, cs, R, peaky, seed=11)
    q16, v16 = torch.from_numpy(to_fp16(q.numpy())), torch.from_numpy(to_fp16(v.numpy()))
    emulate = emulate_chunk if variant == "chunk" else emulate_gather
    got = emulate(q16.numpy(), v16.numpy(), order.numpy(), rank.numpy(), cs, R, EPS, "fp16", to_fp16)
    mse = np.mean((got - reference(q16, v16, order, rank, cs, R, EPS)) ** 2)
    assert 10 * math.log10(1.0 / mse) > 70.0


def test_chunk_variant_wraps_arbitrary_order_values_like_the_reference():
    """Arbitrary int32 order (negative, huge) is read as Python's `order % L` (wrapIndex), which
    is what the reference computes: no out-of-bounds row, the same result."""
    N, L, c, C, cs, R = 1, 30, 8, 12, 7, 2
    q, v, order, rank = make_case(N, L, c, C, cs, R, False, seed=3)
    gen = torch.Generator().manual_seed(4)
    shift = torch.randint(-(2 ** 31) // L + 1, (2 ** 31 - 1) // L - R, order.shape, generator=gen) * L
    garbage = (order.long() + shift).to(torch.int32)
    assert (garbage < 0).any() and (garbage >= R * L).any()
    got = emulate_chunk(q.numpy(), v.numpy(), garbage.numpy(), rank.numpy(), cs, R, EPS)
    np.testing.assert_allclose(got, reference(q, v, garbage, rank, cs, R, EPS), rtol=0, atol=1e-12)


def test_chunk_launch_tiling_of_the_released_shape():
    """cs = 144, C = 256: two passes of five warps (160 rows for 144), two 128-column tiles."""
    assert chunk_launch(144, 256) == (128, 2, 5)
    assert chunk_launch(17, 9) == (64, 1, 2)
    assert chunk_launch(128, 128) == (128, 1, 8)


BROKEN_RULES = {
    # chunk 0's previous chunk taken as chunk 0 itself instead of the last one
    "no wrap": ("key_position", lambda j, chunk, cs, nc: np.where(
        (j // cs == 1) & (chunk == 0), j - cs, key_position_ok(j, chunk, cs, nc))),
    # padding repeats the first rows instead of the last ones
    "pad from the front": ("source_position", lambda p, L, pad: np.where(p < L, p, p - L)),
    # the C remainder instead of Python's modulo (a negative index wraps to the end otherwise)
    "C remainder": ("wrap_index", lambda i, L: np.abs(np.fmod(i, L))),
}
key_position_ok = key_position


@pytest.mark.parametrize("rule", list(BROKEN_RULES))
def test_emulation_detects_a_broken_rule(rule, monkeypatch):
    """The emulation is sensitive to the rules it claims to check: break one, it disagrees."""
    name, broken = BROKEN_RULES[rule]
    N, L, c, C, cs, R = 1, 25, 6, 10, 9, 2  # 3 chunks, pad 2
    q, v, order, rank = make_case(N, L, c, C, cs, R, False, seed=5)
    if rule == "C remainder":
        order = (order.long() - 2 * L).to(torch.int32)  # negative values, same rows for Python's %
    monkeypatch.setattr(sys.modules[__name__], name, broken)
    got = emulate_chunk(q.numpy(), v.numpy(), order.numpy(), rank.numpy(), cs, R, EPS)
    err = np.abs(got - reference(q, v, order, rank, cs, R, EPS)).max()
    assert err > 1e-3, f"breaking '{rule}' went unnoticed (max error {err:.1e})"


# ------------------------------------------------- lane level: the chunk kernel's warp fragments
# The float64 emulations above work on whole tiles. These follow single lanes through the chunk
# kernel's fp16 warp tile: fragments loaded with the kernel's index formulas, combined by
# mma.sync.m16n8k16 and ldmatrix.x4.trans as the PTX ISA defines their layouts, must assemble
# into Q.K^T and P.V. (lane = 4g + t: g = groupID, t = thread in group.)

def mma_m16n8k16(a, b, d):
    """a [32, 4, 2], b [32, 2, 2], d [32, 4] (per lane) -> d + A.B, per the ISA's layouts:
    A reg r holds (row g + 8(r%2), cols 2t + 8(r//2) + e), B reg r (rows 2t + 8r + e, col g),
    D element i (row g + 8(i//2), col 2t + i%2)."""
    A, B = np.zeros((16, 16)), np.zeros((16, 8))
    for lane in range(32):
        g, t = divmod(lane, 4)
        for reg in range(4):
            for e in range(2):
                A[g + 8 * (reg % 2), 2 * t + 8 * (reg // 2) + e] = a[lane, reg, e]
        for reg in range(2):
            for e in range(2):
                B[2 * t + 8 * reg + e, g] = b[lane, reg, e]
    D = A @ B
    out = d.copy()
    for lane in range(32):
        g, t = divmod(lane, 4)
        for i in range(4):
            out[lane, i] += D[g + 8 * (i // 2), 2 * t + i % 2]
    return out


def ldmatrix_x4_trans(smem, addresses):
    """addresses[lane] = (row, col) of the 8 consecutive halves lane gives (row lane%8 of matrix
    lane//8); lane receives of each matrix i the elements (row 2t + e, col g): [32, 4, 2]."""
    mats = np.zeros((4, 8, 8))
    for lane in range(32):
        row, col = addresses[lane]
        mats[lane // 8, lane % 8] = smem[row, col:col + 8]
    out = np.zeros((32, 4, 2))
    for lane in range(32):
        g, t = divmod(lane, 4)
        for i in range(4):
            out[lane, i] = mats[i, 2 * t:2 * t + 2, g]
    return out


def test_fp16_warp_fragments_assemble_scores_and_outputs():
    rng = np.random.default_rng(0)
    ld_q, bc, keys = 48, 32, 64  # c = 48: three k16 steps; 32 columns: two ldmatrix.x4 per k16
    Q, K = rng.standard_normal((16, ld_q)), rng.standard_normal((keys, ld_q))
    # Q.K^T: A from Qs rows g, g+8 at d0 + 2t (+8); B from Ks row 8j + g at d0 + 2t (+8).
    s4 = np.zeros((8, 32, 4))
    for d0 in range(0, ld_q, 16):
        a = np.zeros((32, 4, 2))
        for lane in range(32):
            g, t = divmod(lane, 4)
            col = d0 + 2 * t
            a[lane] = [Q[g, col:col + 2], Q[g + 8, col:col + 2], Q[g, col + 8:col + 10], Q[g + 8, col + 8:col + 10]]
        for j in range(8):
            b = np.zeros((32, 2, 2))
            for lane in range(32):
                g, t = divmod(lane, 4)
                b[lane] = [K[8 * j + g, d0 + 2 * t:d0 + 2 * t + 2], K[8 * j + g, d0 + 8 + 2 * t:d0 + 10 + 2 * t]]
            s4[j] = mma_m16n8k16(a, b, s4[j])
    S = np.zeros((16, keys))
    sc = np.zeros((32, 2, 16))  # the kernel's sc[h][i]: row g + 8h, key 8(i/2) + 2t + i%2
    for lane in range(32):
        g, t = divmod(lane, 4)
        for j in range(8):
            sc[lane, 0, 2 * j:2 * j + 2] = s4[j, lane, 0:2]
            sc[lane, 1, 2 * j:2 * j + 2] = s4[j, lane, 2:4]
        for h in range(2):
            for i in range(16):
                S[g + 8 * h, 8 * (i // 2) + 2 * t + i % 2] = sc[lane, h, i]
    np.testing.assert_allclose(S, Q @ K.T, atol=1e-12)

    # P.V: P from the score registers, V through ldmatrix.x4.trans at the kernel's addresses.
    P = rng.random((16, keys))
    V = rng.standard_normal((keys, bc))
    for lane in range(32):
        g, t = divmod(lane, 4)
        for h in range(2):
            for i in range(16):
                sc[lane, h, i] = P[g + 8 * h, 8 * (i // 2) + 2 * t + i % 2]
    o = np.zeros((bc // 8, 32, 4))
    for kk in range(keys // 16):
        a = np.stack([[sc[lane, 0, 4 * kk:4 * kk + 2], sc[lane, 1, 4 * kk:4 * kk + 2],
                       sc[lane, 0, 4 * kk + 2:4 * kk + 4], sc[lane, 1, 4 * kk + 2:4 * kk + 4]] for lane in range(32)])
        for jj in range(bc // 16):
            addresses = [(16 * kk + (lane & 7) + 8 * ((lane >> 3) & 1), 8 * (lane >> 4) + 16 * jj) for lane in range(32)]
            b = ldmatrix_x4_trans(V, addresses)
            o[2 * jj] = mma_m16n8k16(a, b[:, 0:2], o[2 * jj])
            o[2 * jj + 1] = mma_m16n8k16(a, b[:, 2:4], o[2 * jj + 1])
    O = np.zeros((16, bc))
    for lane in range(32):  # epilogue: o[f][2h + e] is row g + 8h, column 8f + 2t + e
        g, t = divmod(lane, 4)
        for f in range(bc // 8):
            for h in range(2):
                O[g + 8 * h, 8 * f + 2 * t:8 * f + 2 * t + 2] = o[f, lane, 2 * h:2 * h + 2]
    np.testing.assert_allclose(O, P @ V, atol=1e-12)


def test_fp32_lane_maps_cover_the_tile_once():
    """fp32: lane (g, t) holds keys t + 4i of rows g, g+8 and output columns
    4t + 16(f/2) + 2(f%2) + e: together the 32 lanes own every (row, key) and (row, column) once."""
    keys, bc = CHUNK_TILING["fp32"]["tile_keys"], MAX_BC
    score_owner = np.zeros((16, keys), int)
    out_owner = np.zeros((16, bc), int)
    for lane in range(32):
        g, t = divmod(lane, 4)
        for h in range(2):
            score_owner[g + 8 * h, lane_keys("fp32", t)] += 1
            for f in range(bc // 8):
                for e in range(2):
                    out_owner[g + 8 * h, 4 * t + 16 * (f // 2) + 2 * (f % 2) + e] += 1
    assert (score_owner == 1).all() and (out_owner == 1).all()
