// BucketAttention: one fused kernel per (batch, round, chunk, query tile, column tile) that
// gathers its rows through `order`, never writes the [cs x 3cs] scores to global memory and
// keeps each row's logsumexp; then one light pass un-sorts through `rank` and combines rounds.
//
//   fp32: SIMT (no TF32, so it matches the reference to >= 100 dB), online softmax over key
//         tiles of the own + previous + next chunk (cyclic), registers hold the output tile.
//   fp16: tensor cores (WMMA, fp16 in, fp32 accumulate). WMMA accumulators have an opaque
//         layout, so instead of rescaling them row by row (online softmax) the kernel makes two
//         passes over the keys: the first computes each row's exact max and sum from Q.K^T alone
//         (c = 64 against C = 256 for P.V, so about +20% flops), the second accumulates
//         exp(S - lse).V, already normalised.
// Keys are the queries L2-normalised (eps) in fp32; the norms are computed once per row first.
//
// Long module: one kernel variant (`gather`) whole: its shared-memory plans, the fp32 and fp16
// attention kernels, the round combine and the launcher that picks the column tile. They change
// together (a plan and the kernel that reads it); what the `chunk` variant shares lives in
// bucketAttentionCommon.cuh.
#include "bucketAttentionKernel.h"

#include <cmath>
#include <type_traits>

#include <cuda_fp16.h>
#include <mma.h>

#include "../common/srdConvert.cuh"
#include "bucketAttentionCommon.cuh"

