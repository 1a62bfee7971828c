// Index rules and the round weights of BucketAttention (DESIGN.md section 2), shared by the
// kernel variants (reading `order` as Python's `order % L` is srd::floorMod, srdCommon.h). Device code; include from .cu files only.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common/srdCommon.h"
#include "bucketAttentionKernel.h"

namespace srd {
namespace bucket_attention {

constexpr unsigned kFullMask = 0xffffffffu;

// Sorted position (within the round) of key j in [0, 3cs) of `chunk` among nc chunks: own,
// previous, next chunk (cyclic). For nc = 1 or 2 a chunk appears more than once and counts more
// than once, as in the reference. (Two compares instead of j / cs: this runs per copied row.)
__device__ __forceinline__ int keyPosition(int j, int chunk, int cs, int nc) {
    const int which = (j >= cs) + (j >= 2 * cs);
    int kc = chunk;
    if (which == 1) kc = chunk == 0 ? nc - 1 : chunk - 1;
    if (which == 2) kc = chunk == nc - 1 ? 0 : chunk + 1;
    return kc * cs + (j - which * cs);
}

// One warp, output row (n, l): src[k] = rank of round k's result row (clamped to [0, R*L), so
// garbage cannot read out of bounds), w[k] = softmax over k of its logsumexp. Ends with
// __syncwarp, so every lane may read w and src.
__device__ __forceinline__ void roundWeights(const int32_t* __restrict__ rank, const float* __restrict__ lseWs,
                                             size_t nBase, int l, int L, int R, float* w, int* src) {
    const int lane = threadIdx.x & 31;
    const int last = R * L - 1;
    float mx = -INFINITY;
    for (int k = lane; k < R; k += 32) {
        const int m = min(max(rank[nBase + static_cast<size_t>(k) * L + l], 0), last);
        src[k] = m;
        w[k] = lseWs[nBase + m];
        mx = fmaxf(mx, w[k]);
    }
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, off));
    float z = 0.f;
    for (int k = lane; k < R; k += 32) {
        w[k] = expf(w[k] - mx);
        z += w[k];
    }
    for (int off = 16; off > 0; off >>= 1) z += __shfl_xor_sync(kFullMask, z, off);
    for (int k = lane; k < R; k += 32) w[k] /= z;
    __syncwarp();
}

// One output row of the round combine (one warp per row) and its round weights.
struct CombineRow {
    int row;          // output row (n, l), n = row / L
    size_t nBase;     // n * R * L: the first per-round row of sample n
    const float* w;   // w[k]: weight of round k (this warp's shared memory)
    const int* src;   // src[k]: its per-round row, relative to nBase
};

// The start of both variants' combine kernels: warp w of the block takes row blockIdx.x * kWarps + w;
// its weights and sources live in its part of the block's dynamic shared memory (kWarps * R floats,
// then kWarps * R ints). Returns false past the last row (the whole warp leaves; nothing after this
// synchronises the block), else fills `c` with the round weights computed (roundWeights).
template <int kWarps>
__device__ __forceinline__ bool combineRowWeights(unsigned char* smem, const int32_t* __restrict__ rank,
                                                  const float* __restrict__ lseWs, int L, int R, int rows,
                                                  CombineRow& c) {
    const int warp = threadIdx.x >> 5;
    float* w = reinterpret_cast<float*>(smem) + warp * R;
    int* src = reinterpret_cast<int*>(reinterpret_cast<float*>(smem) + kWarps * R) + warp * R;
    c.row = blockIdx.x * kWarps + warp;
    if (c.row >= rows) return false;
    const int n = c.row / L, l = c.row - n * L;
    c.nBase = static_cast<size_t>(n) * R * L;
    roundWeights(rank, lseWs, c.nBase, l, L, R, w, src);  // rank clamped into [0, R*L)
    c.w = w;
    c.src = src;
    return true;
}

// Sets the sizes both variants' geometries start from (their own fields stay as they were): L rows
// per round, c and C channels, chunk size cs, R rounds, and the `pad` copied rows that make
// nc = (L + pad) / cs whole chunks.
template <typename Geometry>
inline void setRoundLayout(Geometry& g, const BucketAttentionShape& s) {
    g.L = s.length;
    g.c = s.c;
    g.C = s.channels;
    g.cs = s.chunkSize;
    g.R = s.nHashes;
    g.pad = (g.cs - g.L % g.cs) % g.cs;
    g.nc = (g.L + g.pad) / g.cs;
}

// Shared memory a block may opt in to on the current device.
inline cudaError_t maxSharedBytesPerBlock(size_t* bytes) {
    int dev = 0, value = 0;
    cudaError_t err = cudaGetDevice(&dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    *bytes = static_cast<size_t>(value);
    return err;
}

}  // namespace bucket_attention
}  // namespace srd
