// Helpers shared by the kernels and the C ABI layer (host and device).
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include <cuda_runtime_api.h>

#if defined(__CUDACC__)
#define SRD_HOST_DEVICE __host__ __device__
#else
#define SRD_HOST_DEVICE
#endif

namespace srd {

enum class DType : int { kFloat32 = 0, kFloat16 = 1 };

// Workspace sub-buffers start on 256-byte boundaries (what cudaMalloc guarantees).
constexpr size_t kWorkspaceAlign = 256;

inline size_t alignUp(size_t x, size_t a = kWorkspaceAlign) { return (x + a - 1) / a * a; }

template <typename T>
inline T* carve(void* base, size_t& offset, size_t count) {
    T* p = reinterpret_cast<T*>(static_cast<char*>(base) + offset);
    offset += alignUp(count * sizeof(T));
    return p;
}

SRD_HOST_DEVICE constexpr int ceilDiv(int a, int b) { return (a + b - 1) / b; }

// Index inputs come from tensors, and TensorRT times plugins on arbitrary int32 data: every index
// read from memory goes through one of these before it addresses anything. Both are the identity
// on valid input.
// x mod n in [0, n) for any x (C++ % keeps the sign of x; torch's % on a positive n does not).
SRD_HOST_DEVICE inline int floorMod(int x, int n) {
    const int r = x % n;
    return r < 0 ? r + n : r;
}
// x clamped into [0, n).
SRD_HOST_DEVICE inline int clampIndex(int x, int n) { return x < 0 ? 0 : (x >= n ? n - 1 : x); }

// What a launcher returns: the first CUDA error (cudaSuccess when everything launched), or, found
// by a capability check before anything was launched, that no kernel variant fits this shape on
// this GPU. Only the latter may fall back to another implementation (SRD_ERR_UNSUPPORTED); any
// error from CUDA, cudaErrorNotSupported included, is a failure (SRD_ERR_CUDA).
struct LaunchStatus {
    cudaError_t cuda = cudaSuccess;
    bool unsupported = false;
    char reason[192] = "";  // why no variant fits

    LaunchStatus(cudaError_t err = cudaSuccess) : cuda(err) {}  // implicit: `return cudaGetLastError();`

    // printf-style reason, e.g. the shared memory needed and the device's limit.
    static LaunchStatus noVariantFits(const char* format, ...) __attribute__((format(printf, 1, 2))) {
        LaunchStatus s;
        s.unsupported = true;
        va_list args;
        va_start(args, format);
        std::vsnprintf(s.reason, sizeof(s.reason), format, args);
        va_end(args);
        return s;
    }
    bool ok() const { return cuda == cudaSuccess && !unsupported; }
};

}  // namespace srd
