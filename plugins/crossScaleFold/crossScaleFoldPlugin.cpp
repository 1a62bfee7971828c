#include "crossScaleFoldPlugin.h"

namespace srdeploy
{
namespace trt
{

namespace
{
//! (in - 1) * stride - 2 * padding + kernel, as a dimension expression.
IDimensionExpr const* foldedExtent(
    IExprBuilder& eb, IDimensionExpr const& in, IDimensionExpr const& kernel, int32_t stride, int32_t padding)
{
    using nvinfer1::DimensionOperation;
    IDimensionExpr const* inMinusOne = eb.operation(DimensionOperation::kSUB, in, *eb.constant(1));
    IDimensionExpr const* scaled = eb.operation(DimensionOperation::kPROD, *inMinusOne, *eb.constant(stride));
    IDimensionExpr const* withKernel = eb.operation(DimensionOperation::kSUM, *scaled, kernel);
    return eb.operation(DimensionOperation::kSUB, *withKernel, *eb.constant(2 * static_cast<int64_t>(padding)));
}
} // namespace

std::vector<Attribute<CrossScaleFoldPlugin>> CrossScaleFoldPlugin::attributes()
{
    return {{"stride", &CrossScaleFoldPlugin::mStride, Bound::kPOSITIVE},
        {"padding", &CrossScaleFoldPlugin::mPadding, Bound::kNON_NEGATIVE}};
}

void CrossScaleFoldPlugin::doOutputShapes(DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& exprBuilder) const
{
    DimsExprs const& scores = inputs[0];  // [N, K, H, W]
    DimsExprs const& patches = inputs[1]; // [N, K, C, kh, kw]
    DimsExprs& out = outputs[0];
    out.nbDims = 4;
    out.d[0] = scores.d[0];
    out.d[1] = patches.d[2];
    out.d[2] = foldedExtent(exprBuilder, *scores.d[2], *patches.d[3], mStride, mPadding);
    out.d[3] = foldedExtent(exprBuilder, *scores.d[3], *patches.d[4], mStride, mPadding);
    if (out.d[2] == nullptr || out.d[3] == nullptr)
    {
        throw PluginError("IExprBuilder returned no expression");
    }
}

void CrossScaleFoldPlugin::doCheckShapes(Dims const* dims) const
{
    Dims const& scores = dims[0];
    Dims const& patches = dims[1];
    if (patches.d[0] != scores.d[0] || patches.d[1] != scores.d[1])
    {
        throw PluginError("shapes disagree: scores " + dimsString(scores) + ", patches " + dimsString(patches)
            + " (expected [N, K, H, W] and [N, K, C, kh, kw])");
    }
}

size_t CrossScaleFoldPlugin::doWorkspaceSize(Dims const* dims, DataType type) const
{
    Dims const& s = dims[0];
    Dims const& p = dims[1];
    size_t bytes{};
    checkStatus(srd_cross_scale_fold_workspace_size(
                    s.d[0], s.d[1], s.d[2], s.d[3], p.d[2], p.d[3], p.d[4], mStride, mPadding, toSrdType(type), &bytes),
        "srd_cross_scale_fold_workspace_size");
    return bytes;
}

void CrossScaleFoldPlugin::doEnqueue(EnqueueArgs const& call) const
{
    Dims const& s = call.inputDesc[0].dims;
    Dims const& p = call.inputDesc[1].dims;
    checkStatus(srd_cross_scale_fold(call.inputs[0], call.inputs[1], call.outputs[0], s.d[0], s.d[1], s.d[2], s.d[3],
                    p.d[2], p.d[3], p.d[4], mStride, mPadding, toSrdType(call.inputDesc[0].type), call.workspace,
                    call.workspaceBytes, static_cast<void*>(call.stream)),
        "srd_cross_scale_fold");
}

} // namespace trt
} // namespace srdeploy
