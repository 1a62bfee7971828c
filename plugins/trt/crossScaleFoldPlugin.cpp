#include "crossScaleFoldPlugin.h"

namespace srdeploy
{
namespace trt
{

namespace
{
//! (in - 1) * stride - 2 * padding + kernel, as a dimension expression.
IDimensionExpr const* foldedExtent(IExprBuilder& eb, IDimensionExpr const& in, IDimensionExpr const& kernel,
    int32_t stride, int32_t padding)
{
    using nvinfer1::DimensionOperation;
    IDimensionExpr const* inMinusOne = eb.operation(DimensionOperation::kSUB, in, *eb.constant(1));
    IDimensionExpr const* scaled = eb.operation(DimensionOperation::kPROD, *inMinusOne, *eb.constant(stride));
    IDimensionExpr const* withKernel = eb.operation(DimensionOperation::kSUM, *scaled, kernel);
    return eb.operation(DimensionOperation::kSUB, *withKernel, *eb.constant(2 * static_cast<int64_t>(padding)));
}
} // namespace

std::vector<FieldSpec> CrossScaleFoldPlugin::fieldSpecs()
{
    return {{"stride", PluginFieldType::kINT32}, {"padding", PluginFieldType::kINT32}};
}

CrossScaleFoldPlugin::CrossScaleFoldPlugin(FieldReader const& fields)
    : mStride(fields.getInt("stride"))
    , mPadding(fields.getInt("padding"))
{
    if (mStride <= 0 || mPadding < 0)
    {
        throw PluginError("stride must be > 0 and padding >= 0, got stride=" + std::to_string(mStride)
            + " padding=" + std::to_string(mPadding));
    }
    describe("stride=" + std::to_string(mStride) + " padding=" + std::to_string(mPadding));
}

void CrossScaleFoldPlugin::appendFields(std::vector<PluginField>& fields)
{
    fields.emplace_back("stride", &mStride, PluginFieldType::kINT32, 1);
    fields.emplace_back("padding", &mPadding, PluginFieldType::kINT32, 1);
}

void CrossScaleFoldPlugin::doOutputDataTypes(DataType* outputTypes, DataType const* inputTypes) const
{
    (void) toSrdType(inputTypes[0]);
    if (inputTypes[1] != inputTypes[0])
    {
        throw PluginError(std::string("scores and patches must have one type, got ") + typeName(inputTypes[0])
            + " and " + typeName(inputTypes[1]) + " (export the graph in one precision)");
    }
    outputTypes[0] = inputTypes[0];
}

void CrossScaleFoldPlugin::doOutputShapes(DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& exprBuilder) const
{
    DimsExprs const& scores = inputs[0];  // [N, K, H, W]
    DimsExprs const& patches = inputs[1]; // [N, K, C, kh, kw]
    if (scores.nbDims != 4 || patches.nbDims != 5)
    {
        throw PluginError("scores must be [N, K, H, W] and patches [N, K, C, kh, kw], got ranks "
            + std::to_string(scores.nbDims) + " and " + std::to_string(patches.nbDims));
    }
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

bool CrossScaleFoldPlugin::doSupportsType(int32_t pos, DynamicPluginTensorDesc const* inOut) const noexcept
{
    DataType const type = inOut[pos].desc.type;
    if (pos == 0)
    {
        return type == DataType::kFLOAT || type == DataType::kHALF; // scores
    }
    return type == inOut[0].desc.type; // patches and out: the type of scores
}

void CrossScaleFoldPlugin::doConfigure(DynamicPluginTensorDesc const* in) const
{
    // Ranks and types here; the extents of a dynamic profile are checked per shape in onShapeChange.
    requireRank(in[0].max, 4, "scores");
    requireRank(in[1].max, 5, "patches");
    (void) toSrdType(in[0].desc.type);
    if (in[1].desc.type != in[0].desc.type)
    {
        throw PluginError(std::string("scores and patches must have one type, got ") + typeName(in[0].desc.type)
            + " and " + typeName(in[1].desc.type));
    }
    if (isFixed(in[0]) && isFixed(in[1]))
    {
        Dims const dims[kNB_INPUTS] = {in[0].max, in[1].max};
        doCheckShapes(dims); // a fixed profile whose extents disagree can never run
    }
}

void CrossScaleFoldPlugin::doCheckShapes(Dims const* dims) const
{
    Dims const& scores = dims[0];
    Dims const& patches = dims[1];
    requireRank(scores, 4, "scores");
    requireRank(patches, 5, "patches");
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
    requireRank(s, 4, "scores");
    requireRank(p, 5, "patches");
    if (volume(s) == 0 || volume(p) == 0)
    {
        return 0;
    }
    size_t bytes{};
    checkStatus(srd_cross_scale_fold_workspace_size(
                    s.d[0], s.d[1], s.d[2], s.d[3], p.d[2], p.d[3], p.d[4], mStride, mPadding, toSrdType(type), &bytes),
        "srd_cross_scale_fold_workspace_size");
    return bytes;
}

void CrossScaleFoldPlugin::doEnqueue(PluginTensorDesc const* inputDesc, void const* const* inputs,
    void* const* outputs, void* workspace, size_t workspaceBytes, cudaStream_t stream) const
{
    Dims const& s = inputDesc[0].dims;
    Dims const& p = inputDesc[1].dims;
    if (volume(s) == 0 || volume(p) == 0)
    {
        return;
    }
    checkStatus(srd_cross_scale_fold(inputs[0], inputs[1], outputs[0], s.d[0], s.d[1], s.d[2], s.d[3], p.d[2], p.d[3],
                    p.d[4], mStride, mPadding, toSrdType(inputDesc[0].type), workspace, workspaceBytes,
                    static_cast<void*>(stream)),
        "srd_cross_scale_fold");
}

} // namespace trt
} // namespace srdeploy
