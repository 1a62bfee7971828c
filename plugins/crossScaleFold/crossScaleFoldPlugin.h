/*
 * CrossScaleFold (srdeploy, version 1): scores [N, K, H, W], patches [N, K, C, kh, kw] (fp32 or fp16,
 * one type) -> out [N, C, (H-1)*stride - 2*padding + kh, (W-1)*stride - 2*padding + kw].
 * Attributes: stride (INT, > 0), padding (INT, >= 0). Kernel: srd_cross_scale_fold (crossScaleFoldKernel.cu).
 */
#ifndef SRDEPLOY_TRT_CROSS_SCALE_FOLD_PLUGIN_H
#define SRDEPLOY_TRT_CROSS_SCALE_FOLD_PLUGIN_H

#include "../trt/srdPluginBase.h"

namespace srdeploy
{
namespace trt
{

class CrossScaleFoldPlugin final : public PluginBase<CrossScaleFoldPlugin>
{
public:
    static constexpr char const* kNAME = "CrossScaleFold";
    static constexpr int32_t kNB_INPUTS = 2;
    static constexpr TensorSpec kTENSORS[]
        = {{"scores", 4, TypeRule::kFLOAT}, {"patches", 5, TypeRule::kFLOAT}, {"out", 4, TypeRule::kFLOAT}};
    static std::vector<Attribute<CrossScaleFoldPlugin>> attributes();

    void doOutputShapes(DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& exprBuilder) const;
    void doCheckShapes(Dims const* dims) const;
    size_t doWorkspaceSize(Dims const* dims, DataType type) const;
    void doEnqueue(EnqueueArgs const& call) const;

private:
    int32_t mStride{};
    int32_t mPadding{};
};

using CrossScaleFoldPluginCreator = PluginCreator<CrossScaleFoldPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_CROSS_SCALE_FOLD_PLUGIN_H