namespace srd {
namespace {

using bucket_attention::keyPosition;

constexpr int kBM = 48;  // query rows per block: cs = 144 is three tiles, no waste
constexpr int kBN = 64;  // keys per tile
constexpr unsigned kFull = 0xffffffffu;

struct Geometry {
    int L, c, C, cs, R, nc, pad, qTiles, cTiles;
};


// Row of q/v at sorted position p in [0, nc*cs) of a round: positions past L repeat the last
// `pad` sorted rows; order indexes the R*L concatenation, hence mod L (as the reference does,
// with torch's sign rule, so that any int32 in `order` stays a row of this sample).
__device__ __forceinline__ int sourceRow(const int32_t* orderRound, int p, const Geometry& g) {
    return floorMod(orderRound[p < g.L ? p : p - g.pad], g.L);
}

// Where key j in [0, nKeys = 3cs) of `chunk` comes from: its row s of q and v and max(||q_s||, eps).
// Past the last key (a partial tile) s = 0 and dn = 1, and the caller writes zeros.
struct KeyRow {
    int s;
    float dn;
    bool valid;
};

__device__ __forceinline__ KeyRow keyRow(const int32_t* orderRound, const float* denN, int j, int nKeys, int chunk,
                                         const Geometry& g) {
    KeyRow key{0, 1.f, j < nKeys};
    if (key.valid) {
        key.s = sourceRow(orderRound, keyPosition(j, chunk, g.cs, g.nc), g);
        key.dn = denN[key.s];
    }
    return key;
}

struct BlockIndex {
    int ct, qt, chunk, r, n;
};

__device__ __forceinline__ BlockIndex blockIndex(const Geometry& g) {
    BlockIndex b;
    b.ct = blockIdx.x % g.cTiles;
    const int rest = blockIdx.x / g.cTiles;
    b.qt = rest % g.qTiles;
    b.chunk = rest / g.qTiles;
    b.r = blockIdx.y;
    b.n = blockIdx.z;
    return b;
}

// max(||q_row||, eps) in fp32, one warp per row.
template <typename T>
__global__ void keyDenominators(const T* __restrict__ q, float* __restrict__ den, int rows, int c,
                                float eps) {
    const int row = static_cast<int>((blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T* x = q + static_cast<size_t>(row) * c;
    float s = 0.f;
    for (int d = lane; d < c; d += 32) {
        const float e = toF(x[d]);
        s = fmaf(e, e, s);
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(kFull, s, off);
    if (lane == 0) den[row] = fmaxf(sqrtf(s), eps);
}

// ------------------------------------------------------------------------------ fp32, SIMT
// 256 threads as 16 x 16 (ty, tx); a thread owns query rows ty + 16i (i < 3), score columns
// tx + 16j (j < 4) and output columns 4tx + 64g + e (g < CPT/4, e < 4), so each row's softmax
// statistics live in the 16 lanes of one half-warp and the rescale of its outputs is local.
constexpr int kF32Threads = 256;

// Row stride (floats) of Qs/Ks: a multiple of 4 for float4 reads, and stride/4 odd so the
// 8 lanes of each quarter-warp read distinct banks.
__host__ __device__ inline int f32KeyStride(int c) {
    const int c4 = (c + 3) & ~3;
    return c4 + (((c4 / 4) % 2 == 0) ? 4 : 8);
}

__host__ __device__ inline size_t f32SmemBytes(int c, int bc) {
    const int ldk = f32KeyStride(c);
    return sizeof(float) * (static_cast<size_t>(kBM) * ldk + static_cast<size_t>(kBN) * ldk +
                            static_cast<size_t>(kBN) * bc + static_cast<size_t>(kBN) * (kBM + 1));
}

template <int CPT>
__global__ void __launch_bounds__(kF32Threads)
attentionF32(const float* __restrict__ q, const float* __restrict__ v,
             const int32_t* __restrict__ order, const float* __restrict__ den,
             float* __restrict__ outWs, float* __restrict__ lseWs, Geometry g) {
    constexpr int RPT = kBM / 16;
    constexpr int BC = 16 * CPT;
    constexpr int NG = CPT / 4;
    static_assert(CPT % 4 == 0, "output columns come in float4 groups");
    extern __shared__ __align__(128) unsigned char smemRaw[];
    const int ldk = f32KeyStride(g.c);
    const int ck = (g.c + 3) & ~3;  // c rounded up to 4; the extra columns are zero
    float* Qs = reinterpret_cast<float*>(smemRaw);  // [kBM][ldk]
    float* Ks = Qs + kBM * ldk;                     // [kBN][ldk], normalised keys
    float* Vs = Ks + kBN * ldk;                     // [kBN][BC]
    float* Ps = Vs + kBN * BC;                      // [kBN][kBM + 1], probabilities transposed

    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4, warp = tid >> 5, lane = tid & 31;
    const BlockIndex b = blockIndex(g);
    const int32_t* orderRound = order + (static_cast<size_t>(b.n) * g.R + b.r) * g.L;
    const float* qn = q + static_cast<size_t>(b.n) * g.L * g.c;
    const float* vn = v + static_cast<size_t>(b.n) * g.L * g.C;
    const float* denN = den + static_cast<size_t>(b.n) * g.L;
    const int col0 = b.ct * BC;
    const int nKeys = 3 * g.cs;

    // Queries (not normalised); rows past the chunk and columns past c are zero.
    for (int i = warp; i < kBM; i += kF32Threads / 32) {
        const int qi = b.qt * kBM + i;
        const bool valid = qi < g.cs;
        const int s = valid ? sourceRow(orderRound, b.chunk * g.cs + qi, g) : 0;
        for (int d = lane; d < ck; d += 32)
            Qs[i * ldk + d] = (valid && d < g.c) ? qn[static_cast<size_t>(s) * g.c + d] : 0.f;
    }

    float rowMax[RPT], rowSum[RPT], o[RPT][CPT];
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        rowMax[i] = -INFINITY;
        rowSum[i] = 0.f;
#pragma unroll
        for (int j = 0; j < CPT; ++j) o[i][j] = 0.f;
    }

    const int nTiles = ceilDiv(nKeys, kBN);
    for (int t = 0; t < nTiles; ++t) {
        __syncthreads();  // previous tile consumed (and Qs written)
        for (int jj = warp; jj < kBN; jj += kF32Threads / 32) {
            const KeyRow key = keyRow(orderRound, denN, t * kBN + jj, nKeys, b.chunk, g);
            for (int d = lane; d < ck; d += 32)
                Ks[jj * ldk + d] = (key.valid && d < g.c) ? qn[static_cast<size_t>(key.s) * g.c + d] / key.dn : 0.f;
            for (int cc = lane; cc < BC; cc += 32) {
                const int col = col0 + cc;
                Vs[jj * BC + cc] = (key.valid && col < g.C) ? vn[static_cast<size_t>(key.s) * g.C + col] : 0.f;
            }
        }
        __syncthreads();

        float sc[RPT][4];
#pragma unroll
        for (int i = 0; i < RPT; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) sc[i][j] = 0.f;
        for (int d = 0; d < ck; d += 4) {
            float4 a[RPT], k[4];
#pragma unroll
            for (int i = 0; i < RPT; ++i) a[i] = *reinterpret_cast<const float4*>(&Qs[(ty + 16 * i) * ldk + d]);
#pragma unroll
            for (int j = 0; j < 4; ++j) k[j] = *reinterpret_cast<const float4*>(&Ks[(tx + 16 * j) * ldk + d]);
#pragma unroll
            for (int i = 0; i < RPT; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    sc[i][j] = fmaf(a[i].x, k[j].x, sc[i][j]);
                    sc[i][j] = fmaf(a[i].y, k[j].y, sc[i][j]);
                    sc[i][j] = fmaf(a[i].z, k[j].z, sc[i][j]);
                    sc[i][j] = fmaf(a[i].w, k[j].w, sc[i][j]);
                }
        }
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (t * kBN + tx + 16 * j >= nKeys)
#pragma unroll
                for (int i = 0; i < RPT; ++i) sc[i][j] = -INFINITY;

        // Online softmax. Every tile holds at least one valid key, so the tile max is finite.
#pragma unroll
        for (int i = 0; i < RPT; ++i) {
            float mt = fmaxf(fmaxf(sc[i][0], sc[i][1]), fmaxf(sc[i][2], sc[i][3]));
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(kFull, mt, off));
            const float mNew = fmaxf(rowMax[i], mt);
            const float alpha = expf(rowMax[i] - mNew);  // 0 on the first tile
            float rs = 0.f;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const float p = expf(sc[i][j] - mNew);
                Ps[(tx + 16 * j) * (kBM + 1) + ty + 16 * i] = p;
                rs += p;
            }
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) rs += __shfl_xor_sync(kFull, rs, off);
            rowSum[i] = rowSum[i] * alpha + rs;
            rowMax[i] = mNew;
#pragma unroll
            for (int j = 0; j < CPT; ++j) o[i][j] *= alpha;
        }
        __syncthreads();

        for (int k = 0; k < kBN; ++k) {
            float p[RPT];
#pragma unroll
            for (int i = 0; i < RPT; ++i) p[i] = Ps[k * (kBM + 1) + ty + 16 * i];
#pragma unroll
            for (int gi = 0; gi < NG; ++gi) {
                const float4 vv = *reinterpret_cast<const float4*>(&Vs[k * BC + 4 * tx + 64 * gi]);
#pragma unroll
                for (int i = 0; i < RPT; ++i) {
                    o[i][4 * gi + 0] = fmaf(p[i], vv.x, o[i][4 * gi + 0]);
                    o[i][4 * gi + 1] = fmaf(p[i], vv.y, o[i][4 * gi + 1]);
                    o[i][4 * gi + 2] = fmaf(p[i], vv.z, o[i][4 * gi + 2]);
                    o[i][4 * gi + 3] = fmaf(p[i], vv.w, o[i][4 * gi + 3]);
                }
            }
        }
    }

