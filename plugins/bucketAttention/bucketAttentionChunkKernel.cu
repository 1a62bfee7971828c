// BucketAttention, variant `chunk` (SRDEPLOY_BUCKET_ATTENTION=chunk). Three launches:
//
// 1. gatherSorted: one warp per sorted row (n, round, p < nc*cs) writes the row's query, its
//    L2-normalised key (the same fp32 norm and division as the gather variant, so the keys are
//    bitwise equal) and its value into workspace buffers in sorted order, padding included
//    (p >= L repeats sorted row p - pad). Rows are zero-padded to 16 bytes (fp16 queries/keys to
//    16 elements, the mma k-step), so everything after this reads contiguous 16-byte chunks.
// 2. attentionChunk: one block per (n, round, chunk, pass, column tile). Warp w owns 16 query
//    rows; a pass is `warps` x 16 rows of the chunk (cs = 144: 2 passes of 5 warps), a column
//    tile up to 128 columns of C. (Each pass and column tile streams the chunk's keys anyway, so
//    one block per unit costs no extra traffic and gives 4x the blocks of one block per chunk at
//    cs = 144, C = 256: small inputs still fill the GPU.) The 3*cs keys (own, previous, next
//    chunk, cyclic) stream through shared memory in tiles (64 keys fp16, 32 fp32) with
//    cp.async double buffering and 16-byte copies; softmax is online, in registers:
//      fp16: mma.sync m16n8k16 (fp16 in, fp32 accumulate); the S accumulators become the P
//            A-fragments in registers (no shared-memory round trip), V B-fragments come from
//            ldmatrix.trans; one pass over the keys.
//      fp32: SIMT FFMA (no TF32); a thread owns the same two rows (g, g+8) as in the mma layout,
//            keys tig + 4j; P goes through a per-warp shared-memory tile.
//    Per-round outputs are written in the storage type (fp16 for fp16), logsumexps in fp32.
// 3. combineChunkRounds: one warp per output row, rounds gathered through rank (clamped) and
//    weighted by the softmax of their logsumexps; 16-byte loads.
// tests/test_kernel_emulation.py emulates this tiling in float64 against the reference.
//
// Long module: one kernel variant (`chunk`) whole: its three launches, the mma/cp.async helpers they
// use and the launcher that picks the tiling. They change together; what the `gather` variant shares
// lives in bucketAttentionCommon.cuh.
#include "bucketAttentionChunkKernel.h"

#include <cmath>
#include <cstring>
#include <type_traits>

#include <cuda_fp16.h>

#include "../common/srdConvert.cuh"
#include "bucketAttentionCommon.cuh"

namespace srd {
namespace {

using bucket_attention::keyPosition;

constexpr int kMaxWarps = 8;    // warps per block (16 query rows each)
constexpr int kFragRows = 16;   // query rows per warp
constexpr unsigned kFull = bucket_attention::kFullMask;

struct ChunkGeometry {
    int L, c, C, cs, R, nc, pad, Lp;  // Lp = nc*cs sorted rows per round, padding included
    int ldQ;     // row stride (elements) of sorted queries/keys: c rounded up to kDimStep
    int ldV;     // row stride of sorted values and per-round outputs: C rounded up to 16 bytes
    int warps;   // warps per block
    int passes;  // query-row passes per chunk: passes * warps * 16 >= cs
    int cTiles;  // column tiles of C
};

template <typename T>
struct Traits;
template <>
struct Traits<float> {
    static constexpr int kDimStep = 4;    // float4 steps over c
    static constexpr int kTileKeys = 32;  // keys per K/V tile: two blocks per SM at c = 64, BC = 128
    static constexpr int kLdP = kTileKeys + 4;  // P tile row stride: rows g, g+8 hit distinct banks
};
template <>
struct Traits<__half> {
    static constexpr int kDimStep = 16;   // mma k
    static constexpr int kTileKeys = 64;  // 8 n8 fragments of Q.K^T, 4 k16 steps of P.V
};

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte chunk

inline int roundUp(int x, int m) { return (x + m - 1) / m * m; }

// ------------------------------------------------------------------------------ cp.async, mma
__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, bool valid) {
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int srcBytes = valid ? 16 : 0;  // 0: nothing is read, the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(srcBytes)
                 : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void cpAsyncWait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

// D += A.B, m16n8k16, fp16 in, fp32 accumulate. Fragments (PTX ISA, lane = 4*g + t):
//   A a0:(g, 2t..2t+1) a1:(g+8, 2t..) a2:(g, 8+2t..) a3:(g+8, 8+2t..)   [row, k]
//   B b0:(2t..2t+1, g) b1:(8+2t.., g)                                   [k, col]
//   D d0,d1:(g, 2t..2t+1) d2,d3:(g+8, 2t..2t+1)                         [row, col]
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four transposed 8x8 fp16 matrices; lane l gives the address of row l % 8 of matrix l / 8 and
// receives, of each matrix, the elements (rows 2t, 2t+1; column g): a B fragment half.
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], const __half* smem) {
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ uint32_t packHalf2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);  // .x (low 16 bits) = lo
    uint32_t u;
    memcpy(&u, &h, sizeof(u));
    return u;
}

