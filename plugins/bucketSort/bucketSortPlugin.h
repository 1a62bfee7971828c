/*
 * BucketSort (srdeploy, version 1): codes int32 [B, M] -> order, rank int32 [B, M].
 * Attribute: num_buckets (INT, > 0). Kernel: srd_bucket_sort (bucketSortKernel.cu).
 */
#ifndef SRDEPLOY_TRT_BUCKET_SORT_PLUGIN_H
#define SRDEPLOY_TRT_BUCKET_SORT_PLUGIN_H

#include "../trt/srdPluginBase.h"

namespace srdeploy
{
namespace trt
{

class BucketSortPlugin final : public PluginBase<BucketSortPlugin>
{
public:
    static constexpr char const* kNAME = "BucketSort";
    static constexpr int32_t kNB_INPUTS = 1;
    static constexpr TensorSpec kTENSORS[]
        = {{"codes", 2, TypeRule::kINDEX}, {"order", 2, TypeRule::kINDEX}, {"rank", 2, TypeRule::kINDEX}};
    static std::vector<Attribute<BucketSortPlugin>> attributes();

    void doOutputShapes(DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& exprBuilder) const;
    size_t doWorkspaceSize(Dims const* dims, DataType type) const;
    void doEnqueue(EnqueueArgs const& call) const;

private:
    int32_t mNumBuckets{};
};

using BucketSortPluginCreator = PluginCreator<BucketSortPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_BUCKET_SORT_PLUGIN_H
