#include "bucketSortPlugin.h"

namespace srdeploy
{
namespace trt
{

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
    describe("num_buckets=" + std::to_string(mNumBuckets));
}

void BucketSortPlugin::appendFields(std::vector<PluginField>& fields)
{
    fields.emplace_back("num_buckets", &mNumBuckets, PluginFieldType::kINT32, 1);
}

void BucketSortPlugin::doOutputDataTypes(DataType* outputTypes, DataType const* inputTypes) const
{
    if (inputTypes[0] != DataType::kINT32)
    {
        throw PluginError(std::string("codes must be kINT32, got ") + typeName(inputTypes[0]));
    }
    outputTypes[0] = DataType::kINT32;
    outputTypes[1] = DataType::kINT32;
}

void BucketSortPlugin::doOutputShapes(DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& /* exprBuilder */) const
{
    if (inputs[0].nbDims != 2)
    {
        throw PluginError("codes must be [B, M], got rank " + std::to_string(inputs[0].nbDims));
    }
    outputs[0] = inputs[0]; // order: shaped like codes
    outputs[1] = inputs[0]; // rank: shaped like codes
}

bool BucketSortPlugin::doSupportsType(int32_t pos, DynamicPluginTensorDesc const* inOut) const noexcept
{
    return inOut[pos].desc.type == DataType::kINT32;
}

void BucketSortPlugin::doConfigure(DynamicPluginTensorDesc const* in) const
{
    requireRank(in[0].max, 2, "codes");
}

void BucketSortPlugin::doCheckShapes(Dims const* dims) const
{
    requireRank(dims[0], 2, "codes");
}

size_t BucketSortPlugin::doWorkspaceSize(Dims const* dims, DataType /* type */) const
{
    Dims const& codes = dims[0];
    requireRank(codes, 2, "codes");
    if (volume(codes) == 0)
    {
        return 0;
    }
    size_t bytes{};
    checkStatus(srd_bucket_sort_workspace_size(codes.d[0], codes.d[1], mNumBuckets, &bytes),
        "srd_bucket_sort_workspace_size");
    return bytes;
}

void BucketSortPlugin::doEnqueue(PluginTensorDesc const* inputDesc, void const* const* inputs, void* const* outputs,
    void* workspace, size_t workspaceBytes, cudaStream_t stream) const
{
    Dims const& codes = inputDesc[0].dims;
    if (volume(codes) == 0)
    {
        return;
    }
    checkStatus(srd_bucket_sort(static_cast<int32_t const*>(inputs[0]), static_cast<int32_t*>(outputs[0]),
                    static_cast<int32_t*>(outputs[1]), codes.d[0], codes.d[1], mNumBuckets, workspace,
                    workspaceBytes, static_cast<void*>(stream)),
        "srd_bucket_sort");
}

} // namespace trt
} // namespace srdeploy
