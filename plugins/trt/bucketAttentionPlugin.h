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
    static std::vector<FieldSpec> fieldSpecs();

    explicit BucketAttentionPlugin(FieldReader const& fields);
    BucketAttentionPlugin(BucketAttentionPlugin const&) = default;
    ~BucketAttentionPlugin() noexcept override = default;

    void appendFields(std::vector<PluginField>& fields);

    // IPluginV3OneBuild
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(
        PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
        void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    int32_t mChunkSize{};
    int32_t mNHashes{};
    float mEps{};
    size_t mWorkspaceBytes{}; //!< for the shapes of the last onShapeChange()
};

using BucketAttentionPluginCreator = PluginCreator<BucketAttentionPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_BUCKET_ATTENTION_PLUGIN_H