__device__ __forceinline__ uint32_t lds32(const __half* p) { return *reinterpret_cast<const uint32_t*>(p); }

// ------------------------------------------------------------------------------ 1. pre-gather
constexpr int kGatherThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kGatherThreads)
gatherSorted(const T* __restrict__ q, const T* __restrict__ v, const int32_t* __restrict__ order,
             T* __restrict__ qs, T* __restrict__ ks, T* __restrict__ vs, float eps, ChunkGeometry g,
             int rows) {
    const int row = static_cast<int>((blockIdx.x * static_cast<size_t>(kGatherThreads) + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave
    const int p = row % g.Lp;
    const int nr = row / g.Lp;  // n * R + round
    const int n = nr / g.R;
    const int s = floorMod(order[static_cast<size_t>(nr) * g.L + (p < g.L ? p : p - g.pad)], g.L);
    const T* qRow = q + (static_cast<size_t>(n) * g.L + s) * g.c;
    const T* vRow = v + (static_cast<size_t>(n) * g.L + s) * g.C;
    float ss = 0.f;  // as the gather variant's keyDenominators: same order, same rounding
    for (int d = lane; d < g.c; d += 32) {
        const float e = toF(qRow[d]);
        ss = fmaf(e, e, ss);
    }
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(kFull, ss, off);
    const float den = fmaxf(sqrtf(ss), eps);
    T* qOut = qs + static_cast<size_t>(row) * g.ldQ;
    T* kOut = ks + static_cast<size_t>(row) * g.ldQ;
    for (int d = lane; d < g.ldQ; d += 32) {
        const bool in = d < g.c;
        const T x = in ? qRow[d] : fromF<T>(0.f);
        qOut[d] = x;
        kOut[d] = in ? fromF<T>(toF(x) / den) : fromF<T>(0.f);
    }
    T* vOut = vs + static_cast<size_t>(row) * g.ldV;
    for (int col = lane; col < g.ldV; col += 32) vOut[col] = col < g.C ? vRow[col] : fromF<T>(0.f);
}

// ------------------------------------------------------------------------------ 2. attention
struct ChunkSmem {
    int ldq, ldv;  // shared row strides (elements)
    size_t q, k, v, p, total;  // byte offsets
};

__host__ __device__ inline size_t align128(size_t x) { return (x + 127) / 128 * 128; }

// fp16: +8 halves, so 8 rows x 4 words of a fragment load (and ldmatrix's 8 rows of 16 bytes)
// hit distinct banks. fp32: stride/4 odd, so float4 reads of 8 consecutive rows do.
template <typename T>
__host__ __device__ inline ChunkSmem chunkSmem(int ldQ, int bc, int warps) {
    ChunkSmem s{};
    const int rows = warps * kFragRows;
    if (std::is_same<T, __half>::value) {
        s.ldq = ldQ + 8;
        s.ldv = bc + 8;
    } else {
        s.ldq = ldQ + (((ldQ / 4) % 2 == 0) ? 4 : 8);
        s.ldv = bc;
    }
    s.q = 0;
    constexpr int keys = Traits<T>::kTileKeys;
    s.k = align128(s.q + sizeof(T) * static_cast<size_t>(rows) * s.ldq);
    s.v = align128(s.k + sizeof(T) * 2 * static_cast<size_t>(keys) * s.ldq);
    s.p = align128(s.v + sizeof(T) * 2 * static_cast<size_t>(keys) * s.ldv);
    const size_t pBytes = std::is_same<T, float>::value ? sizeof(float) * warps * kFragRows * (keys + 4) : 0;
    s.total = align128(s.p + pBytes);
    return s;
}

// Online-softmax update of one row half (h = 0: row g, h = 1: row g + 8) from the thread's
// K scores; the 4 lanes of a quad share the row. Returns the rescale of the old accumulators.
template <int K>
__device__ __forceinline__ float softmaxUpdate(float (&sc)[K], float& rowMax, float& rowSum) {
    float mt = sc[0];
#pragma unroll
    for (int i = 1; i < K; ++i) mt = fmaxf(mt, sc[i]);
    mt = fmaxf(mt, __shfl_xor_sync(kFull, mt, 1));
    mt = fmaxf(mt, __shfl_xor_sync(kFull, mt, 2));
    const float mNew = fmaxf(rowMax, mt);        // finite: every tile holds a valid key
    const float alpha = expf(rowMax - mNew);     // 0 on the first tile (rowMax = -inf)
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < K; ++i) {
        sc[i] = expf(sc[i] - mNew);
        sum += sc[i];
    }
    rowSum = rowSum * alpha + sum;  // this lane's partial sum; the quad adds them at the end
    rowMax = mNew;
    return alpha;
}

template <typename T, int BC>
__global__ void __launch_bounds__(kMaxWarps * 32)
attentionChunk(const T* __restrict__ sq, const T* __restrict__ sk, const T* __restrict__ sv,
               T* __restrict__ outWs, float* __restrict__ lseWs, ChunkGeometry g) {
    constexpr bool kHalf = std::is_same<T, __half>::value;
    constexpr int kV = kVec<T>;
    constexpr int kTileKeys = Traits<T>::kTileKeys;
    constexpr int kKeysPerLane = kTileKeys / 4;  // per row half: the quad splits the tile's keys
    extern __shared__ __align__(128) unsigned char smemRaw[];
    const ChunkSmem sm = chunkSmem<T>(g.ldQ, BC, g.warps);
    T* Qs = reinterpret_cast<T*>(smemRaw + sm.q);  // [warps*16][ldq]
    T* Ks = reinterpret_cast<T*>(smemRaw + sm.k);  // [2][kTileKeys][ldq]
    T* Vs = reinterpret_cast<T*>(smemRaw + sm.v);  // [2][kTileKeys][ldv]

    const int tid = threadIdx.x, nThreads = blockDim.x;
    const int warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tig = lane & 3;
    // blockIdx.x = (chunk * passes + pass) * cTiles + ct: the blocks of a chunk are neighbours,
    // so the key tiles they all stream are read from L2 after the first.
    const int ct = blockIdx.x % g.cTiles;
    const int pass = (blockIdx.x / g.cTiles) % g.passes;
    const int chunk = blockIdx.x / (g.cTiles * g.passes);
    const int r = blockIdx.y, n = blockIdx.z;
    const size_t round0 = (static_cast<size_t>(n) * g.R + r) * g.Lp;  // first sorted row of the round
    const int nKeys = 3 * g.cs;
    const int nTiles = ceilDiv(nKeys, kTileKeys);
    const int rowsPerPass = g.warps * kFragRows;
    const int qChunks = g.ldQ / kV;  // 16-byte chunks per query/key row
    constexpr int vChunks = BC / kV;  // a power of two: / and % are shifts
    // (row, chunk) of this thread's first query/key copy and the step per nThreads copies, so
    // the copy loops divide by the run-time qChunks once, here.
    const int qRow0 = tid / qChunks, qCh0 = tid - qRow0 * qChunks;
    const int qRowStep = nThreads / qChunks, qChStep = nThreads - qRowStep * qChunks;
    auto nextCopy = [&](int& row, int& ch) {
        row += qRowStep;
        ch += qChStep;
        if (ch >= qChunks) {
            ch -= qChunks;
            ++row;
        }
    };

    // Key tile t -> buffer: rows past 3cs and columns past the row are zero-filled.
    auto loadKV = [&](int t, int buf, int col0) {
        T* kDst = Ks + static_cast<size_t>(buf) * kTileKeys * sm.ldq;
        T* vDst = Vs + static_cast<size_t>(buf) * kTileKeys * sm.ldv;
        for (int row = qRow0, ch = qCh0; row < kTileKeys; nextCopy(row, ch)) {
            const int j = t * kTileKeys + row;
            const bool valid = j < nKeys;
            const T* src = valid ? sk + (round0 + keyPosition(j, chunk, g.cs, g.nc)) * g.ldQ + ch * kV : sk;
            cpAsync16(kDst + row * sm.ldq + ch * kV, src, valid);
        }
        for (int i = tid; i < kTileKeys * vChunks; i += nThreads) {
            const int row = i / vChunks, ch = i - row * vChunks;
            const int j = t * kTileKeys + row;
            const int col = col0 + ch * kV;
            const bool valid = j < nKeys && col < g.ldV;
            const T* src = valid ? sv + (round0 + keyPosition(j, chunk, g.cs, g.nc)) * g.ldV + col : sv;
            cpAsync16(vDst + row * sm.ldv + ch * kV, src, valid);
        }
    };

    const int col0 = ct * BC;
    const int rowBase = pass * rowsPerPass;  // first query row (in the chunk) of the pass
    // The queries and key tile 0 form the first cp.async group.
    for (int row = qRow0, ch = qCh0; row < rowsPerPass; nextCopy(row, ch)) {
        const int qi = rowBase + row;
        const bool valid = qi < g.cs;
        const T* src = valid ? sq + (round0 + static_cast<size_t>(chunk) * g.cs + qi) * g.ldQ + ch * kV : sq;
        cpAsync16(Qs + row * sm.ldq + ch * kV, src, valid);
    }
    loadKV(0, 0, col0);
    cpAsyncCommit();

    float rowMax[2] = {-INFINITY, -INFINITY}, rowSum[2] = {0.f, 0.f};
    // Accumulators in the mma D layout, o[f][0..1] row g, o[f][2..3] row g + 8:
    //   fp16: n8 tile f, columns 8f + 2t + 0..1;
    //   fp32: columns 4t + 16(f/2) + 2(f%2) + 0..1 (a float4 of V per f pair).
    constexpr int kAcc = BC / 8;
    float o[kAcc][4];
#pragma unroll
    for (int f = 0; f < kAcc; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.f;

    const int qRow = warp * kFragRows;  // the warp's first row in Qs
    for (int t = 0; t < nTiles; ++t) {
        const int buf = t & 1;
        if (t + 1 < nTiles) {
            loadKV(t + 1, buf ^ 1, col0);  // buffer buf^1 was released by the last barrier
            cpAsyncCommit();
            cpAsyncWait<1>();
        } else {
            cpAsyncWait<0>();
        }
        __syncthreads();  // tile t (and the queries) visible to every warp
        const T* Kt = Ks + static_cast<size_t>(buf) * kTileKeys * sm.ldq;
        const T* Vt = Vs + static_cast<size_t>(buf) * kTileKeys * sm.ldv;
        const int keyBase = t * kTileKeys;

        // sc[h][i]: score of row g + 8h against the i-th key this lane holds:
        //   fp16: key 8(i/2) + 2t + i%2 (mma D layout); fp32: key t + 4i.
        float sc[2][kKeysPerLane];
#pragma unroll
        for (int i = 0; i < kKeysPerLane; ++i) sc[0][i] = sc[1][i] = 0.f;
        if constexpr (kHalf) {
            float s4[8][4];
#pragma unroll
            for (int j = 0; j < 8; ++j) s4[j][0] = s4[j][1] = s4[j][2] = s4[j][3] = 0.f;
            for (int d0 = 0; d0 < g.ldQ; d0 += 16) {
                uint32_t a[4];
                const __half* qa = Qs + (qRow + gq) * sm.ldq + d0 + 2 * tig;
                a[0] = lds32(qa);
                a[1] = lds32(qa + 8 * sm.ldq);
                a[2] = lds32(qa + 8);
                a[3] = lds32(qa + 8 * sm.ldq + 8);
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const __half* kb = Kt + (8 * j + gq) * sm.ldq + d0 + 2 * tig;
                    mma16816(s4[j], a, lds32(kb), lds32(kb + 8));
                }
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                sc[0][2 * j] = s4[j][0];
                sc[0][2 * j + 1] = s4[j][1];
                sc[1][2 * j] = s4[j][2];
                sc[1][2 * j + 1] = s4[j][3];
            }
#pragma unroll
            for (int i = 0; i < 16; ++i)
                if (keyBase + 8 * (i / 2) + 2 * tig + (i & 1) >= nKeys) sc[0][i] = sc[1][i] = -INFINITY;
        } else {
            for (int d = 0; d < g.ldQ; d += 4) {
                const float4 a0 = *reinterpret_cast<const float4*>(&Qs[(qRow + gq) * sm.ldq + d]);
                const float4 a1 = *reinterpret_cast<const float4*>(&Qs[(qRow + gq + 8) * sm.ldq + d]);
#pragma unroll
                for (int i = 0; i < kKeysPerLane; ++i) {
                    const float4 k = *reinterpret_cast<const float4*>(&Kt[(tig + 4 * i) * sm.ldq + d]);
                    sc[0][i] = fmaf(a0.x, k.x, sc[0][i]);
                    sc[0][i] = fmaf(a0.y, k.y, sc[0][i]);
                    sc[0][i] = fmaf(a0.z, k.z, sc[0][i]);
                    sc[0][i] = fmaf(a0.w, k.w, sc[0][i]);
                    sc[1][i] = fmaf(a1.x, k.x, sc[1][i]);
                    sc[1][i] = fmaf(a1.y, k.y, sc[1][i]);
                    sc[1][i] = fmaf(a1.z, k.z, sc[1][i]);
                    sc[1][i] = fmaf(a1.w, k.w, sc[1][i]);
                }
            }
#pragma unroll
            for (int i = 0; i < kKeysPerLane; ++i)
                if (keyBase + tig + 4 * i >= nKeys) sc[0][i] = sc[1][i] = -INFINITY;
        }

        const float alpha0 = softmaxUpdate(sc[0], rowMax[0], rowSum[0]);
        const float alpha1 = softmaxUpdate(sc[1], rowMax[1], rowSum[1]);
#pragma unroll
        for (int f = 0; f < kAcc; ++f) {
            o[f][0] *= alpha0;
            o[f][1] *= alpha0;
            o[f][2] *= alpha1;
            o[f][3] *= alpha1;
        }

        if constexpr (kHalf) {
            // P (rounded to fp16) straight from the score registers: keys 16kk..16kk+15
            // are the D fragments 2kk, 2kk+1, which is the A fragment layout.
#pragma unroll
            for (int kk = 0; kk < kTileKeys / 16; ++kk) {
                uint32_t a[4];
                a[0] = packHalf2(sc[0][4 * kk], sc[0][4 * kk + 1]);
                a[1] = packHalf2(sc[1][4 * kk], sc[1][4 * kk + 1]);
                a[2] = packHalf2(sc[0][4 * kk + 2], sc[0][4 * kk + 3]);
                a[3] = packHalf2(sc[1][4 * kk + 2], sc[1][4 * kk + 3]);
                // Matrix m of the x4: keys 16kk + 8(m%2) + (lane%8), columns 16jj + 8(m/2).
                const __half* vRow = Vt + (16 * kk + (lane & 7) + 8 * ((lane >> 3) & 1)) * sm.ldv + 8 * (lane >> 4);
#pragma unroll
                for (int jj = 0; jj < BC / 16; ++jj) {
                    uint32_t b[4];
                    ldmatrixX4Trans(b, vRow + 16 * jj);
                    mma16816(o[2 * jj], a, b[0], b[1]);
                    mma16816(o[2 * jj + 1], a, b[2], b[3]);
                }
            }
        } else {
            constexpr int kLdP = Traits<T>::kLdP;
            float* Pw = reinterpret_cast<float*>(smemRaw + sm.p) + warp * kFragRows * kLdP;
#pragma unroll
            for (int i = 0; i < kKeysPerLane; ++i) {
                Pw[gq * kLdP + tig + 4 * i] = sc[0][i];
                Pw[(gq + 8) * kLdP + tig + 4 * i] = sc[1][i];
            }
            __syncwarp();
#pragma unroll 4
            for (int k = 0; k < kTileKeys; ++k) {
                const float p0 = Pw[gq * kLdP + k], p1 = Pw[(gq + 8) * kLdP + k];
#pragma unroll
                for (int jv = 0; jv < BC / 16; ++jv) {
                    const float4 vv = *reinterpret_cast<const float4*>(&Vt[k * sm.ldv + 4 * tig + 16 * jv]);
                    o[2 * jv][0] = fmaf(p0, vv.x, o[2 * jv][0]);
                    o[2 * jv][1] = fmaf(p0, vv.y, o[2 * jv][1]);
                    o[2 * jv + 1][0] = fmaf(p0, vv.z, o[2 * jv + 1][0]);
                    o[2 * jv + 1][1] = fmaf(p0, vv.w, o[2 * jv + 1][1]);
                    o[2 * jv][2] = fmaf(p1, vv.x, o[2 * jv][2]);
                    o[2 * jv][3] = fmaf(p1, vv.y, o[2 * jv][3]);
                    o[2 * jv + 1][2] = fmaf(p1, vv.z, o[2 * jv + 1][2]);
                    o[2 * jv + 1][3] = fmaf(p1, vv.w, o[2 * jv + 1][3]);
                }
            }
        }
        __syncthreads();  // buffer `buf` (and Pw) consumed before it is refilled
    }

    // Epilogue: the quad's partial sums, then rows in sorted order (p >= L dropped).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = rowSum[h];
        l += __shfl_xor_sync(kFull, l, 1);
        l += __shfl_xor_sync(kFull, l, 2);
        const float inv = 1.f / l;
        const int qi = rowBase + qRow + gq + 8 * h;
        const int p = chunk * g.cs + qi;
        if (qi >= g.cs || p >= g.L) continue;
        const size_t m = (static_cast<size_t>(n) * g.R + r) * g.L + p;
        T* dst = outWs + m * g.ldV;
        if constexpr (kHalf) {
#pragma unroll
            for (int f = 0; f < kAcc; ++f) {
                const int col = col0 + 8 * f + 2 * tig;  // even; ldV is a multiple of 8
                if (col < g.ldV)
                    *reinterpret_cast<__half2*>(dst + col) =
                        __floats2half2_rn(o[f][2 * h] * inv, o[f][2 * h + 1] * inv);
            }
        } else {
#pragma unroll
            for (int jv = 0; jv < BC / 16; ++jv) {
                const int col = col0 + 4 * tig + 16 * jv;  // ldV is a multiple of 4
                if (col < g.ldV)
                    *reinterpret_cast<float4*>(dst + col) =
                        make_float4(o[2 * jv][2 * h] * inv, o[2 * jv][2 * h + 1] * inv,
                                    o[2 * jv + 1][2 * h] * inv, o[2 * jv + 1][2 * h + 1] * inv);
            }
        }
        if (ct == 0 && tig == 0) lseWs[m] = rowMax[h] + logf(l);
    }
}

