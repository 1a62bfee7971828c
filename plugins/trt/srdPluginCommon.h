/*
 * srdPluginCommon.h: what the three srdeploy TensorRT plugins share (DESIGN.md section 3).
 *
 *  - the contract constants: namespace "srdeploy", version "1";
 *  - logging through the ILoggerFinder TensorRT hands to setLoggerFinder() (stderr before that);
 *  - reading attributes from a PluginFieldCollection (the ONNX parser gives INT as kINT32 and
 *    FLOAT as kFLOAT32; kINT64 / kFLOAT64 are accepted too, for hand-made collections);
 *  - PluginBase: the IPluginV3 / IPluginV3OneCore / IPluginV3OneBuild / IPluginV3OneRuntime object
 *    every plugin is: every noexcept entry point (count checks, catch, log), the timing cache ID, the
 *    memo of the last shapes; the plugins implement the op as throwing do... methods;
 *  - PluginCreator: the IPluginCreatorV3One of a plugin, from the plugin's static field list.
 *
 * Every TensorRT entry point is noexcept: errors are caught, logged with the op's name and turned
 * into a non-zero status / nullptr / false, never an exception across the ABI.
 */
#ifndef SRDEPLOY_TRT_PLUGIN_COMMON_H
#define SRDEPLOY_TRT_PLUGIN_COMMON_H

#include "NvInferRuntime.h"
#include "srdeploy_kernels.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__GNUC__)
#define SRD_TRT_API __attribute__((visibility("default")))
#else
#define SRD_TRT_API
#endif

namespace srdeploy
{
namespace trt
{

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IExprBuilder;
using nvinfer1::ILogger;
using nvinfer1::IPluginCapability;
using nvinfer1::IPluginResourceContext;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;
using nvinfer1::TensorRTPhase;

//! The contract (DESIGN.md section 3): ONNX domain and plugin namespace, plugin version.
constexpr char const* kPLUGIN_NAMESPACE = "srdeploy";
constexpr char const* kPLUGIN_VERSION = "1";

// ------------------------------------------------------------------------------------ logging

//! Set by setLoggerFinder() (library entry point); nullptr until TensorRT calls it.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
//! "[srdeploy] <op>: <message>" to TensorRT's logger, or stderr when there is none yet.
void log(ILogger::Severity severity, char const* op, std::string const& message) noexcept;
//! Logs the exception currently being handled (call inside catch (...)) as an error of op.
void logCurrentException(char const* op) noexcept;

//! An error with a message for the log; thrown inside the plugins, caught at their noexcept edge.
class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

//! Throws PluginError("<what>: <status name>: <kernel library message>") unless status is SRD_SUCCESS.
void checkStatus(int status, char const* what);

//! SRD_FLOAT32 / SRD_FLOAT16 for kFLOAT / kHALF; throws for any other type.
int toSrdType(DataType type);
//! "kFLOAT", "kHALF", "kINT32", ... for messages.
char const* typeName(DataType type) noexcept;
//! "[2, 3, 4]" for messages.
std::string dimsString(Dims const& dims);
//! Throws unless dims has rank `rank` and (when positive) every extent is >= 0.
void requireRank(Dims const& dims, int32_t rank, char const* what);
//! Product of the extents (0 for an empty tensor).
int64_t volume(Dims const& dims) noexcept;
//! Whether the profile fixes this tensor's shape (min == max): then its extents are known at build time.
bool isFixed(DynamicPluginTensorDesc const& desc) noexcept;

// ---------------------------------------------------------------------------------- attributes

//! One attribute a plugin takes: its name and the PluginFieldType its creator advertises.
struct FieldSpec
{
    char const* name;
    PluginFieldType type; // kINT32 or kFLOAT32
};

//! Reads attributes by name from a collection; throws PluginError naming a missing or ill-typed one.
class FieldReader
{
public:
    explicit FieldReader(PluginFieldCollection const* fc);
    int32_t getInt(char const* name) const;
    float getFloat(char const* name) const;

private:
    PluginField const* find(char const* name) const;
    PluginFieldCollection const* mFC;
};

// ----------------------------------------------------------------------------------- base class

//! The noexcept edge: runs fn, returns 0; an exception is logged as an error of op and gives -1.
template <typename Fn>
int32_t guarded(char const* op, Fn&& fn) noexcept
{
    try
    {
        fn();
        return 0;
    }
    catch (...)
    {
        logCurrentException(op);
    }
    return -1;
}

//! The dims and types of the inputs of the last successful onShapeChange(): TensorRT calls it before
//! every enqueue when tensor addresses are set per call (tiles), and the workspace query behind it
//! (a CUB size query for BucketSort) need not run again while the shapes stay those of the last call.
class ShapeMemo
{
public:
    bool matches(PluginTensorDesc const* in, int32_t nbInputs) const noexcept;
    void remember(PluginTensorDesc const* in, int32_t nbInputs);
    void forget() noexcept
    {
        mInputs.clear();
    }

private:
    std::vector<std::pair<Dims, DataType>> mInputs;
};

//! Every IPluginV3 entry point of a plugin, noexcept: counts of inputs and outputs checked, errors
//! caught and logged as "[srdeploy] <op>: <reason>" and turned into -1 / 0 / false / nullptr.
//! Derived implements the op as throwing methods and constants:
//!   kNAME, kNB_INPUTS, kNB_OUTPUTS, kIO ("takes 1 input (codes) and gives 2 outputs (order, rank)"),
//!   fieldSpecs(), a constructor from FieldReader (calling describe()), appendFields(),
//!   doOutputDataTypes(outTypes, inTypes), doOutputShapes(inputs, outputs, exprBuilder),
//!   doSupportsType(pos, inOut) (the format is LINEAR, pos in range),
//!   doConfigure(in) (ranks and types; extents only where the profile fixes them),
//!   doCheckShapes(dims) (exact extents of the actual input dims),
//!   doWorkspaceSize(dims, type) (for input dims, the profile maxima or the actual ones),
//!   doEnqueue(inputDesc, inputs, outputs, workspace, workspaceBytes, stream).
template <typename Derived>
class PluginBase : public IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    ~PluginBase() noexcept override = default;

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
        return Derived::kNB_OUTPUTS;
    }

