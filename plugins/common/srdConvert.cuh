// fp32 <-> storage-type conversions shared by the kernels (accumulation is always fp32).
#pragma once

#include <cuda_fp16.h>

namespace srd {

__device__ __forceinline__ float toF(float x) { return x; }
__device__ __forceinline__ float toF(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T fromF(float x);
template <>
__device__ __forceinline__ float fromF<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half fromF<__half>(float x) { return __float2half_rn(x); }

}  // namespace srd
