#include "bucketSortPlugin.h"

namespace srdeploy
{
namespace trt
{

std::vector<Attribute<BucketSortPlugin>> BucketSortPlugin::attributes()
{
    return {{"num_buckets", &BucketSortPlugin::mNumBuckets, Bound::kPOSITIVE}};
}

void BucketSortPlugin::doOutputShapes(
    DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& /* exprBuilder */) const
{
    outputs[0] = inputs[0]; // order: shaped like codes
    outputs[1] = inputs[0]; // rank: shaped like codes
}

size_t BucketSortPlugin::doWorkspaceSize(Dims const* dims, DataType /* type */) const
{
    Dims const& codes = dims[0];
    size_t bytes{};
    checkStatus(
        srd_bucket_sort_workspace_size(codes.d[0], codes.d[1], mNumBuckets, &bytes), "srd_bucket_sort_workspace_size");
    return bytes;
}

void BucketSortPlugin::doEnqueue(EnqueueArgs const& call) const
{
    Dims const& codes = call.inputDesc[0].dims;
    checkStatus(srd_bucket_sort(static_cast<int32_t const*>(call.inputs[0]), static_cast<int32_t*>(call.outputs[0]),
                    static_cast<int32_t*>(call.outputs[1]), codes.d[0], codes.d[1], mNumBuckets, call.workspace,
                    call.workspaceBytes, static_cast<void*>(call.stream)),
        "srd_bucket_sort");
}

} // namespace trt
} // namespace srdeploy