    // Per-round results in sorted order; padded rows (p >= L) are dropped as in the reference.
    // A thread's 4 consecutive columns go out as one float4 when C % 4 == 0 (col0 and 4tx are
    // multiples of 4 and the workspace is 256-byte aligned), one reciprocal per row.
    const bool vectorStore = g.C % 4 == 0;
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const int qi = b.qt * kBM + ty + 16 * i;
        const int p = b.chunk * g.cs + qi;
        if (qi >= g.cs || p >= g.L) continue;
        const size_t m = (static_cast<size_t>(b.n) * g.R + b.r) * g.L + p;
        const float inv = 1.f / rowSum[i];
#pragma unroll
        for (int gi = 0; gi < NG; ++gi) {
            const int col = col0 + 4 * tx + 64 * gi;
            if (col >= g.C) continue;
            const float4 r = make_float4(o[i][4 * gi] * inv, o[i][4 * gi + 1] * inv, o[i][4 * gi + 2] * inv,
                                         o[i][4 * gi + 3] * inv);
            float* dst = outWs + m * g.C + col;
            if (vectorStore) {
                *reinterpret_cast<float4*>(dst) = r;
            } else {
                dst[0] = r.x;
                if (col + 1 < g.C) dst[1] = r.y;
                if (col + 2 < g.C) dst[2] = r.z;
                if (col + 3 < g.C) dst[3] = r.w;
            }
        }
        if (b.ct == 0 && tx == 0) lseWs[m] = rowMax[i] + logf(rowSum[i]);
    }
}

