/*
 * srdPluginBase.h: the class every srdeploy TensorRT plugin is, and its creator.
 *
 *  - PluginBase<Op>: the IPluginV3 / IPluginV3OneCore / IPluginV3OneBuild / IPluginV3OneRuntime
 *    object. It owns every noexcept entry point (count checks, catch, log), and everything an op
 *    states as data (srdPluginCommon.h): the counts, ranks and types of its tensors (TensorSpec), its
 *    attributes with their bounds (Attribute: reading, checking, serialisation, metadata, timing
 *    cache ID), empty tensors (nothing to do), the memo of the last shapes.
 *  - PluginCreator<Op>: its IPluginCreatorV3One, with the fields of the op's attribute table.
 *
 * What an op class (<op>/<op>Plugin.h) provides:
 *   kNAME, kNB_INPUTS, kTENSORS (TensorSpec of the inputs, then the outputs), attributes()
 *   (a table of Attribute: name, the member holding it, its bound), and the throwing methods
 *     doOutputShapes(inputs, outputs, exprBuilder)   output shapes as expressions (ranks checked)
 *     doWorkspaceSize(dims, type)                    for non-empty input dims (profile maxima or actual)
 *     doEnqueue(EnqueueArgs)                         for non-empty inputs of checked shapes
 *   and, where the op needs more than ranks and types, the optional checks (defaults: none)
 *     doCheckProfile(in)                             configurePlugin: the profile (min, opt, max)
 *     doCheckShapes(dims)                            exact extents: actual dims, or a fixed profile's
 */
#ifndef SRDEPLOY_TRT_PLUGIN_BASE_H
#define SRDEPLOY_TRT_PLUGIN_BASE_H

#include "srdPluginCommon.h"

#include <locale>
#include <sstream>
#include <type_traits>

namespace srdeploy
{
namespace trt
{

//! Every IPluginV3 entry point of a plugin, noexcept: counts of inputs and outputs checked, errors
//! caught and logged as "[srdeploy] <op>: <reason>" and turned into -1 / 0 / false / nullptr.
//! Derived is the op class (see the top of this file for what it provides).
template <typename Derived>
class PluginBase : public IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    ~PluginBase() noexcept override = default;