// ------------------------------------------------------------------------------ 3. combine
constexpr int kCombineThreads = 256;

__device__ __forceinline__ void load16(const float* p, float (&x)[4]) {
    const float4 f = *reinterpret_cast<const float4*>(p);
    x[0] = f.x;
    x[1] = f.y;
    x[2] = f.z;
    x[3] = f.w;
}
__device__ __forceinline__ void load16(const __half* p, float (&x)[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        __half2 h;
        memcpy(&h, &w[i], sizeof(h));
        const float2 f = __half22float2(h);
        x[2 * i] = f.x;
        x[2 * i + 1] = f.y;
    }
}

template <typename T>
__global__ void __launch_bounds__(kCombineThreads)
combineChunkRounds(const T* __restrict__ outWs, const float* __restrict__ lseWs,
                   const int32_t* __restrict__ rank, T* __restrict__ out, int L, int C, int ldV, int R,
                   int rows) {
    constexpr int kV = kVec<T>;
    extern __shared__ __align__(128) unsigned char smemRaw[];
    const int lane = threadIdx.x & 31;
    bucket_attention::CombineRow c;
    if (!bucket_attention::combineRowWeights<kCombineThreads / 32>(smemRaw, rank, lseWs, L, R, rows, c)) return;
    T* dst = out + static_cast<size_t>(c.row) * C;
    // Whole 16-byte stores when every chunk of the output row is aligned.
    const bool vectorStore = C % kV == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
    for (int c0 = lane * kV; c0 < C; c0 += 32 * kV) {  // c0 + kV <= ldV: ldV is a multiple of kV
        float acc[kV];
#pragma unroll
        for (int e = 0; e < kV; ++e) acc[e] = 0.f;
        for (int k = 0; k < R; ++k) {
            float x[kV];
            load16(outWs + (c.nBase + c.src[k]) * ldV + c0, x);
#pragma unroll
            for (int e = 0; e < kV; ++e) acc[e] = fmaf(c.w[k], x[e], acc[e]);
        }
        if (vectorStore) {
            alignas(16) T packed[kV];
#pragma unroll
            for (int e = 0; e < kV; ++e) packed[e] = fromF<T>(acc[e]);
            *reinterpret_cast<uint4*>(dst + c0) = *reinterpret_cast<const uint4*>(packed);
        } else {
#pragma unroll
            for (int e = 0; e < kV; ++e)
                if (c0 + e < C) dst[c0 + e] = fromF<T>(acc[e]);
        }
    }
}