// ------------------------------------------------------------------------- fp16, tensor cores
// 6 warps: for Q.K^T (48 x 64 per tile) warp w computes row fragment w % 3 and column
// fragments 2(w/3), 2(w/3)+1; for P.V it owns row fragment w % 3 and NF column fragments in
// half w/3 of the BC columns. Softmax passes use 4 threads per row, 16 keys each.
constexpr int kF16Threads = 192;
constexpr int kF16Warps = kF16Threads / 32;

struct F16Smem {
    int ldq, ldv, lds, ldp, ldo;
    size_t qh, lse, kh, vh, sf, ph, of, total;
};

__host__ __device__ inline size_t align128(size_t x) { return (x + 127) / 128 * 128; }

__host__ __device__ inline F16Smem f16Smem(int c, int bc) {
    F16Smem s{};
    const int c16 = (c + 15) & ~15;
    s.ldq = c16 + 8;  // +8 halves: fragment loads hit distinct banks; ldm stays a multiple of 8
    s.ldv = bc + 8;
    s.lds = kBN + 4;
    s.ldp = kBN + 8;
    s.ldo = bc + 4;
    s.qh = 0;
    s.lse = align128(s.qh + sizeof(__half) * kBM * s.ldq);
    s.kh = align128(s.lse + sizeof(float) * kBM);
    s.vh = align128(s.kh + sizeof(__half) * kBN * s.ldq);
    s.sf = align128(s.vh + sizeof(__half) * kBN * s.ldv);
    s.ph = align128(s.sf + sizeof(float) * kBM * s.lds);
    const size_t end = s.ph + sizeof(__half) * kBM * s.ldp;
    s.of = s.kh;  // the output staging reuses K/V/S/P once the key loop is over
    const size_t endOut = s.of + sizeof(float) * kBM * s.ldo;
    s.total = align128(end > endOut ? end : endOut);
    return s;
}

