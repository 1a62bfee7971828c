// Helpers shared by the kernels and the C ABI layer (host and device).
#pragma once

#include <cstddef>
#include <cstdint>

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

}  // namespace srd
