/*
 * BucketSort (srdeploy, version 1): codes int32 [B, M] -> order, rank int32 [B, M].
 * Attribute: num_buckets (INT). Kernel: srd_bucket_sort (plugins/bucketSort/).
 */
#ifndef SRDEPLOY_TRT_BUCKET_SORT_PLUGIN_H
#define SRDEPLOY_TRT_BUCKET_SORT_PLUGIN_H

#include "srdPluginCommon.h"

namespace srdeploy
{
namespace trt
{

class BucketSortPlugin final : public PluginBase<BucketSortPlugin>
{
public:
    static constexpr char const* kNAME = "BucketSort";
    static constexpr int32_t kNB_INPUTS = 1;
    static constexpr int32_t kNB_OUTPUTS = 2;
    static constexpr char const* kIO = "takes 1 input (codes) and gives 2 outputs (order, rank)";
    static std::vector<FieldSpec> fieldSpecs();

    explicit BucketSortPlugin(FieldReader const& fields);
    BucketSortPlugin(BucketSortPlugin const&) = default;
    ~BucketSortPlugin() noexcept override = default;

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
    int32_t mNumBuckets{};
};

using BucketSortPluginCreator = PluginCreator<BucketSortPlugin>;

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_BUCKET_SORT_PLUGIN_H
