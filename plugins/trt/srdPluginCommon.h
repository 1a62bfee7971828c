/*
 * srdPluginCommon.h: the helpers the srdeploy TensorRT plugins share (DESIGN.md section 3); the
 * plugin base class built on them is srdPluginBase.h.
 *
 *  - the contract constants: namespace "srdeploy", version "1";
 *  - logging through the ILoggerFinder TensorRT hands to setLoggerFinder() (stderr before that);
 *  - the noexcept edge (guarded): an exception is caught, logged with the op's name and turned
 *    into a non-zero status, never thrown across the ABI;
 *  - an op's tensors as data (TensorSpec: name, rank, types) and the checks read from it;
 *  - reading attributes from a PluginFieldCollection (the ONNX parser gives INT as kINT32 and
 *    FLOAT as kFLOAT32; kINT64 / kFLOAT64 are accepted too, for hand-made collections), their
 *    bounds, and Attribute: an op's attribute as data (name, member, bound);
 *  - EnqueueArgs: what enqueue hands an op.
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
#include <ostream>
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

// ------------------------------------------------------------------------------------- tensors

//! The types a tensor of an op takes.
enum class TypeRule : int32_t
{
    kINDEX, //!< kINT32
    kFLOAT, //!< kFLOAT or kHALF; every kFLOAT tensor of an op has the type of its first one
};

//! One input or output of an op: its name (for messages), its rank and its types.
struct TensorSpec
{
    char const* name;
    int32_t rank;
    TypeRule types;
};

//! "takes 4 inputs (q, v, order, rank) and gives 1 output (out)", from the op's specs (inputs first).
std::string ioText(TensorSpec const* specs, int32_t nbInputs, int32_t nbOutputs);
//! Whether tensor pos of inOut (inputs, then outputs) has a type its spec allows; reads inOut[0..pos] only
//! (what supportsFormatCombination may read).
bool supportsType(TensorSpec const* specs, int32_t pos, DynamicPluginTensorDesc const* inOut) noexcept;
//! Throws PluginError naming the first input whose type its spec refuses; returns the type of the
//! kFLOAT inputs (kFLOAT when there are none).
DataType checkInputTypes(TensorSpec const* specs, int32_t nbInputs, DataType const* types);
//! Throws unless each of the nb dims has the rank of its spec.
void checkRanks(TensorSpec const* specs, Dims const* dims, int32_t nb);
void checkRanks(TensorSpec const* specs, DimsExprs const* dims, int32_t nb);
//! Whether any of the nb dims holds no element (then there is nothing to compute).
bool anyEmpty(Dims const* dims, int32_t nb) noexcept;

// ---------------------------------------------------------------------------------- attributes

//! The values an attribute takes; a float must also be finite.
enum class Bound : int32_t
{
    kPOSITIVE,     //!< > 0
    kNON_NEGATIVE, //!< >= 0
};

//! Throws PluginError("<name> must be > 0, got <value>") (or ">= 0", "finite and") outside the bound.
void checkBound(char const* name, int32_t value, Bound bound);
void checkBound(char const* name, float value, Bound bound);

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

//! One attribute of Plugin: its name, the int32_t or float member that holds it, its bound. The one
//! place each attribute is named: the creator's fields, reading, checking, serialisation and the
//! metadata all come from the plugin's table of them.
template <typename Plugin>
class Attribute
{
public:
    Attribute(char const* attributeName, int32_t Plugin::* member, Bound bound) noexcept
        : mName(attributeName)
        , mInt(member)
        , mBound(bound)
    {
    }
    Attribute(char const* attributeName, float Plugin::* member, Bound bound) noexcept
        : mName(attributeName)
        , mFloat(member)
        , mBound(bound)
    {
    }

    //! The name and type the creator advertises (getFieldNames).
    PluginField declaration() const noexcept
    {
        return PluginField(mName, nullptr, type(), 1);
    }
    //! Reads the value into plugin and checks its bound; throws PluginError naming what is wrong.
    void read(FieldReader const& fields, Plugin& plugin) const
    {
        if (mInt != nullptr)
        {
            plugin.*mInt = fields.getInt(mName);
            checkBound(mName, plugin.*mInt, mBound);
        }
        else
        {
            plugin.*mFloat = fields.getFloat(mName);
            checkBound(mName, plugin.*mFloat, mBound);
        }
    }
    //! The serialised field: the name and type of declaration(), the value of plugin (pointed to).
    PluginField field(Plugin& plugin) const noexcept
    {
        void const* value
            = mInt != nullptr ? static_cast<void const*>(&(plugin.*mInt)) : static_cast<void const*>(&(plugin.*mFloat));
        return PluginField(mName, value, type(), 1);
    }
    //! "name=value", for the metadata and the timing cache ID.
    void print(std::ostream& os, Plugin const& plugin) const
    {
        os << mName << '=';
        if (mInt != nullptr)
        {
            os << plugin.*mInt;
        }
        else
        {
            os << plugin.*mFloat;
        }
    }

private:
    PluginFieldType type() const noexcept
    {
        return mInt != nullptr ? PluginFieldType::kINT32 : PluginFieldType::kFLOAT32;
    }

    char const* mName;
    int32_t Plugin::* mInt{nullptr};
    float Plugin::* mFloat{nullptr};
    Bound mBound;
};

//! What enqueue hands an op: the actual input descriptors, the buffers, the workspace (sized by
//! doWorkspaceSize for these shapes) and the stream.
struct EnqueueArgs
{
    PluginTensorDesc const* inputDesc;
    void const* const* inputs;
    void* const* outputs;
    void* workspace;
    size_t workspaceBytes;
    cudaStream_t stream;
};

// ------------------------------------------------------------------- the noexcept edge, shape memo

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

} // namespace trt
} // namespace srdeploy

#endif // SRDEPLOY_TRT_PLUGIN_COMMON_H
