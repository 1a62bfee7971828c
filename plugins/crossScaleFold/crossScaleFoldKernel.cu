// CrossScaleFold = cols[b] = patches[b]^T . scores[b] (a batched GEMM contracting over the K
// patches), then col2im as a gather: every output pixel sums its own (ky, kx) contributions in a
// fixed order, so the result is deterministic and needs no atomics.
//
// Both GEMM operands are stored with the contraction index outermost (patches [K, C*kh*kw],
// scores [K, h*w]), so tiles load with unit stride and no transposes.
//   fp32: SIMT, 128 x 128 tiles, 8 x 8 per thread, register prefetch of the next k-slab.
//   fp16: tensor cores (WMMA, fp16 in, fp32 accumulate), 64 x 64 tiles.
// The columns stay fp32 until col2im writes the output dtype.
#include "crossScaleFoldKernel.h"

#include <cuda_fp16.h>
#include <mma.h>

#include "../common/srdConvert.cuh"

namespace srd {
namespace {


// C[b][m][n] = sum_k A[b][k][m] * B[b][k][n]; A is [K][M], B is [K][N], C is [M][N].
struct Gemm {
    int M, N, K;
};

// ------------------------------------------------------------------------------ fp32 SIMT GEMM
// 16 x 16 threads; thread (ty, tx) owns rows 4ty + 64i + {0..3} and columns 4tx + 64j + {0..3}
// (i, j < 2), read as float4 from shared memory. At most 128 registers per thread (launch bounds
// of 2 blocks/SM; it needed 145) so that two blocks share an SM and hide each other's barriers.
constexpr int kG32M = 128, kG32N = 128, kG32K = 8, kG32Threads = 256, kG32BlocksPerSm = 2;
constexpr int kG32Loads = kG32K * kG32M / kG32Threads;  // elements of A (and of B) per thread

__global__ void __launch_bounds__(kG32Threads, kG32BlocksPerSm)
gemmF32(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ Cm, Gemm g) {
    __shared__ __align__(16) float As[kG32K][kG32M];
    __shared__ __align__(16) float Bs[kG32K][kG32N];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int m0 = blockIdx.y * kG32M, n0 = blockIdx.x * kG32N;
    const size_t batch = blockIdx.z;
    const float* Ab = A + batch * g.K * g.M;
    const float* Bb = B + batch * g.K * g.N;
    float* Cb = Cm + batch * g.M * g.N;

    // This thread's share of a slab: column lcol = tid % 128 of slab rows lrow + 2e (e < 4), so
    // consecutive threads read consecutive addresses (coalesced). The column and its bounds are
    // fixed per thread, which keeps the kernel within the registers of two blocks per SM.
    constexpr int kRowStep = kG32Threads / kG32M;
    static_assert(kG32M == kG32N && kG32Loads * kRowStep == kG32K, "one load pattern for A and B");
    const int lcol = tid % kG32M, lrow = tid / kG32M;
    const bool aIn = m0 + lcol < g.M, bIn = n0 + lcol < g.N;
    float ra[kG32Loads], rb[kG32Loads];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int e = 0; e < kG32Loads; ++e) {
            const int k = k0 + lrow + kRowStep * e;
            const bool kin = k < g.K;
            ra[e] = (kin && aIn) ? Ab[static_cast<size_t>(k) * g.M + m0 + lcol] : 0.f;
            rb[e] = (kin && bIn) ? Bb[static_cast<size_t>(k) * g.N + n0 + lcol] : 0.f;
        }
    };

    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

