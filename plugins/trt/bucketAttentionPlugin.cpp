#include "bucketAttentionPlugin.h"

#include <cmath>
#include <sstream>

namespace srdeploy
{
namespace trt
{

namespace
{
constexpr int32_t kINPUTS = 4; // q, v, order, rank
constexpr int32_t kOUTPUTS = 1;

void checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    if (nbInputs != kINPUTS || nbOutputs != kOUTPUTS)
    {
        throw PluginError("takes 4 inputs (q, v, order, rank) and gives 1 output, got " + std::to_string(nbInputs)
            + " and " + std::to_string(nbOutputs));
    }
}

//! q [N, L, c], v [N, L, C], order and rank [N, R*L]: ranks and agreeing extents.
void checkShapes(Dims const& q, Dims const& v, Dims const& order, Dims const& rank, int32_t nHashes)
{
    requireRank(q, 3, "q");
    requireRank(v, 3, "v");
    requireRank(order, 2, "order");
    requireRank(rank, 2, "rank");
    bool const ok = v.d[0] == q.d[0] && v.d[1] == q.d[1] && order.d[0] == q.d[0] && order.d[1] == nHashes * q.d[1]
        && rank.d[0] == order.d[0] && rank.d[1] == order.d[1];
    if (!ok)
    {
        std::ostringstream os;
        os << "shapes disagree: q " << dimsString(q) << ", v " << dimsString(v) << ", order " << dimsString(order)
           << ", rank " << dimsString(rank) << " (expected [N, L, c], [N, L, C], [N, " << nHashes << "*L] twice)";
        throw PluginError(os.str());
    }
}
} // namespace

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
    mMetadata = os.str();
}

void BucketAttentionPlugin::appendFields(std::vector<PluginField>& fields)
{
    fields.emplace_back("chunk_size", &mChunkSize, PluginFieldType::kINT32, 1);
    fields.emplace_back("n_hashes", &mNHashes, PluginFieldType::kINT32, 1);
    fields.emplace_back("eps", &mEps, PluginFieldType::kFLOAT32, 1);
}

int32_t BucketAttentionPlugin::getNbOutputs() const noexcept
{
    return kOUTPUTS;
}

int32_t BucketAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
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
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

int32_t BucketAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        if (inputs[1].nbDims != 3)
        {
            throw PluginError("v must be [N, L, C], got rank " + std::to_string(inputs[1].nbDims));
        }
        outputs[0] = inputs[1]; // out: shaped like v
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

bool BucketAttentionPlugin::supportsFormatCombination(
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
    switch (pos)
    {
    case 0: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF; // q
    case 2:
    case 3: return desc.type == DataType::kINT32; // order, rank
    default: return desc.type == inOut[0].desc.type; // v and out: the type of q
    }
}

int32_t BucketAttentionPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        checkShapes(in[0].max, in[1].max, in[2].max, in[3].max, mNHashes);
        if (in[0].min.nbDims == 3 && in[0].min.d[1] < mChunkSize)
        {
            std::ostringstream os;
            os << "the profile allows L = " << in[0].min.d[1] << " < chunk_size = " << mChunkSize
               << " (outside NLSN's domain): raise the profile's minimum input size";
            throw PluginError(os.str());
        }
        Dims const& q = in[0].max;
        Dims const& v = in[1].max;
        size_t bytes{};
        checkStatus(srd_bucket_attention_workspace_size(q.d[0], q.d[1], q.d[2], v.d[2], mChunkSize, mNHashes,
                        toSrdType(in[0].desc.type), &bytes),
            "srd_bucket_attention_workspace_size (largest shapes of the profile)");
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

size_t BucketAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        Dims const& q = inputs[0].max;
        Dims const& v = inputs[1].max;
        requireRank(q, 3, "q");
        requireRank(v, 3, "v");
        if (volume(v) == 0 || volume(q) == 0)
        {
            return 0;
        }
        size_t bytes{};
        checkStatus(srd_bucket_attention_workspace_size(q.d[0], q.d[1], q.d[2], v.d[2], mChunkSize, mNHashes,
                        toSrdType(inputs[0].desc.type), &bytes),
            "srd_bucket_attention_workspace_size");
        return bytes;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return 0;
}

int32_t BucketAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        checkCounts(nbInputs, nbOutputs);
        Dims const& q = in[0].dims;
        Dims const& v = in[1].dims;
        checkShapes(q, v, in[2].dims, in[3].dims, mNHashes);
        mWorkspaceBytes = 0;
        if (volume(q) != 0 && volume(v) != 0)
        {
            checkStatus(srd_bucket_attention_workspace_size(q.d[0], q.d[1], q.d[2], v.d[2], mChunkSize, mNHashes,
                            toSrdType(in[0].type), &mWorkspaceBytes),
                "srd_bucket_attention_workspace_size");
        }
        return 0;
    }
    catch (...)
    {
        logCurrentException(kNAME);
    }
    return -1;
}

int32_t BucketAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& q = inputDesc[0].dims;
        Dims const& v = inputDesc[1].dims;
        if (volume(q) == 0 || volume(v) == 0)
        {
            return 0;
        }
        checkStatus(srd_bucket_attention(inputs[0], inputs[1], static_cast<int32_t const*>(inputs[2]),
                        static_cast<int32_t const*>(inputs[3]), outputs[0], q.d[0], q.d[1], q.d[2], v.d[2],
                        mChunkSize, mNHashes, mEps, toSrdType(inputDesc[0].type), workspace, mWorkspaceBytes,
                        static_cast<void*>(stream)),
            "srd_bucket_attention");
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
