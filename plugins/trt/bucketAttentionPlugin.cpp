#include "bucketAttentionPlugin.h"

#include <cmath>
#include <sstream>

namespace srdeploy
{
namespace trt
{

std::vector<FieldSpec> BucketAttentionPlugin::fieldSpecs()
{
    return {{"chunk_size", PluginFieldType::kINT32}, {"n_hashes", PluginFieldType::kINT32},
        {"eps", PluginFieldType::kFLOAT32}};
}

BucketAttentionPlugin::BucketAttentionPlugin(FieldReader const& fields)
    : mChunkSize(fields.getInt("chunk_size"))
    , mNHashes(fields.getInt("n_hashes"))
    , mEps(fields.getFloat("eps"))
{
    if (mChunkSize <= 0 || mNHashes <= 0 || !(mEps >= 0.F) || !std::isfinite(mEps))
    {
        std::ostringstream os;
        os << "chunk_size and n_hashes must be > 0 and eps finite and >= 0, got chunk_size=" << mChunkSize
           << " n_hashes=" << mNHashes << " eps=" << mEps;
        throw PluginError(os.str());
    }
    std::ostringstream os;
    os << "chunk_size=" << mChunkSize << " n_hashes=" << mNHashes << " eps=" << mEps;
    describe(os.str());
}

void BucketAttentionPlugin::appendFields(std::vector<PluginField>& fields)
{
    fields.emplace_back("chunk_size", &mChunkSize, PluginFieldType::kINT32, 1);
    fields.emplace_back("n_hashes", &mNHashes, PluginFieldType::kINT32, 1);
    fields.emplace_back("eps", &mEps, PluginFieldType::kFLOAT32, 1);
}

void BucketAttentionPlugin::doOutputDataTypes(DataType* outputTypes, DataType const* inputTypes) const
{
    (void) toSrdType(inputTypes[0]);
    if (inputTypes[1] != inputTypes[0])
    {
        throw PluginError(std::string("q and v must have one type, got ") + typeName(inputTypes[0]) + " and "
            + typeName(inputTypes[1]) + " (export the graph in one precision)");
    }
    if (inputTypes[2] != DataType::kINT32 || inputTypes[3] != DataType::kINT32)
    {
        throw PluginError("order and rank must be kINT32");
    }
    outputTypes[0] = inputTypes[1];
}

void BucketAttentionPlugin::doOutputShapes(
    DimsExprs const* inputs, DimsExprs* outputs, IExprBuilder& /* exprBuilder */) const
{
    if (inputs[1].nbDims != 3)
    {
        throw PluginError("v must be [N, L, C], got rank " + std::to_string(inputs[1].nbDims));
    }
    outputs[0] = inputs[1]; // out: shaped like v
}

bool BucketAttentionPlugin::doSupportsType(int32_t pos, DynamicPluginTensorDesc const* inOut) const noexcept
{
    DataType const type = inOut[pos].desc.type;
    switch (pos)
    {
    case 0: return type == DataType::kFLOAT || type == DataType::kHALF; // q
    case 2:
    case 3: return type == DataType::kINT32; // order, rank
    default: return type == inOut[0].desc.type; // v and out: the type of q
    }
}

void BucketAttentionPlugin::doConfigure(DynamicPluginTensorDesc const* in) const
{
    // Ranks and types here; the extents of a dynamic profile are checked per shape in onShapeChange
    // (the maxima of derived extents, like R*L, need not agree exactly).
    requireRank(in[0].max, 3, "q");
    requireRank(in[1].max, 3, "v");
    requireRank(in[2].max, 2, "order");
    requireRank(in[3].max, 2, "rank");
    (void) toSrdType(in[0].desc.type);
    if (in[1].desc.type != in[0].desc.type || in[2].desc.type != DataType::kINT32 || in[3].desc.type != DataType::kINT32)
    {
        throw PluginError(std::string("types must be q, v: one of kFLOAT/kHALF, order, rank: kINT32; got ")
            + typeName(in[0].desc.type) + ", " + typeName(in[1].desc.type) + ", " + typeName(in[2].desc.type) + ", "
            + typeName(in[3].desc.type));
    }
    if (in[0].min.nbDims == 3 && in[0].min.d[1] < mChunkSize)
    {
        std::ostringstream os;
        os << "the profile allows L = " << in[0].min.d[1] << " < chunk_size = " << mChunkSize
           << " (outside NLSN's domain): raise the profile's minimum input size";
        throw PluginError(os.str());
    }
    if (isFixed(in[0]) && isFixed(in[1]) && isFixed(in[2]) && isFixed(in[3]))
    {
        Dims const dims[kNB_INPUTS] = {in[0].max, in[1].max, in[2].max, in[3].max};
        doCheckShapes(dims); // a fixed profile whose extents disagree can never run
    }
}

void BucketAttentionPlugin::doCheckShapes(Dims const* dims) const
{
    Dims const& q = dims[0];
    Dims const& v = dims[1];
    Dims const& order = dims[2];
    Dims const& rank = dims[3];
    requireRank(q, 3, "q");
    requireRank(v, 3, "v");
    requireRank(order, 2, "order");
    requireRank(rank, 2, "rank");
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
    requireRank(q, 3, "q");
    requireRank(v, 3, "v");
    if (volume(v) == 0 || volume(q) == 0)
    {
        return 0;
    }
    size_t bytes{};
    checkStatus(srd_bucket_attention_workspace_size(
                    q.d[0], q.d[1], q.d[2], v.d[2], mChunkSize, mNHashes, toSrdType(type), &bytes),
        "srd_bucket_attention_workspace_size");
    return bytes;
}

void BucketAttentionPlugin::doEnqueue(PluginTensorDesc const* inputDesc, void const* const* inputs,
    void* const* outputs, void* workspace, size_t workspaceBytes, cudaStream_t stream) const
{
    Dims const& q = inputDesc[0].dims;
    Dims const& v = inputDesc[1].dims;
    if (volume(q) == 0 || volume(v) == 0)
    {
        return;
    }
    checkStatus(srd_bucket_attention(inputs[0], inputs[1], static_cast<int32_t const*>(inputs[2]),
                    static_cast<int32_t const*>(inputs[3]), outputs[0], q.d[0], q.d[1], q.d[2], v.d[2], mChunkSize,
                    mNHashes, mEps, toSrdType(inputDesc[0].type), workspace, workspaceBytes,
                    static_cast<void*>(stream)),
        "srd_bucket_attention");
}

} // namespace trt
} // namespace srdeploy