template <int NF>
__global__ void __launch_bounds__(kF16Threads)
attentionF16(const __half* __restrict__ q, const __half* __restrict__ v,
             const int32_t* __restrict__ order, const float* __restrict__ den,
             float* __restrict__ outWs, float* __restrict__ lseWs, Geometry g) {
    using namespace nvcuda;
    constexpr int BC = 32 * NF;
    extern __shared__ __align__(128) unsigned char smemRaw[];
    const F16Smem sm = f16Smem(g.c, BC);
    __half* Qh = reinterpret_cast<__half*>(smemRaw + sm.qh);  // [kBM][ldq]
    float* rowLse = reinterpret_cast<float*>(smemRaw + sm.lse);
    __half* Kh = reinterpret_cast<__half*>(smemRaw + sm.kh);  // [kBN][ldq]
    __half* Vh = reinterpret_cast<__half*>(smemRaw + sm.vh);  // [kBN][ldv]
    float* Sf = reinterpret_cast<float*>(smemRaw + sm.sf);    // [kBM][lds]
    __half* Ph = reinterpret_cast<__half*>(smemRaw + sm.ph);  // [kBM][ldp]
    float* Of = reinterpret_cast<float*>(smemRaw + sm.of);    // [kBM][ldo]
    const int c16 = (g.c + 15) & ~15;
    const __half zero = __float2half_rn(0.f);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const BlockIndex b = blockIndex(g);
    const int32_t* orderRound = order + (static_cast<size_t>(b.n) * g.R + b.r) * g.L;
    const __half* qn = q + static_cast<size_t>(b.n) * g.L * g.c;
    const __half* vn = v + static_cast<size_t>(b.n) * g.L * g.C;
    const float* denN = den + static_cast<size_t>(b.n) * g.L;
    const int col0 = b.ct * BC;
    const int nKeys = 3 * g.cs;
    const int nTiles = ceilDiv(nKeys, kBN);
    const int rw = warp % 3, wh = warp / 3;     // row fragment, column half
    const int srow = tid >> 2, spart = tid & 3;  // softmax mapping

    for (int i = warp; i < kBM; i += kF16Warps) {
        const int qi = b.qt * kBM + i;
        const bool valid = qi < g.cs;
        const int s = valid ? sourceRow(orderRound, b.chunk * g.cs + qi, g) : 0;
        for (int d = lane; d < c16; d += 32)
            Qh[i * sm.ldq + d] = (valid && d < g.c) ? qn[static_cast<size_t>(s) * g.c + d] : zero;
    }

    auto loadTile = [&](int t, bool values) {
        for (int jj = warp; jj < kBN; jj += kF16Warps) {
            const KeyRow key = keyRow(orderRound, denN, t * kBN + jj, nKeys, b.chunk, g);
            for (int d = lane; d < c16; d += 32)
                Kh[jj * sm.ldq + d] = (key.valid && d < g.c)
                    ? __float2half_rn(__half2float(qn[static_cast<size_t>(key.s) * g.c + d]) / key.dn) : zero;
            if (values)
                for (int cc = lane; cc < BC; cc += 32) {
                    const int col = col0 + cc;
                    Vh[jj * sm.ldv + cc] =
                        (key.valid && col < g.C) ? vn[static_cast<size_t>(key.s) * g.C + col] : zero;
                }
        }
    };

    auto scoreTile = [&]() {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> s0, s1;
        wmma::fill_fragment(s0, 0.f);
        wmma::fill_fragment(s1, 0.f);
        for (int d0 = 0; d0 < c16; d0 += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> k0, k1;
            wmma::load_matrix_sync(a, Qh + rw * 16 * sm.ldq + d0, sm.ldq);
            // B(d, key) = K[key][d]: column-major with leading dimension ldq.
            wmma::load_matrix_sync(k0, Kh + (2 * wh) * 16 * sm.ldq + d0, sm.ldq);
            wmma::load_matrix_sync(k1, Kh + (2 * wh + 1) * 16 * sm.ldq + d0, sm.ldq);
            wmma::mma_sync(s0, a, k0, s0);
            wmma::mma_sync(s1, a, k1, s1);
        }
        wmma::store_matrix_sync(Sf + rw * 16 * sm.lds + (2 * wh) * 16, s0, sm.lds, wmma::mem_row_major);
        wmma::store_matrix_sync(Sf + rw * 16 * sm.lds + (2 * wh + 1) * 16, s1, sm.lds, wmma::mem_row_major);
    };

    // Pass 1: exact row max and sum of exp over all 3cs keys.
    float mRun = -INFINITY, lRun = 0.f;
    for (int t = 0; t < nTiles; ++t) {
        __syncthreads();
        loadTile(t, false);
        __syncthreads();
        scoreTile();
        __syncthreads();
        float sv[16];
        float mt = -INFINITY;
#pragma unroll
        for (int e = 0; e < 16; ++e) {
            const int key = spart * 16 + e;
            sv[e] = (t * kBN + key < nKeys) ? Sf[srow * sm.lds + key] : -INFINITY;
            mt = fmaxf(mt, sv[e]);
        }
        mt = fmaxf(mt, __shfl_xor_sync(kFull, mt, 1));
        mt = fmaxf(mt, __shfl_xor_sync(kFull, mt, 2));
        const float mNew = fmaxf(mRun, mt);  // finite: every tile has a valid key
        float sum = 0.f;
#pragma unroll
        for (int e = 0; e < 16; ++e) sum += expf(sv[e] - mNew);
        sum += __shfl_xor_sync(kFull, sum, 1);
        sum += __shfl_xor_sync(kFull, sum, 2);
        lRun = lRun * expf(mRun - mNew) + sum;
        mRun = mNew;
    }
    if (spart == 0) rowLse[srow] = mRun + logf(lRun);  // read after the next barrier

    // Pass 2: O = sum over tiles of exp(S - lse) . V, normalised by construction.
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[NF];
#pragma unroll
    for (int f = 0; f < NF; ++f) wmma::fill_fragment(acc[f], 0.f);
    for (int t = 0; t < nTiles; ++t) {
        __syncthreads();
        loadTile(t, true);
        __syncthreads();
        scoreTile();
        __syncthreads();
        const float lse = rowLse[srow];
#pragma unroll
        for (int e = 0; e < 16; ++e) {
            const int key = spart * 16 + e;
            const float p = (t * kBN + key < nKeys) ? expf(Sf[srow * sm.lds + key] - lse) : 0.f;
            Ph[srow * sm.ldp + key] = __float2half_rn(p);
        }
        __syncthreads();
#pragma unroll
        for (int k0 = 0; k0 < kBN; k0 += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
            wmma::load_matrix_sync(a, Ph + rw * 16 * sm.ldp + k0, sm.ldp);
#pragma unroll
            for (int f = 0; f < NF; ++f) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> bv;
                wmma::load_matrix_sync(bv, Vh + k0 * sm.ldv + (wh * NF + f) * 16, sm.ldv);
                wmma::mma_sync(acc[f], a, bv, acc[f]);
            }
        }
    }
    __syncthreads();  // Of aliases K/V/S/P