    fetch(0);
    for (int k0 = 0; k0 < g.K; k0 += kG32K) {
        __syncthreads();  // previous slab consumed
#pragma unroll
        for (int e = 0; e < kG32Loads; ++e) {
            As[lrow + kRowStep * e][lcol] = ra[e];
            Bs[lrow + kRowStep * e][lcol] = rb[e];
        }
        __syncthreads();
        if (k0 + kG32K < g.K) fetch(k0 + kG32K);  // in flight while this slab is multiplied
#pragma unroll
        for (int k = 0; k < kG32K; ++k) {
            float a[8], b[8];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float4 av = *reinterpret_cast<const float4*>(&As[k][4 * ty + 64 * h]);
                const float4 bv = *reinterpret_cast<const float4*>(&Bs[k][4 * tx + 64 * h]);
                a[4 * h + 0] = av.x; a[4 * h + 1] = av.y; a[4 * h + 2] = av.z; a[4 * h + 3] = av.w;
                b[4 * h + 0] = bv.x; b[4 * h + 1] = bv.y; b[4 * h + 2] = bv.z; b[4 * h + 3] = bv.w;
            }
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int m = m0 + 4 * ty + 64 * (i / 4) + (i % 4);
        if (m >= g.M) continue;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int n = n0 + 4 * tx + 64 * (j / 4) + (j % 4);
            if (n < g.N) Cb[static_cast<size_t>(m) * g.N + n] = acc[i][j];
        }
    }
}

// ------------------------------------------------------------------------------ fp16 WMMA GEMM
// 4 warps in 2 x 2, each a 32 x 32 output block (2 x 2 fragments).
constexpr int kG16M = 64, kG16N = 64, kG16K = 32, kG16Threads = 128;
constexpr int kG16Lda = kG16M + 8, kG16Ldb = kG16N + 8, kG16Ldc = kG16N + 4;

__global__ void __launch_bounds__(kG16Threads)
gemmF16(const __half* __restrict__ A, const __half* __restrict__ B, float* __restrict__ Cm, Gemm g) {
    using namespace nvcuda;
    __shared__ __align__(128) __half As[kG16K * kG16Lda];  // [k][m]
    __shared__ __align__(128) __half Bs[kG16K * kG16Ldb];  // [k][n]
    __shared__ __align__(128) float Cs[kG16M * kG16Ldc];
    const int tid = threadIdx.x, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int m0 = blockIdx.y * kG16M, n0 = blockIdx.x * kG16N;
    const size_t batch = blockIdx.z;
    const __half* Ab = A + batch * g.K * g.M;
    const __half* Bb = B + batch * g.K * g.N;
    float* Cb = Cm + batch * g.M * g.N;
    const __half zero = __float2half_rn(0.f);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

    for (int k0 = 0; k0 < g.K; k0 += kG16K) {
        __syncthreads();
        for (int idx = tid; idx < kG16K * kG16M; idx += kG16Threads) {
            const int k = k0 + idx / kG16M, col = idx % kG16M;
            const bool kin = k < g.K;
            As[(idx / kG16M) * kG16Lda + col] =
                (kin && m0 + col < g.M) ? Ab[static_cast<size_t>(k) * g.M + m0 + col] : zero;
            Bs[(idx / kG16N) * kG16Ldb + col] =
                (kin && n0 + col < g.N) ? Bb[static_cast<size_t>(k) * g.N + n0 + col] : zero;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kG16K; kk += 16) {
            // A(m, k) = As[k][m]: column-major with leading dimension kG16Lda.
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::col_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b[2];
#pragma unroll
            for (int i = 0; i < 2; ++i)
                wmma::load_matrix_sync(a[i], As + kk * kG16Lda + wm * 32 + i * 16, kG16Lda);
#pragma unroll
            for (int j = 0; j < 2; ++j)
                wmma::load_matrix_sync(b[j], Bs + kk * kG16Ldb + wn * 32 + j * 16, kG16Ldb);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * kG16Ldc + wn * 32 + j * 16, acc[i][j],
                                    kG16Ldc, wmma::mem_row_major);
    __syncthreads();
    for (int idx = tid; idx < kG16M * kG16N; idx += kG16Threads) {
        const int r = idx / kG16N, col = idx % kG16N;
        if (m0 + r < g.M && n0 + col < g.N)
            Cb[static_cast<size_t>(m0 + r) * g.N + n0 + col] = Cs[r * kG16Ldc + col];
    }
}

// -------------------------------------------------------------------------------------- col2im
// out[b, c, oy, ox] = sum over (ky, kx) with oy + pad - ky = iy * stride (0 <= iy < h), likewise
// for x, of cols[b, (c*kh + ky)*kw + kx, iy*w + ix].

// The taps k (inclusive range, step `stride`) that reach output position o along one dimension:
// k = o + pad - i*stride for an input position 0 <= i < in. They share the residue (o + pad) mod
// stride; the first is the smallest such k with i < in, the last is capped by the kernel size and
// by i >= 0. Only about (kernel/stride)^2 of the kernel^2 taps are visited (9 of 36 at x2).
struct TapRange {
    int first, last;  // empty when first > last
};

__device__ __forceinline__ TapRange tapRange(int o, int pad, int stride, int in, int kernel) {
    const int t = o + pad;                     // >= 0
    int first = t % stride;
    const int lowest = t - (in - 1) * stride;  // a smaller k would read input position >= in
    if (first < lowest) first += ceilDiv(lowest - first, stride) * stride;
    const int last = kernel - 1 < t ? kernel - 1 : t;
    return {first, last};
}

// Taps are summed in increasing (ky, kx) order, as when all kh*kw were visited and the
// non-contributing ones skipped: the result is bitwise the same.
template <typename T>
__global__ void col2im(const float* __restrict__ cols, T* __restrict__ out, CrossScaleFoldShape s,
                       int outH, int outW, size_t total) {
    for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total;
         idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const int ox = static_cast<int>(idx % outW);
        const int oy = static_cast<int>((idx / outW) % outH);
        const size_t bc = idx / (static_cast<size_t>(outW) * outH);  // b * C + c
        const float* colsBc = cols + bc * s.kernelH * s.kernelW * static_cast<size_t>(s.h) * s.w;
        const TapRange ry = tapRange(oy, s.padding, s.stride, s.h, s.kernelH);
        const TapRange rx = tapRange(ox, s.padding, s.stride, s.w, s.kernelW);
        float acc = 0.f;
        for (int ky = ry.first; ky <= ry.last; ky += s.stride) {
            const int iy = (oy + s.padding - ky) / s.stride;
            for (int kx = rx.first; kx <= rx.last; kx += s.stride) {
                const int ix = (ox + s.padding - kx) / s.stride;
                acc += colsBc[(static_cast<size_t>(ky) * s.kernelW + kx) * s.h * s.w +
                              static_cast<size_t>(iy) * s.w + ix];
            }
        }
        out[idx] = fromF<T>(acc);
    }
}

}  // namespace

