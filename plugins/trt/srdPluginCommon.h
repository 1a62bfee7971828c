/*
 * srdPluginCommon.h: what the three srdeploy TensorRT plugins share (DESIGN.md section 3).
 *
 *  - the contract constants: namespace "srdeploy", version "1";
 *  - logging through the ILoggerFinder TensorRT hands to setLoggerFinder() (stderr before that);
 *  - reading attributes from a PluginFieldCollection (the ONNX parser gives INT as kINT32 and
 *    FLOAT as kFLOAT32; kINT64 / kFLOAT64 are accepted too, for hand-made collections);
 *  - PluginBase: the IPluginV3 / IPluginV3OneCore / IPluginV3OneBuild / IPluginV3OneRuntime object
 *    every plugin is, with the parts that do not depend on the op;
 *  - PluginCreator: the IPluginCreatorV3One of a plugin, from the plugin's static field list.
 *
 * Every TensorRT entry point is noexcept: errors are caught, logged with the op's name and turned
 * into a non-zero status / nullptr / false, never an exception across the ABI.
 */
#ifndef SRDEPLOY_TRT_PLUGIN_COMMON_H
#define SRDEPLOY_TRT_PLUGIN_COMMON_H

#include "NvInferRuntime.h"
#include "srdeploy_kernels.h"

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
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

//! The op-independent half of a plugin. Derived provides (besides its IPluginV3OneBuild /
//! IPluginV3OneRuntime overrides) a copy constructor and a static constexpr char const* kNAME.
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
        try
        {
            return new Derived(static_cast<Derived const&>(*this));
        }
        catch (...)
        {
            logCurrentException(Derived::kNAME);
        }
        return nullptr;
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

    // IPluginV3OneBuild: the op-independent parts
    char const* getMetadataString() noexcept override
    {
        return mMetadata.c_str();
    }

    // IPluginV3OneRuntime: the op-independent parts
    IPluginV3* attachToContext(IPluginResourceContext* /* context */) noexcept override
    {
        return clone(); // no per-context resources: workspace comes from TensorRT
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        mSerialFields.clear();
        static_cast<Derived*>(this)->appendFields(mSerialFields);
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }

protected:
    PluginBase() = default;
    PluginBase(PluginBase const& other)
        : IPluginV3(other)
        , nvinfer1::IPluginV3OneCore(other)
        , nvinfer1::IPluginV3OneBuild(other)
        , nvinfer1::IPluginV3OneRuntime(other)
        , mMetadata(other.mMetadata)
    {
        // mSerialFields point into the object they were made for: rebuilt on demand, never copied.
    }
    PluginBase& operator=(PluginBase const&) = delete;

    std::string mMetadata; //!< "name=value ..." of the attributes (engine inspector)

private:
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
        try
        {
            return new Plugin(FieldReader(fc));
        }
        catch (...)
        {
            logCurrentException(Plugin::kNAME);
        }
        return nullptr;
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
