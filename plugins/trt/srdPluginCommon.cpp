#include "srdPluginCommon.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <sstream>

namespace srdeploy
{
namespace trt
{

namespace
{
std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder{nullptr};

char const* severityName(ILogger::Severity severity) noexcept
{
    switch (severity)
    {
    case ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case ILogger::Severity::kERROR: return "ERROR";
    case ILogger::Severity::kWARNING: return "WARNING";
    case ILogger::Severity::kINFO: return "INFO";
    case ILogger::Severity::kVERBOSE: return "VERBOSE";
    }
    return "LOG";
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    if (finder != nullptr)
    {
        gLoggerFinder = finder;
    }
}

void log(ILogger::Severity severity, char const* op, std::string const& message) noexcept
{
    try
    {
        std::string const text = std::string("[srdeploy] ") + op + ": " + message;
        ILogger* logger{nullptr};
        {
            std::lock_guard<std::mutex> lock(gLoggerMutex);
            if (gLoggerFinder != nullptr)
            {
                // findLogger() must be called from the thread of the plugin method: it is.
                logger = gLoggerFinder->findLogger();
            }
        }
        if (logger != nullptr)
        {
            logger->log(severity, text.c_str());
        }
        else if (severity <= ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "[%s] %s\n", severityName(severity), text.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw across the plugin's noexcept edge.
    }
}

void logCurrentException(char const* op) noexcept
{
    try
    {
        throw;
    }
    catch (std::exception const& e)
    {
        log(ILogger::Severity::kERROR, op, e.what());
    }
    catch (...)
    {
        log(ILogger::Severity::kERROR, op, "unknown error");
    }
}

void checkStatus(int status, char const* what)
{
    if (status != SRD_SUCCESS)
    {
        std::ostringstream os;
        os << what << ": " << srd_status_string(status) << ": " << srd_last_error_message();
        throw PluginError(os.str());
    }
}

int toSrdType(DataType type)
{
    switch (type)
    {
    case DataType::kFLOAT: return SRD_FLOAT32;
    case DataType::kHALF: return SRD_FLOAT16;
    default: break;
    }
    throw PluginError(std::string("float tensors must be kFLOAT or kHALF, got ") + typeName(type));
}

char const* typeName(DataType type) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: return "kFLOAT";
    case DataType::kHALF: return "kHALF";
    case DataType::kINT8: return "kINT8";
    case DataType::kINT32: return "kINT32";
    case DataType::kBOOL: return "kBOOL";
    case DataType::kUINT8: return "kUINT8";
    case DataType::kFP8: return "kFP8";
    case DataType::kBF16: return "kBF16";
    case DataType::kINT64: return "kINT64";
    default: break;
    }
    return "another type";
}

std::string dimsString(Dims const& dims)
{
    std::ostringstream os;
    os << '[';
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        os << (i ? ", " : "") << dims.d[i];
    }
    os << ']';
    return os.str();
}

void requireRank(Dims const& dims, int32_t rank, char const* what)
{
    if (dims.nbDims != rank)
    {
        std::ostringstream os;
        os << what << " must have rank " << rank << ", got " << dimsString(dims);
        throw PluginError(os.str());
    }
}

int64_t volume(Dims const& dims) noexcept
{
    int64_t n = 1;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        n *= dims.d[i];
    }
    return n;
}

bool isFixed(DynamicPluginTensorDesc const& desc) noexcept
{
    Dims const& lo = desc.min;
    Dims const& hi = desc.max;
    return lo.nbDims == hi.nbDims && lo.nbDims >= 0 && std::equal(lo.d, lo.d + lo.nbDims, hi.d);
}

std::string ioText(TensorSpec const* specs, int32_t nbInputs, int32_t nbOutputs)
{
    auto names = [&](int32_t first, int32_t count) {
        std::string text;
        for (int32_t i = first; i < first + count; ++i)
        {
            text += (i > first ? ", " : "") + std::string(specs[i].name);
        }
        return text;
    };
    std::ostringstream os;
    os << "takes " << nbInputs << (nbInputs == 1 ? " input (" : " inputs (") << names(0, nbInputs) << ") and gives "
       << nbOutputs << (nbOutputs == 1 ? " output (" : " outputs (") << names(nbInputs, nbOutputs) << ")";
    return os.str();
}

namespace
{
bool isFloating(DataType type) noexcept
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}
} // namespace

bool supportsType(TensorSpec const* specs, int32_t pos, DynamicPluginTensorDesc const* inOut) noexcept
{
    DataType const type = inOut[pos].desc.type;
    if (specs[pos].types == TypeRule::kINDEX)
    {
        return type == DataType::kINT32;
    }
    for (int32_t i = 0; i < pos; ++i)
    {
        if (specs[i].types == TypeRule::kFLOAT)
        {
            return type == inOut[i].desc.type; // the type of the op's first float tensor
        }
    }
    return isFloating(type);
}

