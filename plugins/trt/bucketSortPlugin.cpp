#include "bucketSortPlugin.h"

namespace srdeploy
{
namespace trt
{

namespace
{
constexpr int32_t kINPUTS = 1;
constexpr int32_t kOUTPUTS = 2;

void checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    if (nbInputs != kINPUTS || nbOutputs != kOUTPUTS)
    {
        throw PluginError("takes 1 input (codes) and gives 2 outputs (order, rank), got " + std::to_string(nbInputs)
            + " and " + std::to_string(nbOutputs));
    }
}

size_t workspaceFor(Dims const& codes, int32_t numBuckets)
{
    if (volume(codes) == 0)
    {
        return 0;
    }
    size_t bytes{};
    checkStatus(srd_bucket_sort_workspace_size(codes.d[0], codes.d[1], numBuckets, &bytes),
        "srd_bucket_sort_workspace_size");
    return bytes;
}
} // namespace

std::vector<FieldSpec> BucketSortPlugin::fieldSpecs()
{
    return {{"num_buckets", PluginFieldType::kINT32}};
}

BucketSortPlugin::BucketSortPlugin(FieldReader const& fields)
    : mNumBuckets(fields.getInt("num_buckets"))
{
    if (mNumBuckets <= 0)
    {
        throw PluginError("num_buckets must be > 0, got " + std::to_string(mNumBuckets));
    }
    mMetadata = "num_buckets=" + std::to_string(mNumBuckets);
}

void BucketSortPlugin::appendFields(std::vector<PluginField>& fields)
{
    fields.emplace_back("num_buckets", &mNumBuckets, PluginFieldType::kINT32, 1);
}

int32_t BucketSortPlugin::getNbOutputs() const noexcept
{
    return kOUTPUTS;
}

int32_t BucketSortPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        if (inputTypes[0] != DataType::kINT32)
        {
            throw PluginError(std::string("codes must be kINT32, got ") + typeName(inputTypes[0]));
        }
        outputTypes[0] = DataType::kINT32;
        outputTypes[1] = DataType::kINT32;
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

int32_t BucketSortPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /* shapeInputs */,
    int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        if (inputs[0].nbDims != 2)
        {
            throw PluginError("codes must be [B, M], got rank " + std::to_string(inputs[0].nbDims));
        }
        outputs[0] = inputs[0]; // order: shaped like codes
        outputs[1] = inputs[0]; // rank: shaped like codes
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

bool BucketSortPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kINPUTS || nbOutputs != kOUTPUTS || pos < 0 || pos >= kINPUTS + kOUTPUTS)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    return desc.format == TensorFormat::kLINEAR && desc.type == DataType::kINT32;
}

int32_t BucketSortPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        requireRank(in[0].max, 2, "codes");
        (void) workspaceFor(in[0].max, mNumBuckets); // the largest problem of the profile must be valid
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

size_t BucketSortPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        return workspaceFor(inputs[0].max, mNumBuckets);
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return 0;
}

int32_t BucketSortPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        requireRank(in[0].dims, 2, "codes");
        mWorkspaceBytes = workspaceFor(in[0].dims, mNumBuckets);
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

int32_t BucketSortPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& codes = inputDesc[0].dims;
        if (volume(codes) == 0)
        {
            return 0;
        }
        checkStatus(srd_bucket_sort(static_cast<int32_t const*>(inputs[0]), static_cast<int32_t*>(outputs[0]),
                        static_cast<int32_t*>(outputs[1]), codes.d[0], codes.d[1], mNumBuckets, workspace,
                        mWorkspaceBytes, static_cast<void*>(stream)),
            "srd_bucket_sort");
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
