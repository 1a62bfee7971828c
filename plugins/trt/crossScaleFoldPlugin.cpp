#include "crossScaleFoldPlugin.h"

#include <sstream>

namespace srdeploy
{
namespace trt
{

namespace
{
constexpr int32_t kINPUTS = 2; // scores, patches
constexpr int32_t kOUTPUTS = 1;

void checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    if (nbInputs != kINPUTS || nbOutputs != kOUTPUTS)
    {
        throw PluginError("takes 2 inputs (scores, patches) and gives 1 output, got " + std::to_string(nbInputs)
            + " and " + std::to_string(nbOutputs));
    }
}

//! scores [N, K, H, W], patches [N, K, C, kh, kw]: ranks and agreeing extents.
void checkShapes(Dims const& scores, Dims const& patches)
{
    requireRank(scores, 4, "scores");
    requireRank(patches, 5, "patches");
    if (patches.d[0] != scores.d[0] || patches.d[1] != scores.d[1])
    {
        throw PluginError("shapes disagree: scores " + dimsString(scores) + ", patches " + dimsString(patches)
            + " (expected [N, K, H, W] and [N, K, C, kh, kw])");
    }
}

size_t workspaceFor(Dims const& s, Dims const& p, int32_t stride, int32_t padding, DataType type, char const* what)
{
    if (volume(s) == 0 || volume(p) == 0)
    {
        return 0;
    }
    size_t bytes{};
    checkStatus(srd_cross_scale_fold_workspace_size(
                    s.d[0], s.d[1], s.d[2], s.d[3], p.d[2], p.d[3], p.d[4], stride, padding, toSrdType(type), &bytes),
        what);
    return bytes;
}

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
    mMetadata = "stride=" + std::to_string(mStride) + " padding=" + std::to_string(mPadding);
}

void CrossScaleFoldPlugin::appendFields(std::vector<PluginField>& fields)
{
    fields.emplace_back("stride", &mStride, PluginFieldType::kINT32, 1);
    fields.emplace_back("padding", &mPadding, PluginFieldType::kINT32, 1);
}

int32_t CrossScaleFoldPlugin::getNbOutputs() const noexcept
{
    return kOUTPUTS;
}

int32_t CrossScaleFoldPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        (void) toSrdType(inputTypes[0]);
        if (inputTypes[1] != inputTypes[0])
        {
            throw PluginError(std::string("scores and patches must have one type, got ") + typeName(inputTypes[0])
                + " and " + typeName(inputTypes[1]) + " (export the graph in one precision)");
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

int32_t CrossScaleFoldPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
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
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

bool CrossScaleFoldPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kINPUTS || nbOutputs != kOUTPUTS || pos < 0 || pos >= kINPUTS + kOUTPUTS)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF; // scores
    }
    return desc.type == inOut[0].desc.type; // patches and out: the type of scores
}

int32_t CrossScaleFoldPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        checkShapes(in[0].max, in[1].max);
        (void) workspaceFor(in[0].max, in[1].max, mStride, mPadding, in[0].desc.type,
            "srd_cross_scale_fold_workspace_size (largest shapes of the profile)");
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

size_t CrossScaleFoldPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        checkShapes(inputs[0].max, inputs[1].max);
        return workspaceFor(inputs[0].max, inputs[1].max, mStride, mPadding, inputs[0].desc.type,
            "srd_cross_scale_fold_workspace_size");
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return 0;
}

int32_t CrossScaleFoldPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        checkShapes(in[0].dims, in[1].dims);
        mWorkspaceBytes = workspaceFor(in[0].dims, in[1].dims, mStride, mPadding, in[0].type,
            "srd_cross_scale_fold_workspace_size");
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

int32_t CrossScaleFoldPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& s = inputDesc[0].dims;
        Dims const& p = inputDesc[1].dims;
        if (volume(s) == 0 || volume(p) == 0)
        {
            return 0;
        }
        checkStatus(srd_cross_scale_fold(inputs[0], inputs[1], outputs[0], s.d[0], s.d[1], s.d[2], s.d[3], p.d[2],
                        p.d[3], p.d[4], mStride, mPadding, toSrdType(inputDesc[0].type), workspace, mWorkspaceBytes,
                        static_cast<void*>(stream)),
            "srd_cross_scale_fold");
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

} // namespace trt
} // namespace srdeploy
