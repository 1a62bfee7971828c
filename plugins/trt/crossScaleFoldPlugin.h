/*
 * CrossScaleFold (srdeploy, version 1): scores [N, K, H, W], patches [N, K, C, kh, kw] (fp32 or fp16,
 * one type) -> out [N, C, (H-1)*stride - 2*padding + kh, (W-1)*stride - 2*padding + kw].
 * Attributes: stride, padding (INT). Kernel: srd_cross_scale_fold (plugins/crossScaleFold/).
 */
#ifndef SRDEPLOY_TRT_CROSS_SCALE_FOLD_PLUGIN_H
#define SRDEPLOY_TRT_CROSS_SCALE_FOLD_PLUGIN_H

#include "srdPluginCommon.h"

namespace srdeploy
{
namespace trt
{

class CrossScaleFoldPlugin final : public PluginBase<CrossScaleFoldPlugin>
{
public:
    static constexpr char const* kNAME = "CrossScaleFold";
    static std::vector<FieldSpec> fieldSpecs();

    explicit CrossScaleFoldPlugin(FieldReader const& fields);
    CrossScaleFoldPlugin(CrossScaleFoldPlugin const&) = default;
    ~CrossScaleFoldPlugin() noexcept override = default;

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
    int32_t mStride{};
    int32_t mPadding{};
    size_t mWorkspaceBytes{}; //!< for the shapes of the last onShapeChange()
};

using CrossScaleFoldPluginCreator = PluginCreator<CrossScaleFoldPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_CROSS_SCALE_FOLD_PLUGIN_H