#pragma unroll
    for (int f = 0; f < NF; ++f)
        wmma::store_matrix_sync(Of + rw * 16 * sm.ldo + (wh * NF + f) * 16, acc[f], sm.ldo, wmma::mem_row_major);
    __syncthreads();
    for (int i = warp; i < kBM; i += kF16Warps) {
        const int qi = b.qt * kBM + i;
        const int p = b.chunk * g.cs + qi;
        if (qi >= g.cs || p >= g.L) continue;
        const size_t m = (static_cast<size_t>(b.n) * g.R + b.r) * g.L + p;
        for (int cc = lane; cc < BC; cc += 32) {
            const int col = col0 + cc;
            if (col < g.C) outWs[m * g.C + col] = Of[i * sm.ldo + cc];
        }
        if (b.ct == 0 && lane == 0) lseWs[m] = rowLse[i];
    }
}

// ------------------------------------------------------------------------------ round combine
// One warp per output row (n, l): un-sort each round's result through rank, weight the rounds
// by the softmax of their logsumexps (computed in fp32, then multiplied as the reference does).
constexpr int kCombineThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kCombineThreads)
combineRounds(const float* __restrict__ outWs, const float* __restrict__ lseWs,
              const int32_t* __restrict__ rank, T* __restrict__ out, int L, int C, int R, int rows) {
    extern __shared__ __align__(128) unsigned char smemRaw[];
    const int lane = threadIdx.x & 31;
    bucket_attention::CombineRow c;
    if (!bucket_attention::combineRowWeights<kCombineThreads / 32>(smemRaw, rank, lseWs, L, R, rows, c)) return;
    for (int col = lane; col < C; col += 32) {
        float acc = 0.f;
        for (int k = 0; k < R; ++k) acc = fmaf(c.w[k], outWs[(c.nBase + c.src[k]) * C + col], acc);
        out[static_cast<size_t>(c.row) * C + col] = fromF<T>(acc);
    }
}

struct Workspace {
    float* den;
    float* outWs;
    float* lseWs;
};

Workspace carveWorkspace(void* base, const BucketAttentionShape& s) {
    const size_t nl = static_cast<size_t>(s.n) * s.length;
    const size_t nrl = nl * s.nHashes;
    size_t off = 0;
    Workspace w{};
    w.den = carve<float>(base, off, nl);
    w.outWs = carve<float>(base, off, nrl * s.channels);
    w.lseWs = carve<float>(base, off, nrl);
    return w;
}

}  // namespace

size_t bucketAttentionWorkspaceSize(const BucketAttentionShape& s) {
    const size_t nl = static_cast<size_t>(s.n) * s.length;
    const size_t nrl = nl * s.nHashes;
    return alignUp(nl * sizeof(float)) + alignUp(nrl * s.channels * sizeof(float)) +
           alignUp(nrl * sizeof(float));
}

