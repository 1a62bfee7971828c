// The C ABI (include/srdeploy_kernels.h): validates every argument before anything touches the
// GPU, maps CUDA errors to SRD_ERR_CUDA with a readable message, and never lets an exception out.
#include "srdeploy_kernels.h"

#include <cmath>
#include <cstdio>
#include <exception>
#include <initializer_list>
#include <limits>

#include <cuda_runtime_api.h>

#include "../bucketAttention/bucketAttentionChunkKernel.h"
#include "../bucketAttention/bucketAttentionKernel.h"
#include "../bucketSort/bucketSortKernel.h"
#include "../common/srdCommon.h"
#include "../crossScaleFold/crossScaleFoldKernel.h"

namespace {

thread_local char gMessage[512] = "";

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kGridYZMax = 65535;  // batch and rounds become grid dimensions
constexpr int64_t kMaxQueryChannels = 256;
constexpr int64_t kMaxRounds = 256;

int fail(int status, const char* what) {
    std::snprintf(gMessage, sizeof(gMessage), "%s", what);
    return status;
}

int ok() {
    gMessage[0] = '\0';
    return SRD_SUCCESS;
}

// A launcher's outcome: SRD_ERR_UNSUPPORTED only for its own pre-launch capability check; every
// error that came from CUDA (cudaErrorNotSupported too) is SRD_ERR_CUDA with CUDA's text.
int fromCuda(const srd::LaunchStatus& st, const char* where) {
    if (st.unsupported) {
        std::snprintf(gMessage, sizeof(gMessage), "%s: no kernel variant fits: %s", where, st.reason);
        return SRD_ERR_UNSUPPORTED;
    }
    if (st.cuda == cudaSuccess) return ok();
    std::snprintf(gMessage, sizeof(gMessage), "%s: CUDA error %d (%s): %s", where,
                  static_cast<int>(st.cuda), cudaGetErrorName(st.cuda), cudaGetErrorString(st.cuda));
    return SRD_ERR_CUDA;
}

// Product of sizes within int32 (kernels index with int where it is safe to).
bool productFits(std::initializer_list<int64_t> sizes) {
    int64_t p = 1;
    for (int64_t s : sizes) {
        if (s <= 0 || p > kInt32Max / s) return false;
        p *= s;
    }
    return true;
}

bool validDtype(int dtype) { return dtype == SRD_FLOAT32 || dtype == SRD_FLOAT16; }

cudaStream_t asStream(void* stream) { return static_cast<cudaStream_t>(stream); }

// ------------------------------------------------------------------------------------ checks

int checkSort(int64_t batch, int64_t length, int64_t numBuckets) {
    if (batch <= 0 || length <= 0) return fail(SRD_ERR_INVALID_SIZE, "batch and length must be positive");
    if (!productFits({batch, length})) return fail(SRD_ERR_INVALID_SIZE, "batch * length exceeds int32");
    if (numBuckets <= 0) return fail(SRD_ERR_INVALID_ATTRIBUTE, "num_buckets must be positive");
    if (!productFits({batch, numBuckets})) return fail(SRD_ERR_INVALID_ATTRIBUTE, "batch * num_buckets exceeds int32");
    return SRD_SUCCESS;
}

int checkAttention(int64_t n, int64_t length, int64_t c, int64_t channels, int64_t chunkSize,
                   int64_t nHashes, int dtype) {
    if (n <= 0 || length <= 0 || c <= 0 || channels <= 0)
        return fail(SRD_ERR_INVALID_SIZE, "n, length, c and channels must be positive");
    if (n > kGridYZMax) return fail(SRD_ERR_INVALID_SIZE, "n exceeds 65535");
    if (chunkSize <= 0) return fail(SRD_ERR_INVALID_ATTRIBUTE, "chunk_size must be positive");
    if (chunkSize > length) return fail(SRD_ERR_INVALID_ATTRIBUTE, "chunk_size must not exceed length (L >= cs)");
    if (nHashes <= 0 || nHashes > kMaxRounds) return fail(SRD_ERR_INVALID_ATTRIBUTE, "n_hashes must be in [1, 256]");
    if (!productFits({n, nHashes, length + chunkSize, channels}) || !productFits({n, length, c}))
        return fail(SRD_ERR_INVALID_SIZE, "tensor sizes exceed int32 elements");
    if (c > kMaxQueryChannels) return fail(SRD_ERR_UNSUPPORTED, "c > 256 is not supported");
    if (!validDtype(dtype)) return fail(SRD_ERR_UNSUPPORTED_DTYPE, "dtype must be SRD_FLOAT32 or SRD_FLOAT16");
    return SRD_SUCCESS;
}

int checkFold(int64_t n, int64_t k, int64_t h, int64_t w, int64_t channels, int64_t kernelH,
              int64_t kernelW, int64_t stride, int64_t padding, int dtype) {
    if (n <= 0 || k <= 0 || h <= 0 || w <= 0 || channels <= 0 || kernelH <= 0 || kernelW <= 0)
        return fail(SRD_ERR_INVALID_SIZE, "n, k, h, w, channels and kernel sizes must be positive");
    if (n > kGridYZMax) return fail(SRD_ERR_INVALID_SIZE, "n exceeds 65535");
    if (stride <= 0) return fail(SRD_ERR_INVALID_ATTRIBUTE, "stride must be positive");
    if (padding < 0) return fail(SRD_ERR_INVALID_ATTRIBUTE, "padding must be non-negative");
    if (!productFits({n, k, h, w}) || !productFits({n, k, channels, kernelH, kernelW}) ||
        !productFits({n, channels, kernelH, kernelW, h, w}) || !productFits({h, stride}) ||
        !productFits({w, stride}))
        return fail(SRD_ERR_INVALID_SIZE, "tensor sizes exceed int32 elements");
    const int64_t outH = (h - 1) * stride - 2 * padding + kernelH;
    const int64_t outW = (w - 1) * stride - 2 * padding + kernelW;
    if (outH <= 0 || outW <= 0) return fail(SRD_ERR_INVALID_ATTRIBUTE, "padding leaves an empty output");
    if (!productFits({n, channels, outH, outW})) return fail(SRD_ERR_INVALID_SIZE, "output exceeds int32 elements");
    if (!validDtype(dtype)) return fail(SRD_ERR_UNSUPPORTED_DTYPE, "dtype must be SRD_FLOAT32 or SRD_FLOAT16");
    return SRD_SUCCESS;
}

int checkWorkspace(void* workspace, size_t have, size_t need) {
    if (have < need) return fail(SRD_ERR_WORKSPACE_TOO_SMALL, "workspace_bytes is smaller than the queried size");
    if (need > 0 && workspace == nullptr) return fail(SRD_ERR_NULL_POINTER, "workspace is NULL");
    return SRD_SUCCESS;
}

srd::BucketAttentionShape attentionShape(int64_t n, int64_t length, int64_t c, int64_t channels,
                                         int64_t chunkSize, int64_t nHashes) {
    return {static_cast<int>(n), static_cast<int>(length), static_cast<int>(c),
            static_cast<int>(channels), static_cast<int>(chunkSize), static_cast<int>(nHashes)};
}

srd::CrossScaleFoldShape foldShape(int64_t n, int64_t k, int64_t h, int64_t w, int64_t channels,
                                   int64_t kernelH, int64_t kernelW, int64_t stride, int64_t padding) {
    return {static_cast<int>(n), static_cast<int>(k), static_cast<int>(h), static_cast<int>(w),
            static_cast<int>(channels), static_cast<int>(kernelH), static_cast<int>(kernelW),
            static_cast<int>(stride), static_cast<int>(padding)};
}

}  // namespace