// ------------------------------------------------------------------------------ host side
struct ChunkWorkspace {
    void* qs;
    void* ks;
    void* vs;
    void* outWs;
    float* lseWs;
};

ChunkGeometry baseGeometry(const BucketAttentionShape& s, DType dtype) {
    ChunkGeometry g{};
    bucket_attention::setRoundLayout(g, s);
    g.Lp = g.nc * g.cs;
    const bool half = dtype == DType::kFloat16;
    g.ldQ = roundUp(g.c, half ? Traits<__half>::kDimStep : Traits<float>::kDimStep);
    g.ldV = roundUp(g.C, half ? kVec<__half> : kVec<float>);
    return g;
}

// Byte sizes of the five workspace parts, in carving order.
void chunkWorkspaceParts(const BucketAttentionShape& s, DType dtype, size_t (&bytes)[5]) {
    const ChunkGeometry g = baseGeometry(s, dtype);
    const size_t elem = dtype == DType::kFloat16 ? sizeof(__half) : sizeof(float);
    const size_t sortedRows = static_cast<size_t>(s.n) * g.R * g.Lp;
    const size_t roundRows = static_cast<size_t>(s.n) * g.R * g.L;
    bytes[0] = sortedRows * g.ldQ * elem;  // sorted queries
    bytes[1] = sortedRows * g.ldQ * elem;  // sorted normalised keys
    bytes[2] = sortedRows * g.ldV * elem;  // sorted values
    bytes[3] = roundRows * g.ldV * elem;   // per-round outputs
    bytes[4] = roundRows * sizeof(float);  // per-round logsumexps
}

