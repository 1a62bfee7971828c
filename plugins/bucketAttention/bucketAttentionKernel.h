// BucketAttention launcher: NLSN attention after the bucket sort (DESIGN.md sections 2 and 3).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common/srdCommon.h"

namespace srd {

struct BucketAttentionShape {
    int n;          // batch
    int length;     // L = H * W
    int c;          // query/key channels
    int channels;   // C, value channels
    int chunkSize;  // cs, 0 < cs <= L
    int nHashes;    // R
};

// fp32 workspace: key norms [n*L], per-round outputs [n*R*L, C] and logsumexps [n*R*L].
size_t bucketAttentionWorkspaceSize(const BucketAttentionShape& s);

// q [n, L, c], v [n, L, C] of `dtype`; order/rank [n, R*L] int32; out [n, L, C] of `dtype`.
// Any int32 in order/rank is safe (wrapped or clamped into range). Returns
// LaunchStatus::noVariantFits, before any launch, when no variant fits the device's shared memory.
LaunchStatus launchBucketAttention(const void* q, const void* v, const int32_t* order,
                                   const int32_t* rank, void* out, const BucketAttentionShape& s,
                                   float eps, DType dtype, void* workspace, size_t workspaceBytes,
                                   cudaStream_t stream);

}  // namespace srd