    //! Reads the attributes from a field collection, checks their bounds and records the metadata
    //! (the creator calls this on a new plugin, at build and at runtime alike).
    void readAttributes(FieldReader const& fields)
    {
        std::ostringstream text;
        text.imbue(std::locale::classic()); // no digit grouping from a host program's global locale
        char const* separator = "";
        for (Attribute<Derived> const& attribute : Derived::attributes())
        {
            attribute.read(fields, self());
            text << separator;
            attribute.print(text, self());
            separator = " ";
        }
        mMetadata = text.str();
        mTimingCacheID
            = std::string(kPLUGIN_NAMESPACE) + "::" + Derived::kNAME + "/" + kPLUGIN_VERSION + " " + mMetadata;
    }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override
    {
        IPluginV3* copy{nullptr};
        guarded(Derived::kNAME, [&] { copy = new Derived(self()); });
        return copy;
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override
    {
        return Derived::kNAME;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPLUGIN_VERSION;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPLUGIN_NAMESPACE;
    }

    // IPluginV3OneBuild
    char const* getMetadataString() noexcept override
    {
        return mMetadata.c_str();
    }

    //! Non-null, so that a timing cache (trtexec --timingCacheFile) keeps this plugin's timings. TensorRT
    //! prefixes the I/O shapes and formats; the attributes are the rest of what the kernels depend on.
    char const* getTimingCacheID() noexcept override
    {
        return mTimingCacheID.c_str();
    }

    int32_t getNbOutputs() const noexcept override
    {
        return outputCount();
    }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            DataType const floating = checkInputTypes(Derived::kTENSORS, inputCount(), inputTypes);
            for (int32_t i = 0; i < outputCount(); ++i)
            {
                bool const index = Derived::kTENSORS[inputCount() + i].types == TypeRule::kINDEX;
                outputTypes[i] = index ? DataType::kINT32 : floating;
            }
        });
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /* shapeInputs */,
        int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            checkRanks(Derived::kTENSORS, inputs, inputCount());
            self().doOutputShapes(inputs, outputs, exprBuilder);
        });
    }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        // Asked many times while TensorRT searches formats: no logging, a plain no.
        return inOut != nullptr && nbInputs == inputCount() && nbOutputs == outputCount() && pos >= 0
            && pos < nbInputs + nbOutputs && inOut[pos].desc.format == TensorFormat::kLINEAR
            && supportsType(Derived::kTENSORS, pos, inOut);
    }

    //! Ranks and types, then the op's own profile check; exact extents only where the profile fixes
    //! every input (a fixed profile whose extents disagree can never run). In a dynamic profile the
    //! maxima of derived extents (R*L) need not agree exactly: onShapeChange checks each actual shape.
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
        DynamicPluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            std::array<Dims, Derived::kNB_INPUTS> maxima{};
            std::array<DataType, Derived::kNB_INPUTS> types{};
            bool fixed = true;
            for (int32_t i = 0; i < inputCount(); ++i)
            {
                maxima[i] = in[i].max;
                types[i] = in[i].desc.type;
                fixed = fixed && isFixed(in[i]);
            }
            checkRanks(Derived::kTENSORS, maxima.data(), inputCount());
            (void) checkInputTypes(Derived::kTENSORS, inputCount(), types.data());
            self().doCheckProfile(in);
            if (fixed)
            {
                self().doCheckShapes(maxima.data());
            }
        });
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept override
    {
        size_t bytes{0};
        guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            std::array<Dims, Derived::kNB_INPUTS> maxima{};
            for (int32_t i = 0; i < inputCount(); ++i)
            {
                maxima[i] = inputs[i].max; // the largest shapes of the profile
            }
            bytes = workspaceSize(maxima.data(), inputs[0].desc.type);
        });
        return bytes;
    }

    // IPluginV3OneRuntime
    IPluginV3* attachToContext(IPluginResourceContext* /* context */) noexcept override
    {
        return clone(); // no per-context resources: workspace comes from TensorRT
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        int32_t const status = guarded(Derived::kNAME, [&] {
            mSerialFields.clear();
            for (Attribute<Derived> const& attribute : Derived::attributes())
            {
                mSerialFields.push_back(attribute.field(self()));
            }
        });
        if (status != 0)
        {
            return nullptr;
        }
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }

    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */,
        int32_t nbOutputs) noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            if (mLastShapes.matches(in, nbInputs))
            {
                return; // mWorkspaceBytes still holds
            }
            mLastShapes.forget();
            auto const dims = dimsOf(in);
            checkRanks(Derived::kTENSORS, dims.data(), inputCount());
            self().doCheckShapes(dims.data());
            mWorkspaceBytes = workspaceSize(dims.data(), in[0].type);
            mLastShapes.remember(in, nbInputs);
        });
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            auto const dims = dimsOf(inputDesc);
            if (!anyEmpty(dims.data(), inputCount()))
            {
                self().doEnqueue(EnqueueArgs{inputDesc, inputs, outputs, workspace, mWorkspaceBytes, stream});
                return;
            }
            // An empty input computes nothing; refuse where an output is not empty too (CrossScaleFold
            // with K = 0, BucketAttention with c = 0) rather than leave that output unwritten.
            for (int32_t i = 0; i < outputCount(); ++i)
            {
                if (!anyEmpty(&outputDesc[i].dims, 1))
                {
                    throw PluginError("an empty input with a non-empty output is not supported");
                }
            }
        });
    }