template <typename T>
LaunchStatus runChunk(const T* q, const T* v, const int32_t* order, const int32_t* rank, T* out,
                     const BucketAttentionShape& s, float eps, const ChunkWorkspace& w, ChunkGeometry g,
                     cudaStream_t stream) {
    size_t maxSmem = 0;
    cudaError_t err = bucket_attention::maxSharedBytesPerBlock(&maxSmem);
    if (err != cudaSuccess) return err;

    // Tiling: the narrowest column tile that covers C (up to the widest the registers hold),
    // then as many warps per pass as shared memory allows; narrower tiles if nothing fits.
    const int nFrags = ceilDiv(g.cs, kFragRows);
    constexpr int maxBc = 128;  // fp16 at 256 needs 240 registers: one 5-warp block per SM
    int bc = 64;
    while (bc < g.C && bc < maxBc) bc *= 2;
    size_t smem = 0;
    bool found = false;
    for (; bc >= 64; bc /= 2) {
        for (int cap = kMaxWarps; cap >= 1 && !found; cap /= 2) {
            const int passes = ceilDiv(nFrags, cap);
            const int warps = ceilDiv(nFrags, passes);
            smem = chunkSmem<T>(g.ldQ, bc, warps).total;
            if (smem <= maxSmem) {
                g.passes = passes;
                g.warps = warps;
                found = true;
            }
        }
        if (found) break;
    }
    if (!found)
        return LaunchStatus::noVariantFits(
            "BucketAttention (chunk) with c = %d, C = %d needs %zu bytes of shared memory per block, this GPU "
            "allows %zu", g.c, g.C, chunkSmem<T>(g.ldQ, 64, 1).total, maxSmem);
    g.cTiles = ceilDiv(g.C, bc);

    const int sortedRows = s.n * g.R * g.Lp;  // within int32: checked by the C ABI
    gatherSorted<T><<<ceilDiv(sortedRows, kGatherThreads / 32), kGatherThreads, 0, stream>>>(
        q, v, order, static_cast<T*>(w.qs), static_cast<T*>(w.ks), static_cast<T*>(w.vs), eps, g, sortedRows);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;

    auto attention = [&](auto kernel) -> cudaError_t {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (e != cudaSuccess) return e;
        const dim3 grid(static_cast<unsigned>(g.nc * g.passes * g.cTiles), static_cast<unsigned>(g.R),
                        static_cast<unsigned>(s.n));
        kernel<<<grid, g.warps * 32, smem, stream>>>(static_cast<const T*>(w.qs), static_cast<const T*>(w.ks),
                                                     static_cast<const T*>(w.vs), static_cast<T*>(w.outWs),
                                                     w.lseWs, g);
        return cudaGetLastError();
    };
    err = bc == 64 ? attention(attentionChunk<T, 64>) : attention(attentionChunk<T, 128>);
    if (err != cudaSuccess) return err;

    const int rows = s.n * g.L;
    const size_t combineSmem = sizeof(float) * 2 * (kCombineThreads / 32) * static_cast<size_t>(g.R);
    if (combineSmem > 48 * 1024)  // R <= 256 (checked by the C ABI) keeps this at 16 KB
        return LaunchStatus::noVariantFits("BucketAttention (chunk): the round combine needs %zu bytes of shared memory",
                                           combineSmem);
    combineChunkRounds<T><<<ceilDiv(rows, kCombineThreads / 32), kCombineThreads, combineSmem, stream>>>(
        static_cast<const T*>(w.outWs), w.lseWs, rank, out, g.L, g.C, g.ldV, g.R, rows);
    return cudaGetLastError();
}

}  // namespace

