// BucketSort launcher: stable sort of each row of int32 codes, with the inverse permutation.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace srd {

// Workspace bytes for `batch` rows of `length` codes in [0, numBuckets). Asks CUB, so it needs
// the CUDA runtime and a current device. batch * length must fit in int32.
cudaError_t bucketSortWorkspaceSize(int batch, int length, int numBuckets, size_t* bytes);

// order[b, p] = index of the element at sorted position p (stable); rank = inverse of order.
// Codes outside [0, numBuckets) are clamped into it. workspaceBytes must be at least what
// bucketSortWorkspaceSize returned (the C ABI checks it; the launcher does not ask CUB again).
cudaError_t launchBucketSort(const int32_t* codes, int32_t* order, int32_t* rank, int batch,
                             int length, int numBuckets, void* workspace, size_t workspaceBytes,
                             cudaStream_t stream);

}  // namespace srd
