// BucketSort: one CUB radix sort over (row, code) keys for all rows at once, then a scatter.
//
// key = row * numBuckets + code needs only ceil(log2(batch * numBuckets)) bits (10-12 for NLSN),
// so the LSD radix sort makes one or two passes: O(n) and stable (CUB's radix sort is stable),
// and a single sort keeps every SM busy even for batch 1 (a segmented sort gives a row per block).
// The inverse permutation is a scatter of the sorted positions, not a second sort.
#include "bucketSortKernel.h"

#include <cub/device/device_radix_sort.cuh>

#include "../common/srdCommon.h"

namespace srd {
namespace {

constexpr int kThreads = 256;

int keyBits(int batch, int numBuckets) {
    const uint64_t maxKey = static_cast<uint64_t>(batch) * static_cast<uint64_t>(numBuckets) - 1;
    int bits = 1;  // at least one bit: CUB needs begin_bit < end_bit
    while (bits < 32 && (maxKey >> bits) != 0) ++bits;
    return bits;
}

// Keys carry the row in their high part so rows never mix; values are flat positions.
__global__ void makeKeys(const int32_t* __restrict__ codes, uint32_t* __restrict__ keys,
                         int32_t* __restrict__ values, int length, int numBuckets, int total) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int code = clampIndex(codes[i], numBuckets);  // keeps rows apart whatever the input
        keys[i] = static_cast<uint32_t>(i / length) * static_cast<uint32_t>(numBuckets) +
                  static_cast<uint32_t>(code);
        values[i] = i;
    }
}

// order holds sorted flat positions; make them row-local and scatter their inverse into rank.
__global__ void orderAndRank(int32_t* __restrict__ order, int32_t* __restrict__ rank, int length,
                             int total) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int base = (i / length) * length;  // sorted position i stays in its row
        const int src = order[i] - base;
        order[i] = src;
        rank[base + src] = i - base;
    }
}

// Workspace offsets. CUB's temporary storage comes last and takes whatever the caller gave, so
// only the size query asks CUB for its size (once per sort, not again at launch).
struct Layout {
    size_t keysIn, keysOut, valuesIn, cubTemp;
};

Layout layout(int total) {
    const size_t n = static_cast<size_t>(total);
    Layout l{};
    l.keysIn = 0;
    l.keysOut = l.keysIn + alignUp(n * sizeof(uint32_t));
    l.valuesIn = l.keysOut + alignUp(n * sizeof(uint32_t));
    l.cubTemp = l.valuesIn + alignUp(n * sizeof(int32_t));
    return l;
}

int gridFor(int total) {
    const int blocks = ceilDiv(total, kThreads);
    return blocks < 4096 ? blocks : 4096;  // grid-stride loops cover the rest
}

}  // namespace

cudaError_t bucketSortWorkspaceSize(int batch, int length, int numBuckets, size_t* bytes) {
    const int total = batch * length;
    size_t cubBytes = 0;
    const cudaError_t err = cub::DeviceRadixSort::SortPairs(
        nullptr, cubBytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
        static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), total, 0,
        keyBits(batch, numBuckets));
    if (err == cudaSuccess) *bytes = layout(total).cubTemp + alignUp(cubBytes);
    return err;
}

cudaError_t launchBucketSort(const int32_t* codes, int32_t* order, int32_t* rank, int batch,
                             int length, int numBuckets, void* workspace, size_t workspaceBytes,
                             cudaStream_t stream) {
    const int total = batch * length;
    const Layout l = layout(total);
    if (workspaceBytes <= l.cubTemp) return cudaErrorInvalidValue;  // CUB checks its own share
    char* ws = static_cast<char*>(workspace);
    auto* keysIn = reinterpret_cast<uint32_t*>(ws + l.keysIn);
    auto* keysOut = reinterpret_cast<uint32_t*>(ws + l.keysOut);
    auto* valuesIn = reinterpret_cast<int32_t*>(ws + l.valuesIn);

    makeKeys<<<gridFor(total), kThreads, 0, stream>>>(codes, keysIn, valuesIn, length, numBuckets,
                                                      total);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    size_t cubBytes = workspaceBytes - l.cubTemp;
    // Sorted values (flat positions) land directly in `order`.
    err = cub::DeviceRadixSort::SortPairs(ws + l.cubTemp, cubBytes, keysIn, keysOut, valuesIn,
                                          order, total, 0, keyBits(batch, numBuckets), stream);
    if (err != cudaSuccess) return err;
    orderAndRank<<<gridFor(total), kThreads, 0, stream>>>(order, rank, length, total);
    return cudaGetLastError();
}

}  // namespace srd