LaunchStatus launchBucketAttention(const void* q, const void* v, const int32_t* order,
                                   const int32_t* rank, void* out, const BucketAttentionShape& s,
                                   float eps, DType dtype, void* workspace, size_t workspaceBytes,
                                   cudaStream_t stream) {
    if (workspaceBytes < bucketAttentionWorkspaceSize(s)) return cudaErrorInvalidValue;
    Geometry g{};
    bucket_attention::setRoundLayout(g, s);
    g.qTiles = ceilDiv(g.cs, kBM);
    const Workspace w = carveWorkspace(workspace, s);
    size_t maxSmem = 0;
    cudaError_t err = bucket_attention::maxSharedBytesPerBlock(&maxSmem);
    if (err != cudaSuccess) return err;
    const bool half = dtype == DType::kFloat16;
    const int rows = s.n * s.length;

    // Widest column tile (fewest score recomputations) that covers C and fits shared memory.
    int bc = 0;
    size_t smem = 0;
    for (int cand : {64, 128, 256}) {
        const size_t need = half ? f16Smem(g.c, cand).total : f32SmemBytes(g.c, cand);
        if (need > maxSmem) break;
        bc = cand;
        smem = need;
        if (cand >= g.C) break;
    }
    if (bc == 0)
        return LaunchStatus::noVariantFits(
            "BucketAttention with c = %d needs %zu bytes of shared memory per block, this GPU allows %zu",
            g.c, half ? f16Smem(g.c, 64).total : f32SmemBytes(g.c, 64), maxSmem);
    g.cTiles = ceilDiv(g.C, bc);
    const dim3 grid(static_cast<unsigned>(g.nc * g.qTiles * g.cTiles), static_cast<unsigned>(g.R),
                    static_cast<unsigned>(s.n));
    const int denBlocks = ceilDiv(rows, 256 / 32);

    // One launch path for both precisions: key norms, then the variant's shared-memory opt-in and launch.
    auto run = [&](auto kernel, int threads, const auto* qT, const auto* vT) -> cudaError_t {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(qT)>>;
        keyDenominators<T><<<denBlocks, 256, 0, stream>>>(qT, w.den, rows, g.c, eps);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
        e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (e != cudaSuccess) return e;
        kernel<<<grid, threads, smem, stream>>>(qT, vT, order, w.den, w.outWs, w.lseWs, g);
        return cudaGetLastError();
    };
    if (half) {
        const auto* qh = static_cast<const __half*>(q);
        const auto* vh = static_cast<const __half*>(v);
        err = bc == 64    ? run(attentionF16<2>, kF16Threads, qh, vh)
              : bc == 128 ? run(attentionF16<4>, kF16Threads, qh, vh)
                          : run(attentionF16<8>, kF16Threads, qh, vh);
    } else {
        const auto* qf = static_cast<const float*>(q);
        const auto* vf = static_cast<const float*>(v);
        err = bc == 64    ? run(attentionF32<4>, kF32Threads, qf, vf)
              : bc == 128 ? run(attentionF32<8>, kF32Threads, qf, vf)
                          : run(attentionF32<16>, kF32Threads, qf, vf);
    }
    if (err != cudaSuccess) return err;

    // At most 16 KB (the C ABI caps R at 256), under the 48 KB available without opt-in.
    const size_t combineSmem = sizeof(float) * 2 * (kCombineThreads / 32) * static_cast<size_t>(g.R);
    const int combineBlocks = ceilDiv(rows, kCombineThreads / 32);
    if (half)
        combineRounds<__half><<<combineBlocks, kCombineThreads, combineSmem, stream>>>(
            w.outWs, w.lseWs, rank, static_cast<__half*>(out), g.L, g.C, g.R, rows);
    else
        combineRounds<float><<<combineBlocks, kCombineThreads, combineSmem, stream>>>(
            w.outWs, w.lseWs, rank, static_cast<float*>(out), g.L, g.C, g.R, rows);
    return cudaGetLastError();
}

}  // namespace srd