size_t bucketAttentionChunkWorkspaceSize(const BucketAttentionShape& s, DType dtype) {
    size_t bytes[5];
    chunkWorkspaceParts(s, dtype, bytes);
    size_t total = 0;
    for (size_t b : bytes) total += alignUp(b);
    return total;
}

LaunchStatus launchBucketAttentionChunk(const void* q, const void* v, const int32_t* order,
                                       const int32_t* rank, void* out, const BucketAttentionShape& s,
                                       float eps, DType dtype, void* workspace, size_t workspaceBytes,
                                       cudaStream_t stream) {
    if (workspaceBytes < bucketAttentionChunkWorkspaceSize(s, dtype)) return cudaErrorInvalidValue;
    size_t bytes[5];
    chunkWorkspaceParts(s, dtype, bytes);
    size_t off = 0;
    ChunkWorkspace w{};
    w.qs = carve<unsigned char>(workspace, off, bytes[0]);
    w.ks = carve<unsigned char>(workspace, off, bytes[1]);
    w.vs = carve<unsigned char>(workspace, off, bytes[2]);
    w.outWs = carve<unsigned char>(workspace, off, bytes[3]);
    w.lseWs = reinterpret_cast<float*>(carve<unsigned char>(workspace, off, bytes[4]));
    const ChunkGeometry g = baseGeometry(s, dtype);
    if (dtype == DType::kFloat16)
        return runChunk<__half>(static_cast<const __half*>(q), static_cast<const __half*>(v), order, rank,
                                static_cast<__half*>(out), s, eps, w, g, stream);
    return runChunk<float>(static_cast<const float*>(q), static_cast<const float*>(v), order, rank,
                           static_cast<float*>(out), s, eps, w, g, stream);
}

}  // namespace srd
