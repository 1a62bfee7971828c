/*
 * BucketAttention (srdeploy, version 1): q [N, L, c], v [N, L, C] (fp32 or fp16, one type),
 * order, rank int32 [N, R*L] -> out [N, L, C] (the type of v).
 * Attributes: chunk_size, n_hashes (INT, > 0), eps (FLOAT, >= 0). Kernel: srd_bucket_attention
 * (bucketAttentionKernel.cu, bucketAttentionChunkKernel.cu).
 */
#ifndef SRDEPLOY_TRT_BUCKET_ATTENTION_PLUGIN_H
#define SRDEPLOY_TRT_BUCKET_ATTENTION_PLUGIN_H

#include "../trt/srdPluginBase.h"

namespace srdeploy
{
namespace trt
{

class BucketAttentionPlugin final : public PluginBase<BucketAttentionPlugin>
{
public:
    static constexpr char const* kNAME = "BucketAttention";
    static constexpr int32_t kNB_INPUTS = 4;
    static constexpr TensorSpec kTENSORS[] = {{"q", 3, TypeRule::kFLOAT}, {"v", 3, TypeRule::kFLOAT},
        {"order", 2, TypeRule::kINDEX}, {"rank", 2, TypeRule::kINDEX}, {"out", 3, TypeRule::kFLOAT}};
    static std::vector<Attribute<BucketAttentionPlugin>> attributes();

    void doOutputShapes(DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& exprBuilder) const;
    void doCheckProfile(DynamicPluginTensorDesc const* in) const;
    void doCheckShapes(Dims const* dims) const;
    size_t doWorkspaceSize(Dims const* dims, DataType type) const;
    void doEnqueue(EnqueueArgs const& call) const;

private:
    int32_t mChunkSize{};
    int32_t mNHashes{};
    float mEps{};
};

using BucketAttentionPluginCreator = PluginCreator<BucketAttentionPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_BUCKET_ATTENTION_PLUGIN_H
