#include "bucketAttentionPlugin.h"

#include <sstream>

namespace srdeploy
{
namespace trt
{

std::vector<Attribute<BucketAttentionPlugin>> BucketAttentionPlugin::attributes()
{
    return {{"chunk_size", &BucketAttentionPlugin::mChunkSize, Bound::kPOSITIVE},
        {"n_hashes", &BucketAttentionPlugin::mNHashes, Bound::kPOSITIVE},
        {"eps", &BucketAttentionPlugin::mEps, Bound::kNON_NEGATIVE}};
}

void BucketAttentionPlugin::doOutputShapes(
    DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& /* exprBuilder */) const
{
    outputs[0] = inputs[1]; // out: shaped like v
}

void BucketAttentionPlugin::doCheckProfile(DynamicPluginTensorDesc const* in) const
{
    if (in[0].min.nbDims == 3 && in[0].min.d[1] < mChunkSize)
    {
        std::ostringstream os;
        os << "the profile allows L = " << in[0].min.d[1] << " < chunk_size = " << mChunkSize
           << " (outside NLSN's domain): raise the profile's minimum input size";
        throw PluginError(os.str());
    }
}

void BucketAttentionPlugin::doCheckShapes(Dims const* dims) const
{
    Dims const& q = dims[0];
    Dims const& v = dims[1];
    Dims const& order = dims[2];
    Dims const& rank = dims[3];
    bool const ok = v.d[0] == q.d[0] && v.d[1] == q.d[1] && order.d[0] == q.d[0] && order.d[1] == mNHashes * q.d[1]
        && rank.d[0] == order.d[0] && rank.d[1] == order.d[1];
    if (!ok)
    {
        std::ostringstream os;
        os << "shapes disagree: q " << dimsString(q) << ", v " << dimsString(v) << ", order " << dimsString(order)
           << ", rank " << dimsString(rank) << " (expected [N, L, c], [N, L, C], [N, " << mNHashes << "*L] twice)";
        throw PluginError(os.str());
    }
}

size_t BucketAttentionPlugin::doWorkspaceSize(Dims const* dims, DataType type) const
{
    Dims const& q = dims[0];
    Dims const& v = dims[1];
    size_t bytes{};
    checkStatus(srd_bucket_attention_workspace_size(
                    q.d[0], q.d[1], q.d[2], v.d[2], mChunkSize, mNHashes, toSrdType(type), &bytes),
        "srd_bucket_attention_workspace_size");
    return bytes;
}

void BucketAttentionPlugin::doEnqueue(EnqueueArgs const& call) const
{
    Dims const& q = call.inputDesc[0].dims;
    Dims const& v = call.inputDesc[1].dims;
    checkStatus(srd_bucket_attention(call.inputs[0], call.inputs[1], static_cast<int32_t const*>(call.inputs[2]),
                    static_cast<int32_t const*>(call.inputs[3]), call.outputs[0], q.d[0], q.d[1], q.d[2], v.d[2],
                    mChunkSize, mNHashes, mEps, toSrdType(call.inputDesc[0].type), call.workspace, call.workspaceBytes,
                    static_cast<void*>(call.stream)),
        "srd_bucket_attention");
}

} // namespace trt
} // namespace srdeploy