DataType checkInputTypes(TensorSpec const* specs, int32_t nbInputs, DataType const* types)
{
    int32_t first = -1; // the first float input
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        std::string const name(specs[i].name);
        if (specs[i].types == TypeRule::kINDEX)
        {
            if (types[i] != DataType::kINT32)
            {
                throw PluginError(name + " must be kINT32, got " + typeName(types[i]));
            }
        }
        else if (first < 0)
        {
            if (!isFloating(types[i]))
            {
                throw PluginError(name + " must be kFLOAT or kHALF, got " + typeName(types[i]));
            }
            first = i;
        }
        else if (types[i] != types[first])
        {
            throw PluginError(std::string(specs[first].name) + " and " + name + " must have one type, got "
                + typeName(types[first]) + " and " + typeName(types[i]) + " (export the graph in one precision)");
        }
    }
    return first < 0 ? DataType::kFLOAT : types[first];
}

void checkRanks(TensorSpec const* specs, Dims const* dims, int32_t nb)
{
    for (int32_t i = 0; i < nb; ++i)
    {
        requireRank(dims[i], specs[i].rank, specs[i].name);
    }
}

void checkRanks(TensorSpec const* specs, DimsExprs const* dims, int32_t nb)
{
    for (int32_t i = 0; i < nb; ++i)
    {
        if (dims[i].nbDims != specs[i].rank)
        {
            throw PluginError(std::string(specs[i].name) + " must have rank " + std::to_string(specs[i].rank)
                + ", got rank " + std::to_string(dims[i].nbDims));
        }
    }
}

bool anyEmpty(Dims const* dims, int32_t nb) noexcept
{
    for (int32_t i = 0; i < nb; ++i)
    {
        if (volume(dims[i]) == 0)
        {
            return true;
        }
    }
    return false;
}

void checkBound(char const* name, int32_t value, Bound bound)
{
    if (bound == Bound::kPOSITIVE ? value <= 0 : value < 0)
    {
        throw PluginError(std::string(name) + (bound == Bound::kPOSITIVE ? " must be > 0" : " must be >= 0") + ", got "
            + std::to_string(value));
    }
}

void checkBound(char const* name, float value, Bound bound)
{
    if (!std::isfinite(value) || (bound == Bound::kPOSITIVE ? !(value > 0.F) : !(value >= 0.F)))
    {
        std::ostringstream os;
        os << name << (bound == Bound::kPOSITIVE ? " must be finite and > 0" : " must be finite and >= 0") << ", got "
           << value;
        throw PluginError(os.str());
    }
}

bool ShapeMemo::matches(PluginTensorDesc const* in, int32_t nbInputs) const noexcept
{
    if (mInputs.size() != static_cast<size_t>(nbInputs))
    {
        return false;
    }
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        Dims const& a = mInputs[static_cast<size_t>(i)].first;
        Dims const& b = in[i].dims;
        if (mInputs[static_cast<size_t>(i)].second != in[i].type || a.nbDims != b.nbDims || a.nbDims < 0
            || !std::equal(a.d, a.d + a.nbDims, b.d))
        {
            return false;
        }
    }
    return true;
}

void ShapeMemo::remember(PluginTensorDesc const* in, int32_t nbInputs)
{
    mInputs.clear();
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        mInputs.emplace_back(in[i].dims, in[i].type);
    }
}

FieldReader::FieldReader(PluginFieldCollection const* fc)
    : mFC(fc)
{
    if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        throw PluginError("no attribute collection given");
    }
}

PluginField const* FieldReader::find(char const* name) const
{
    for (int32_t i = 0; i < mFC->nbFields; ++i)
    {
        PluginField const& f = mFC->fields[i];
        if (f.name != nullptr && std::strcmp(f.name, name) == 0)
        {
            if (f.data == nullptr || f.length != 1)
            {
                throw PluginError(std::string("attribute ") + name + " must hold exactly one value");
            }
            return &f;
        }
    }
    throw PluginError(std::string("attribute ") + name + " is missing (the ONNX node must carry it)");
}

int32_t FieldReader::getInt(char const* name) const
{
    PluginField const* f = find(name);
    int64_t value{};
    switch (f->type)
    {
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(f->data); break;
    case PluginFieldType::kINT64: value = *static_cast<int64_t const*>(f->data); break;
    default: throw PluginError(std::string("attribute ") + name + " must be an integer (kINT32)");
    }
    if (value < std::numeric_limits<int32_t>::min() || value > std::numeric_limits<int32_t>::max())
    {
        throw PluginError(std::string("attribute ") + name + " does not fit int32");
    }
    return static_cast<int32_t>(value);
}

float FieldReader::getFloat(char const* name) const
{
    PluginField const* f = find(name);
    switch (f->type)
    {
    case PluginFieldType::kFLOAT32: return *static_cast<float const*>(f->data);
    case PluginFieldType::kFLOAT64:
    {
        double const value = *static_cast<double const*>(f->data);
        if (std::isfinite(value) && std::fabs(value) > static_cast<double>(std::numeric_limits<float>::max()))
        {
            throw PluginError(std::string("attribute ") + name + " does not fit float32");
        }
        return static_cast<float>(value); // NaN and inf stay what they are: the bounds check names them
    }
    default: break;
    }
    throw PluginError(std::string("attribute ") + name + " must be a float (kFLOAT32)");
}

} // namespace trt
} // namespace srdeploy
