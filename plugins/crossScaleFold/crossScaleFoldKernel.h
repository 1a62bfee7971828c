// CrossScaleFold launcher: per-sample transposed convolution whose weights are the sample's
// patches (DESIGN.md section 3), as a batched GEMM plus a gather-style col2im.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common/srdCommon.h"

namespace srd {

struct CrossScaleFoldShape {
    int n;         // batch
    int k;         // number of patches K (scores channels)
    int h, w;      // scores spatial size
    int channels;  // C
    int kernelH, kernelW;
    int stride, padding;
    int outH() const { return (h - 1) * stride - 2 * padding + kernelH; }
    int outW() const { return (w - 1) * stride - 2 * padding + kernelW; }
};

// fp32 columns [n, C*kh*kw, h*w].
size_t crossScaleFoldWorkspaceSize(const CrossScaleFoldShape& s);

// scores [n, K, h, w], patches [n, K, C, kh, kw] of `dtype` -> out [n, C, outH, outW] of `dtype`.
cudaError_t launchCrossScaleFold(const void* scores, const void* patches, void* out,
                                 const CrossScaleFoldShape& s, DType dtype, void* workspace,
                                 size_t workspaceBytes, cudaStream_t stream);

}  // namespace srd