protected:
    PluginBase() = default;
    PluginBase(PluginBase const& other)
        : IPluginV3(other)
        , nvinfer1::IPluginV3OneCore(other)
        , nvinfer1::IPluginV3OneBuild(other)
        , nvinfer1::IPluginV3OneRuntime(other)
        , mMetadata(other.mMetadata)
        , mTimingCacheID(other.mTimingCacheID)
        , mLastShapes(other.mLastShapes)
        , mWorkspaceBytes(other.mWorkspaceBytes)
    {
        // mSerialFields point into the object they were made for: rebuilt on demand, never copied.
    }
    PluginBase& operator=(PluginBase const&) = delete;

    // The optional checks (an op class declares its own to check more): none beyond ranks and types.
    void doCheckProfile(DynamicPluginTensorDesc const* /* in */) const {}
    void doCheckShapes(Dims const* /* dims */) const {}

private:
    // Functions, not constants: Derived is incomplete where this class is instantiated (as its base).
    static constexpr int32_t inputCount() noexcept
    {
        return Derived::kNB_INPUTS;
    }
    static constexpr int32_t outputCount() noexcept
    {
        return static_cast<int32_t>(std::extent<decltype(Derived::kTENSORS)>::value) - Derived::kNB_INPUTS;
    }

    Derived const& self() const noexcept
    {
        return static_cast<Derived const&>(*this);
    }
    Derived& self() noexcept
    {
        return static_cast<Derived&>(*this);
    }

    static auto dimsOf(PluginTensorDesc const* in) noexcept
    {
        std::array<Dims, Derived::kNB_INPUTS> dims{};
        for (int32_t i = 0; i < inputCount(); ++i)
        {
            dims[i] = in[i].dims;
        }
        return dims;
    }

    //! The op's workspace for these input dims (ranks checked; none for an empty input).
    size_t workspaceSize(Dims const* dims, DataType type) const
    {
        checkRanks(Derived::kTENSORS, dims, inputCount());
        return anyEmpty(dims, inputCount()) ? 0 : self().doWorkspaceSize(dims, type);
    }

    static void checkCounts(int32_t nbInputs, int32_t nbOutputs)
    {
        if (nbInputs != inputCount() || nbOutputs != outputCount())
        {
            throw PluginError(ioText(Derived::kTENSORS, inputCount(), outputCount()) + ", got "
                + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        }
    }

    std::string mMetadata;      //!< "name=value ..." of the attributes (engine inspector)
    std::string mTimingCacheID; //!< "srdeploy::<op>/1 <attributes>"
    ShapeMemo mLastShapes;
    size_t mWorkspaceBytes{}; //!< for the shapes of the last onShapeChange()
    std::vector<PluginField> mSerialFields;
    PluginFieldCollection mSerialCollection{};
};

//! The creator of Plugin: the fields of its attribute table; createPlugin reads them into a new plugin.
template <typename Plugin>
class PluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    PluginCreator()
    {
        for (Attribute<Plugin> const& attribute : Plugin::attributes())
        {
            mFields.push_back(attribute.declaration());
        }
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }
    ~PluginCreator() override = default;
    PluginCreator(PluginCreator const&) = delete;
    PluginCreator& operator=(PluginCreator const&) = delete;

    IPluginV3* createPlugin(
        char const* /* name */, PluginFieldCollection const* fc, TensorRTPhase /* phase */) noexcept override
    {
        // The build and the runtime phase read the same fields: getFieldsToSerialize() writes the
        // attributes under the names and types of getFieldNames().
        IPluginV3* plugin{nullptr};
        guarded(Plugin::kNAME, [&] {
            auto created = std::make_unique<Plugin>();
            created->readAttributes(FieldReader(fc));
            plugin = created.release();
        });
        return plugin;
    }

    PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mCollection;
    }
    char const* getPluginName() const noexcept override
    {
        return Plugin::kNAME;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kPLUGIN_VERSION;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPLUGIN_NAMESPACE;
    }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_PLUGIN_BASE_H