size_t crossScaleFoldWorkspaceSize(const CrossScaleFoldShape& s) {
    return alignUp(sizeof(float) * static_cast<size_t>(s.n) * s.channels * s.kernelH * s.kernelW *
                   s.h * s.w);
}

cudaError_t launchCrossScaleFold(const void* scores, const void* patches, void* out,
                                 const CrossScaleFoldShape& s, DType dtype, void* workspace,
                                 size_t workspaceBytes, cudaStream_t stream) {
    if (workspaceBytes < crossScaleFoldWorkspaceSize(s)) return cudaErrorInvalidValue;
    float* cols = static_cast<float*>(workspace);
    const Gemm g{s.channels * s.kernelH * s.kernelW, s.h * s.w, s.k};
    const int outH = s.outH(), outW = s.outW();
    const size_t total = static_cast<size_t>(s.n) * s.channels * outH * outW;
    size_t blocks = (total + 255) / 256;
    if (blocks > 65535u * 16u) blocks = 65535u * 16u;  // grid-stride loop covers the rest

    if (dtype == DType::kFloat16) {
        const dim3 grid(ceilDiv(g.N, kG16N), ceilDiv(g.M, kG16M), s.n);
        gemmF16<<<grid, kG16Threads, 0, stream>>>(static_cast<const __half*>(patches),
                                                 static_cast<const __half*>(scores), cols, g);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
        col2im<__half><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
            cols, static_cast<__half*>(out), s, outH, outW, total);
    } else {
        const dim3 grid(ceilDiv(g.N, kG32N), ceilDiv(g.M, kG32M), s.n);
        gemmF32<<<grid, kG32Threads, 0, stream>>>(static_cast<const float*>(patches),
                                                 static_cast<const float*>(scores), cols, g);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
        col2im<float><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
            cols, static_cast<float*>(out), s, outH, outW, total);
    }
    return cudaGetLastError();
}

}  // namespace srd