#define SRD_GUARD_BEGIN try {
#define SRD_GUARD_END                                                              \
    }                                                                              \
    catch (const std::exception& e) { return fail(SRD_ERR_CUDA, e.what()); }       \
    catch (...) { return fail(SRD_ERR_CUDA, "unknown C++ exception"); }

extern "C" {

int srd_abi_version(void) { return SRD_ABI_VERSION; }

const char* srd_status_string(int status) {
    switch (status) {
        case SRD_SUCCESS: return "SRD_SUCCESS";
        case SRD_ERR_NULL_POINTER: return "SRD_ERR_NULL_POINTER";
        case SRD_ERR_INVALID_SIZE: return "SRD_ERR_INVALID_SIZE";
        case SRD_ERR_INVALID_ATTRIBUTE: return "SRD_ERR_INVALID_ATTRIBUTE";
        case SRD_ERR_UNSUPPORTED_DTYPE: return "SRD_ERR_UNSUPPORTED_DTYPE";
        case SRD_ERR_WORKSPACE_TOO_SMALL: return "SRD_ERR_WORKSPACE_TOO_SMALL";
        case SRD_ERR_UNSUPPORTED: return "SRD_ERR_UNSUPPORTED";
        case SRD_ERR_CUDA: return "SRD_ERR_CUDA";
        default: return "SRD_ERR_UNKNOWN";
    }
}

const char* srd_last_error_message(void) { return gMessage; }

// ------------------------------------------------------------------------------------ BucketSort

int srd_bucket_sort_workspace_size(int64_t batch, int64_t length, int64_t num_buckets,
                                   size_t* workspace_bytes) {
    SRD_GUARD_BEGIN
    if (workspace_bytes == nullptr) return fail(SRD_ERR_NULL_POINTER, "workspace_bytes is NULL");
    if (int st = checkSort(batch, length, num_buckets)) return st;
    return fromCuda(srd::bucketSortWorkspaceSize(static_cast<int>(batch), static_cast<int>(length),
                                                 static_cast<int>(num_buckets), workspace_bytes),
                    "bucket_sort workspace query");
    SRD_GUARD_END
}

int srd_bucket_sort(const int32_t* codes, int32_t* order, int32_t* rank, int64_t batch,
                    int64_t length, int64_t num_buckets, void* workspace, size_t workspace_bytes,
                    void* stream) {
    SRD_GUARD_BEGIN
    if (codes == nullptr || order == nullptr || rank == nullptr)
        return fail(SRD_ERR_NULL_POINTER, "codes, order and rank must be non-NULL");
    if (workspace == nullptr) return fail(SRD_ERR_NULL_POINTER, "workspace is NULL");
    if (int st = checkSort(batch, length, num_buckets)) return st;
    size_t need = 0;
    if (int st = srd_bucket_sort_workspace_size(batch, length, num_buckets, &need)) return st;
    if (int st = checkWorkspace(workspace, workspace_bytes, need)) return st;
    return fromCuda(srd::launchBucketSort(codes, order, rank, static_cast<int>(batch),
                                          static_cast<int>(length), static_cast<int>(num_buckets),
                                          workspace, workspace_bytes, asStream(stream)),
                    "bucket_sort");
    SRD_GUARD_END
}

// ------------------------------------------------------------------------------- BucketAttention

int srd_bucket_attention_workspace_size(int64_t n, int64_t length, int64_t c, int64_t channels,
                                        int64_t chunk_size, int64_t n_hashes, int dtype,
                                        size_t* workspace_bytes) {
    SRD_GUARD_BEGIN
    if (workspace_bytes == nullptr) return fail(SRD_ERR_NULL_POINTER, "workspace_bytes is NULL");
    if (int st = checkAttention(n, length, c, channels, chunk_size, n_hashes, dtype)) return st;
    // The larger of both variants: SRDEPLOY_BUCKET_ATTENTION may differ between sizing and running.
    const srd::BucketAttentionShape s = attentionShape(n, length, c, channels, chunk_size, n_hashes);
    const size_t gather = srd::bucketAttentionWorkspaceSize(s);
    const size_t chunk = srd::bucketAttentionChunkWorkspaceSize(s, static_cast<srd::DType>(dtype));
    *workspace_bytes = gather > chunk ? gather : chunk;
    return ok();
    SRD_GUARD_END
}

int srd_bucket_attention(const void* q, const void* v, const int32_t* order, const int32_t* rank,
                         void* out, int64_t n, int64_t length, int64_t c, int64_t channels,
                         int64_t chunk_size, int64_t n_hashes, float eps, int dtype,
                         void* workspace, size_t workspace_bytes, void* stream) {
    SRD_GUARD_BEGIN
    if (q == nullptr || v == nullptr || order == nullptr || rank == nullptr || out == nullptr)
        return fail(SRD_ERR_NULL_POINTER, "q, v, order, rank and out must be non-NULL");
    if (int st = checkAttention(n, length, c, channels, chunk_size, n_hashes, dtype)) return st;
    if (!(eps >= 0.f) || !std::isfinite(eps)) return fail(SRD_ERR_INVALID_ATTRIBUTE, "eps must be finite and >= 0");
    const srd::BucketAttentionVariant variant = srd::bucketAttentionVariantFromEnv();  // read at every call
    if (variant == srd::BucketAttentionVariant::kUnknown) {
        std::snprintf(gMessage, sizeof(gMessage),
                      "%s=%.64s is not a BucketAttention variant: unset it or use gather (the default) or chunk",
                      srd::kBucketAttentionVariantEnv, std::getenv(srd::kBucketAttentionVariantEnv));
        return SRD_ERR_INVALID_ATTRIBUTE;
    }
    const srd::BucketAttentionShape s = attentionShape(n, length, c, channels, chunk_size, n_hashes);
    size_t need = 0;
    if (int st = srd_bucket_attention_workspace_size(n, length, c, channels, chunk_size, n_hashes, dtype, &need)) return st;
    if (int st = checkWorkspace(workspace, workspace_bytes, need)) return st;
    const srd::DType type = static_cast<srd::DType>(dtype);
    const srd::LaunchStatus err =
        variant == srd::BucketAttentionVariant::kChunk
            ? srd::launchBucketAttentionChunk(q, v, order, rank, out, s, eps, type, workspace, workspace_bytes, asStream(stream))
            : srd::launchBucketAttention(q, v, order, rank, out, s, eps, type, workspace, workspace_bytes, asStream(stream));
    return fromCuda(err, variant == srd::BucketAttentionVariant::kChunk ? "bucket_attention (chunk)" : "bucket_attention");
    SRD_GUARD_END
}

// -------------------------------------------------------------------------------- CrossScaleFold

int srd_cross_scale_fold_workspace_size(int64_t n, int64_t k, int64_t h, int64_t w,
                                        int64_t channels, int64_t kernel_h, int64_t kernel_w,
                                        int64_t stride, int64_t padding, int dtype,
                                        size_t* workspace_bytes) {
    SRD_GUARD_BEGIN
    if (workspace_bytes == nullptr) return fail(SRD_ERR_NULL_POINTER, "workspace_bytes is NULL");
    if (int st = checkFold(n, k, h, w, channels, kernel_h, kernel_w, stride, padding, dtype)) return st;
    *workspace_bytes = srd::crossScaleFoldWorkspaceSize(foldShape(n, k, h, w, channels, kernel_h, kernel_w, stride, padding));
    return ok();
    SRD_GUARD_END
}

int srd_cross_scale_fold(const void* scores, const void* patches, void* out, int64_t n, int64_t k,
                         int64_t h, int64_t w, int64_t channels, int64_t kernel_h,
                         int64_t kernel_w, int64_t stride, int64_t padding, int dtype,
                         void* workspace, size_t workspace_bytes, void* stream) {
    SRD_GUARD_BEGIN
    if (scores == nullptr || patches == nullptr || out == nullptr)
        return fail(SRD_ERR_NULL_POINTER, "scores, patches and out must be non-NULL");
    if (int st = checkFold(n, k, h, w, channels, kernel_h, kernel_w, stride, padding, dtype)) return st;
    const srd::CrossScaleFoldShape s = foldShape(n, k, h, w, channels, kernel_h, kernel_w, stride, padding);
    if (int st = checkWorkspace(workspace, workspace_bytes, srd::crossScaleFoldWorkspaceSize(s))) return st;
    return fromCuda(srd::launchCrossScaleFold(scores, patches, out, s, static_cast<srd::DType>(dtype),
                                              workspace, workspace_bytes, asStream(stream)),
                    "cross_scale_fold");
    SRD_GUARD_END
}

}  // extern "C"
