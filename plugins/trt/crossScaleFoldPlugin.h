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
    static constexpr int32_t kNB_INPUTS = 2;
    static constexpr int32_t kNB_OUTPUTS = 1;
    static constexpr char const* kIO = "takes 2 inputs (scores, patches) and gives 1 output";
    static std::vector<FieldSpec> fieldSpecs();

    explicit CrossScaleFoldPlugin(FieldReader const& fields);
    CrossScaleFoldPlugin(CrossScaleFoldPlugin const&) = default;
    ~CrossScaleFoldPlugin() noexcept override = default;

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
    int32_t mStride{};
    int32_t mPadding{};
};

using CrossScaleFoldPluginCreator = PluginCreator<CrossScaleFoldPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_CROSS_SCALE_FOLD_PLUGIN_H
