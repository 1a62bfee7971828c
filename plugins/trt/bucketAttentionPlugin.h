/*
 * BucketAttention (srdeploy, version 1): q [N, L, c], v [N, L, C] (fp32 or fp16, one type),
 * order, rank int32 [N, R*L] -> out [N, L, C] (the type of v).
 * Attributes: chunk_size, n_hashes (INT), eps (FLOAT). Kernel: srd_bucket_attention (plugins/bucketAttention/).
 */
#ifndef SRDEPLOY_TRT_BUCKET_ATTENTION_PLUGIN_H
#define SRDEPLOY_TRT_BUCKET_ATTENTION_PLUGIN_H

#include "srdPluginCommon.h"

namespace srdeploy
{
namespace trt
{

class BucketAttentionPlugin final : public PluginBase<BucketAttentionPlugin>
{
public:
    static constexpr char const* kNAME = "BucketAttention";
    static constexpr int32_t kNB_INPUTS = 4;
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kIO = "takes 4 inputs (q, v, order, rank) and gives 1 output";
    static std::vector<FieldSpec> fieldSpecs();

    explicit BucketAttentionPlugin(FieldReader const& fields);
    BucketAttentionPlugin(BucketAttentionPlugin const&) = default;
    ~BucketAttentionPlugin() noexcept override = default;

    // The op, for PluginBase (which owns the noexcept entry points).
    void appendFields(std::vector<PluginField>& fields);
    void doOutputDataTypes(DataType* outputTypes, DataType const* inputTypes) const;
    void doOutputShapes(DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& exprBuilder) const;
    bool doSupportsType(int32_t pos, DynamicPluginTensorDesc const* inOut) const noexcept;
    void doConfigure(DynamicPluginTensorDesc const* in) const;
    void doCheckShapes(Dims const* dims) const;
    size_t doWorkspaceSize(Dims const* dims, DataType type) const;
    void doEnqueue(PluginTensorDesc const* inputDesc, void const* const* inputs, void* const* outputs, void* workspace,
        size_t workspaceBytes, cudaStream_t stream) const;

private:
    int32_t mChunkSize{};
    int32_t mNHashes{};
    float mEps{};
};

using BucketAttentionPluginCreator = PluginCreator<BucketAttentionPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_BUCKET_ATTENTION_PLUGIN_H
