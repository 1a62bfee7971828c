// BucketAttention, variant `chunk`: one block per (batch, round, chunk) over keys pre-gathered
// into sorted order (bucketAttentionChunkKernel.cu). Same inputs, outputs and semantics as
// launchBucketAttention (the `gather` variant, bucketAttentionKernel.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <cuda_runtime_api.h>

#include "../common/srdCommon.h"
#include "bucketAttentionKernel.h"

namespace srd {

// The kernel variant of srd_bucket_attention, chosen at every call by the environment variable
// SRDEPLOY_BUCKET_ATTENTION: unset or empty or "gather" (the default), or "chunk".
enum class BucketAttentionVariant { kGather, kChunk, kUnknown };

constexpr const char* kBucketAttentionVariantEnv = "SRDEPLOY_BUCKET_ATTENTION";

inline BucketAttentionVariant bucketAttentionVariantFromEnv() {
    const char* value = std::getenv(kBucketAttentionVariantEnv);
    if (value == nullptr || value[0] == '\0' || std::strcmp(value, "gather") == 0)
        return BucketAttentionVariant::kGather;
    if (std::strcmp(value, "chunk") == 0) return BucketAttentionVariant::kChunk;
    return BucketAttentionVariant::kUnknown;
}

// Workspace of the chunk variant (element type `dtype`): sorted queries, sorted normalised keys,
// sorted values (N*R*nc*cs rows each, rows padded to 16 bytes), per-round outputs [N*R*L, C]
// in `dtype` and fp32 logsumexps [N*R*L].
size_t bucketAttentionChunkWorkspaceSize(const BucketAttentionShape& s, DType dtype);

// Same contract as launchBucketAttention; LaunchStatus::noVariantFits when no tiling fits the
// device's shared memory.
LaunchStatus launchBucketAttentionChunk(const void* q, const void* v, const int32_t* order,
                                       const int32_t* rank, void* out, const BucketAttentionShape& s,
                                       float eps, DType dtype, void* workspace, size_t workspaceBytes,
                                       cudaStream_t stream);

}  // namespace srd