    int32_t getOutputDataTypes(
        DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            self().doOutputDataTypes(outputTypes, inputTypes);
        });
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /* shapeInputs */,
        int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            self().doOutputShapes(inputs, outputs, exprBuilder);
        });
    }

    bool supportsFormatCombination(
        int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        // Asked many times while TensorRT searches formats: no logging, a plain no.
        return inOut != nullptr && nbInputs == Derived::kNB_INPUTS && nbOutputs == Derived::kNB_OUTPUTS && pos >= 0
            && pos < nbInputs + nbOutputs && inOut[pos].desc.format == TensorFormat::kLINEAR
            && self().doSupportsType(pos, inOut);
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /* out */,
        int32_t nbOutputs) noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            self().doConfigure(in);
        });
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        DynamicPluginTensorDesc const* /* outputs */, int32_t nbOutputs) const noexcept override
    {
        size_t bytes{0};
        guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            std::array<Dims, Derived::kNB_INPUTS> dims{};
            for (int32_t i = 0; i < Derived::kNB_INPUTS; ++i)
            {
                dims[i] = inputs[i].max; // the largest shapes of the profile
            }
            bytes = self().doWorkspaceSize(dims.data(), inputs[0].desc.type);
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
        mSerialFields.clear();
        if (guarded(Derived::kNAME, [&] { self().appendFields(mSerialFields); }) != 0)
        {
            return nullptr;
        }
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }

    int32_t onShapeChange(
        PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept override
    {
        return guarded(Derived::kNAME, [&] {
            checkCounts(nbInputs, nbOutputs);
            if (mLastShapes.matches(in, nbInputs))
            {
                return; // mWorkspaceBytes still holds
            }
            mLastShapes.forget();
            std::array<Dims, Derived::kNB_INPUTS> dims{};
            for (int32_t i = 0; i < Derived::kNB_INPUTS; ++i)
            {
                dims[i] = in[i].dims;
            }
            self().doCheckShapes(dims.data());
            mWorkspaceBytes = self().doWorkspaceSize(dims.data(), in[0].type);
            mLastShapes.remember(in, nbInputs);
        });
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        return guarded(Derived::kNAME,
            [&] { self().doEnqueue(inputDesc, inputs, outputs, workspace, mWorkspaceBytes, stream); });
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

    //! Records the attributes ("name=value ...") for the engine inspector and the timing cache.
    void describe(std::string const& attributes)
    {
        mMetadata = attributes;
        mTimingCacheID = std::string(kPLUGIN_NAMESPACE) + "::" + Derived::kNAME + "/" + kPLUGIN_VERSION + " " + attributes;
    }

private:
    Derived const& self() const noexcept
    {
        return static_cast<Derived const&>(*this);
    }
    Derived& self() noexcept
    {
        return static_cast<Derived&>(*this);
    }

    static void checkCounts(int32_t nbInputs, int32_t nbOutputs)
    {
        if (nbInputs != Derived::kNB_INPUTS || nbOutputs != Derived::kNB_OUTPUTS)
        {
            throw PluginError(std::string(Derived::kIO) + ", got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs));
        }
    }

    std::string mMetadata;      //!< "name=value ..." of the attributes (engine inspector)
    std::string mTimingCacheID; //!< "srdeploy::<op>/1 <attributes>"
    ShapeMemo mLastShapes;
    size_t mWorkspaceBytes{}; //!< for the shapes of the last onShapeChange()
    std::vector<PluginField> mSerialFields;
    PluginFieldCollection mSerialCollection{};
};

// -------------------------------------------------------------------------------------- creator

//! The creator of Plugin. Plugin provides kNAME, a static fieldSpecs() returning
//! std::vector<FieldSpec>, and a constructor taking a FieldReader const&.
template <typename Plugin>
class PluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    PluginCreator()
    {
        for (FieldSpec const& spec : Plugin::fieldSpecs())
        {
            mFields.emplace_back(spec.name, nullptr, spec.type, 1);
        }
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }
    ~PluginCreator() override = default;
    PluginCreator(PluginCreator const&) = delete;
    PluginCreator& operator=(PluginCreator const&) = delete;

    IPluginV3* createPlugin(char const* /* name */, PluginFieldCollection const* fc, TensorRTPhase /* phase */) noexcept override
    {
        // The build and the runtime phase read the same fields: getFieldsToSerialize() writes the
        // attributes under the names and types of getFieldNames().
        IPluginV3* plugin{nullptr};
        guarded(Plugin::kNAME, [&] { plugin = new Plugin(FieldReader(fc)); });
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

#endif // SRDEPLOY_TRT_PLUGIN_COMMON_H
