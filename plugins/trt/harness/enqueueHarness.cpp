/*
 * srdeploy_trt_enqueue_harness: runs the srdeploy TensorRT plugins the way TensorRT does, on a GPU,
 * and compares their outputs with references written by Python (python -m plugins.trt.harness).
 *
 *   srdeploy_trt_enqueue_harness --library libsrdeploy_trt_plugins.so --cases DIR [--variants gather,chunk]
 *                                [--json RESULTS.json] [--replay OUTPUTS_DIR]
 *
 * Per case of DIR/manifest.txt, as TensorRT would:
 *  build:   the creator from getCreators(), createPlugin(kBUILD) from a field collection as the ONNX
 *           parser makes it; getOutputDataTypes; getOutputShapes with an IExprBuilder over known
 *           dims (checked against the reference's shapes, for the actual and the profile's largest
 *           inputs); supportsFormatCombination; configurePlugin with a dynamic profile (min = opt =
 *           the actual dims, max = larger); getWorkspaceSize (for the profile's largest shapes);
 *  runtime: getFieldsToSerialize -> createPlugin(kRUNTIME) -> attachToContext (deserialisation);
 *           onShapeChange (twice: the second is served from the plugin's memo) and enqueue on a
 *           non-default stream, on device buffers poisoned first (outputs and workspace 0xFF: NaN
 *           as fp32/fp16, -1 as int32), each followed by guard bytes that must stay untouched;
 *           enqueue twice, re-poisoned in between: the two outputs must be bitwise equal.
 * Compared with the reference (float64 for float outputs): PSNR at peak 1 and max |diff| against the
 * case's floor (DESIGN.md section 5: fp32 >= 100 dB, fp16 >= 60 dB), or exact (int32 outputs).
 * BucketAttention cases run once per variant (SRDEPLOY_BUCKET_ATTENTION, read by the kernel library at
 * every call); a library that accepts an unknown value ignores the variable, and its non-default
 * variants are reported as skipped.
 *
 * --replay compares outputs saved in a folder instead (no GPU): how the CPU tests check the comparison.
 *
 * Exit: 0 every case passed (or skipped), 1 a case failed, 2 bad arguments or case files,
 *       3 no CUDA device (nothing run: run this on the GPU machine).
 *
 * Long module: one test program, read top to bottom in the order it works (the case files Python
 * writes, device buffers with guards, the comparison and its JSON, one case through TensorRT's call
 * sequence, main). Each part serves only this program and the parts share its small types (Tensor,
 * Case, Result); split across files they would need a header of their own for no other reader.
 */
#include "trtHarnessSupport.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

using namespace srdeploy::harness;

namespace
{

constexpr char const* kVARIANT_ENV = "SRDEPLOY_BUCKET_ATTENTION";
constexpr size_t kGUARD_BYTES = 256;
constexpr unsigned char kGUARD = 0xA5;
constexpr unsigned char kPOISON = 0xFF;
constexpr int32_t kNOT_RUN = std::numeric_limits<int32_t>::min();

class UsageError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

// ------------------------------------------------------------------------------------- cases

struct Tensor
{
    std::string name;
    DataType type{DataType::kFLOAT};
    std::vector<int64_t> dims;
    std::vector<int64_t> maxDims; //!< inputs: the profile's largest shape
    std::string file;             //!< inputs: the data; outputs: the reference (float64 for float outputs)
    std::vector<char> data;       //!< the file's bytes
};

struct Attribute
{
    std::string name;
    bool isFloat{false};
    double value{};
};

struct Case
{
    std::string name;
    std::string op;
    std::vector<Attribute> attributes;
    std::vector<Tensor> inputs;
    std::vector<Tensor> outputs;
    double floorDb{0}; //!< PSNR floor of float outputs (int32 outputs must be exact)
};

DataType parseType(std::string const& s)
{
    if (s == "float32")
        return DataType::kFLOAT;
    if (s == "float16")
        return DataType::kHALF;
    if (s == "int32")
        return DataType::kINT32;
    throw UsageError("unknown dtype '" + s + "' (float32, float16 or int32)");
}

char const* typeText(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT32: return "int32";
    default: return "other";
    }
}

size_t elementSize(DataType t)
{
    return t == DataType::kHALF ? 2 : 4;
}

std::vector<int64_t> parseDims(std::string const& s)
{
    std::vector<int64_t> dims;
    std::stringstream in(s);
    std::string part;
    while (std::getline(in, part, 'x'))
    {
        char* end = nullptr;
        long long v = std::strtoll(part.c_str(), &end, 10);
        if (part.empty() || *end != '\0' || v < 0)
            throw UsageError("bad dims '" + s + "' (e.g. 1x100x8)");
        dims.push_back(v);
    }
    if (dims.empty() || dims.size() > static_cast<size_t>(Dims::MAX_DIMS))
        throw UsageError("bad dims '" + s + "'");
    return dims;
}

int64_t count(std::vector<int64_t> const& dims)
{
    int64_t n = 1;
    for (int64_t d : dims)
        n *= d;
    return n;
}

std::string dimsText(std::vector<int64_t> const& dims)
{
    std::string s;
    for (size_t i = 0; i < dims.size(); ++i)
        s += (i ? "x" : "") + std::to_string(dims[i]);
    return s;
}

std::vector<char> readFile(std::string const& path, size_t expected)
{
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f)
        throw UsageError("cannot read " + path);
    auto const size = static_cast<size_t>(f.tellg());
    if (size != expected)
        throw UsageError(path + " holds " + std::to_string(size) + " bytes, the manifest implies "
            + std::to_string(expected) + ": rewrite the cases (python -m plugins.trt.harness)");
    std::vector<char> bytes(size);
    f.seekg(0);
    f.read(bytes.data(), static_cast<std::streamsize>(size));
    return bytes;
}

//! DIR/manifest.txt: one token-separated line per item, a case from "case NAME" to "end":
//!   op OP | attr NAME int|float VALUE | input NAME DTYPE DIMS MAXDIMS FILE | output NAME DTYPE DIMS FILE
//!   | floor DB      (DIMS like 1x100x8; files relative to DIR, raw little-endian, outputs in float64)
std::vector<Case> readCases(std::string const& dir)
{
    std::string const path = dir + "/manifest.txt";
    std::ifstream in(path);
    if (!in)
        throw UsageError("cannot read " + path + " (write the cases with python -m plugins.trt.harness)");
    std::vector<Case> cases;
    Case* current = nullptr;
    std::string line;
    int lineNo = 0;
    while (std::getline(in, line))
    {
        ++lineNo;
        std::istringstream words(line);
        std::string key;
        if (!(words >> key) || key[0] == '#')
            continue;
        auto fail = [&](std::string const& why) {
            return UsageError(path + ":" + std::to_string(lineNo) + ": " + why);
        };
        if (key == "case")
        {
            cases.emplace_back();
            current = &cases.back();
            if (!(words >> current->name))
                throw fail("case without a name");
            continue;
        }
        if (current == nullptr)
            throw fail("'" + key + "' outside a case");
        if (key == "op")
        {
            words >> current->op;
        }
        else if (key == "attr")
        {
            Attribute a;
            std::string kind;
            if (!(words >> a.name >> kind >> a.value) || (kind != "int" && kind != "float"))
                throw fail("expected: attr NAME int|float VALUE");
            a.isFloat = kind == "float";
            current->attributes.push_back(a);
        }
        else if (key == "input" || key == "output")
        {
            Tensor t;
            std::string type, dims, maxDims;
            bool const input = key == "input";
            if (!(words >> t.name >> type >> dims) || (input && !(words >> maxDims)) || !(words >> t.file))
                throw fail(input ? "expected: input NAME DTYPE DIMS MAXDIMS FILE" : "expected: output NAME DTYPE DIMS FILE");
            t.type = parseType(type);
            t.dims = parseDims(dims);
            if (input)
            {
                t.maxDims = parseDims(maxDims);
                if (t.maxDims.size() != t.dims.size())
                    throw fail("MAXDIMS must have the rank of DIMS");
            }
            size_t const bytesPer = input ? elementSize(t.type) : (t.type == DataType::kINT32 ? 4 : 8);
            t.data = readFile(dir + "/" + t.file, static_cast<size_t>(count(t.dims)) * bytesPer);
            (input ? current->inputs : current->outputs).push_back(std::move(t));
        }
        else if (key == "floor")
        {
            if (!(words >> current->floorDb))
                throw fail("expected: floor DB");
        }
        else if (key == "end")
        {
            if (current->op.empty() || current->inputs.empty() || current->outputs.empty())
                throw fail("case " + current->name + " needs an op, inputs and outputs");
            current = nullptr;
        }
        else
        {
            throw fail("unknown item '" + key + "'");
        }
    }
    if (current != nullptr)
        throw UsageError(path + ": case " + current->name + " has no 'end'");
    if (cases.empty())
        throw UsageError(path + " holds no case");
    return cases;
}

// ------------------------------------------------------------------------------------ logging

//! What the plugins log (through setLoggerFinder, as under TensorRT), kept for the case's report.
class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING && msg != nullptr)
        {
            if (!mText.empty())
                mText += " | ";
            mText += msg;
        }
    }
    std::string take()
    {
        std::string t;
        t.swap(mText);
        return t;
    }

private:
    std::string mText;
};

class LoggerFinder : public ILoggerFinder
{
public:
    explicit LoggerFinder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ~LoggerFinder() override = default;
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

// ------------------------------------------------------------------------------------ device

class CaseFailure : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

void cuda(cudaError_t err, char const* what)
{
    if (err != cudaSuccess)
        throw CaseFailure(std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

//! A device buffer followed by kGUARD_BYTES of a known pattern.
class DeviceBuffer
{
public:
    explicit DeviceBuffer(size_t bytes)
        : mBytes(bytes)
    {
        cuda(cudaMalloc(&mPtr, bytes + kGUARD_BYTES), "cudaMalloc");
        cuda(cudaMemset(static_cast<char*>(mPtr) + bytes, kGUARD, kGUARD_BYTES), "cudaMemset (guard)");
    }
    ~DeviceBuffer()
    {
        cudaFree(mPtr);
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;

    void* get() const
    {
        return mBytes > 0 ? mPtr : nullptr;
    }
    void upload(std::vector<char> const& bytes)
    {
        cuda(cudaMemcpy(mPtr, bytes.data(), mBytes, cudaMemcpyHostToDevice), "cudaMemcpy (input)");
    }
    void poison()
    {
        cuda(cudaMemset(mPtr, kPOISON, mBytes), "cudaMemset (poison)");
    }
    std::vector<char> download() const
    {
        std::vector<char> bytes(mBytes);
        cuda(cudaMemcpy(bytes.data(), mPtr, mBytes, cudaMemcpyDeviceToHost), "cudaMemcpy (output)");
        return bytes;
    }
    bool guardIntact() const
    {
        std::vector<unsigned char> guard(kGUARD_BYTES);
        cuda(cudaMemcpy(guard.data(), static_cast<char*>(mPtr) + mBytes, kGUARD_BYTES, cudaMemcpyDeviceToHost),
            "cudaMemcpy (guard)");
        for (unsigned char g : guard)
            if (g != kGUARD)
                return false;
        return true;
    }

private:
    void* mPtr{nullptr};
    size_t mBytes;
};

float halfToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000U) << 16;
    uint32_t const exponent = (h >> 10) & 0x1FU;
    uint32_t mantissa = h & 0x3FFU;
    uint32_t bits{};
    if (exponent == 0x1F)
        bits = sign | 0x7F800000U | (mantissa << 13); // inf, NaN
    else if (exponent != 0)
        bits = sign | ((exponent + 112U) << 23) | (mantissa << 13);
    else if (mantissa == 0)
        bits = sign; // zero
    else
    { // subnormal: normalise
        int32_t e = -1;
        do
        {
            ++e;
            mantissa <<= 1;
        } while ((mantissa & 0x400U) == 0);
        bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mantissa & 0x3FFU) << 13);
    }
    float f{};
    std::memcpy(&f, &bits, sizeof(f));
    return f;
}

double elementAt(std::vector<char> const& bytes, DataType type, size_t i)
{
    if (type == DataType::kHALF)
    {
        uint16_t h{};
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return halfToFloat(h);
    }
    float f{};
    std::memcpy(&f, bytes.data() + 4 * i, 4);
    return f;
}

// ----------------------------------------------------------------------------------- results

struct Result
{
    std::string caseName, op, dtype, variant;
    std::string status{"FAIL"}; //!< PASS, FAIL or SKIP
    double psnr{std::numeric_limits<double>::quiet_NaN()};
    double maxAbs{std::numeric_limits<double>::quiet_NaN()};
    int64_t mismatches{-1}; //!< int32 outputs: elements that differ
    int64_t nonFinite{0};
    double floorDb{0};
    bool deterministic{false};
    size_t workspaceBytes{0};
    std::string message;
};

std::string jsonString(std::string const& s)
{
    std::string out = "\"";
    for (char c : s)
    {
        if (c == '"' || c == '\\')
            out += '\\', out += c;
        else if (static_cast<unsigned char>(c) < 0x20)
            out += ' ';
        else
            out += c;
    }
    return out + "\"";
}

std::string jsonNumber(double v)
{
    if (std::isnan(v))
        return "null";
    if (std::isinf(v))
        return v > 0 ? "1e999" : "-1e999"; // JSON has no inf; Python's json reads 1e999 as inf
    std::ostringstream os;
    os.precision(10);
    os << v;
    return os.str();
}

void writeJson(std::string const& path, std::string const& device, std::vector<Result> const& results,
    bool variantsHonoured)
{
    std::string const tmp = path + ".tmp";
    {
        std::ofstream out(tmp);
        out << "{\n  \"device\": " << jsonString(device) << ",\n  \"variants_honoured\": "
            << (variantsHonoured ? "true" : "false") << ",\n  \"cases\": [\n";
        for (size_t i = 0; i < results.size(); ++i)
        {
            Result const& r = results[i];
            out << "    {\"case\": " << jsonString(r.caseName) << ", \"op\": " << jsonString(r.op)
                << ", \"dtype\": " << jsonString(r.dtype) << ", \"variant\": " << jsonString(r.variant)
                << ", \"status\": " << jsonString(r.status) << ", \"psnr_db\": " << jsonNumber(r.psnr)
                << ", \"max_abs\": " << jsonNumber(r.maxAbs) << ", \"mismatches\": " << r.mismatches
                << ", \"non_finite\": " << r.nonFinite << ", \"floor_db\": " << jsonNumber(r.floorDb)
                << ", \"deterministic\": " << (r.deterministic ? "true" : "false")
                << ", \"workspace_bytes\": " << r.workspaceBytes << ", \"message\": " << jsonString(r.message) << "}"
                << (i + 1 < results.size() ? "," : "") << "\n";
        }
        out << "  ]\n}\n";
        if (!out)
            throw UsageError("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        throw UsageError("cannot rename " + tmp + " to " + path);
}

//! Compares got (the outputs' bytes, in the plugin's dtypes) with the references; sets r's verdict.
void compare(Case const& c, std::vector<std::vector<char>> const& got, Result& r)
{
    double sumSq = 0;
    int64_t n = 0;
    bool exact = true;
    r.maxAbs = 0;
    r.mismatches = 0;
    for (size_t k = 0; k < c.outputs.size(); ++k)
    {
        Tensor const& ref = c.outputs[k];
        auto const elements = static_cast<size_t>(count(ref.dims));
        if (ref.type == DataType::kINT32)
        {
            for (size_t i = 0; i < elements; ++i)
                if (std::memcmp(got[k].data() + 4 * i, ref.data.data() + 4 * i, 4) != 0)
                    ++r.mismatches;
            continue;
        }
        exact = false;
        for (size_t i = 0; i < elements; ++i)
        {
            double want{};
            std::memcpy(&want, ref.data.data() + 8 * i, 8);
            double const value = elementAt(got[k], ref.type, i);
            if (!std::isfinite(value))
            {
                ++r.nonFinite;
                continue;
            }
            double const d = value - want;
            sumSq += d * d;
            r.maxAbs = std::max(r.maxAbs, std::fabs(d));
            ++n;
        }
    }
    if (n > 0)
        r.psnr = sumSq == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(1.0 / (sumSq / static_cast<double>(n)));
    bool const ok = r.mismatches == 0 && r.nonFinite == 0 && r.deterministic
        && (exact || (!std::isnan(r.psnr) && r.psnr >= c.floorDb));
    r.status = ok ? "PASS" : "FAIL";
    if (!r.deterministic)
        r.message = "two enqueues gave different outputs";
    else if (r.nonFinite > 0)
        r.message = std::to_string(r.nonFinite) + " non-finite outputs (poison left or NaN computed)";
    else if (r.mismatches > 0)
        r.message = std::to_string(r.mismatches) + " int32 elements differ";
    else if (!ok)
        r.message = "below the floor";
}


Result newResult(Case const& c, std::string const& variant)
{
    Result r;
    r.caseName = c.name;
    r.op = c.op;
    r.dtype = typeText(c.inputs[0].type);
    r.variant = variant;
    r.floorDb = c.floorDb;
    return r;
}

// ---------------------------------------------------------------------------------- one case

class CaseRunner
{
public:
    CaseRunner(PluginLibrary const& lib, CapturingLogger& logger, cudaStream_t stream)
        : mLib(lib)
        , mLogger(logger)
        , mStream(stream)
    {
    }

    //! Runs c (with the BucketAttention variant set when non-empty); enqueueStatus gets enqueue's return.
    Result run(Case const& c, std::string const& variant, int32_t* enqueueStatus = nullptr)
    {
        Result r = newResult(c, variant);
        mLogger.take();
        try
        {
            runChecked(c, variant, r, enqueueStatus);
        }
        catch (CaseFailure const& e)
        {
            r.status = "FAIL";
            r.message = e.what();
        }
        if (!variant.empty())
            unsetenv(kVARIANT_ENV);
        std::string const logged = mLogger.take();
        if (!logged.empty())
            r.message += (r.message.empty() ? "" : " | plugin log: ") + logged;
        cudaGetLastError(); // a failed case must not fail the next one
        return r;
    }

private:
    void require(bool ok, std::string const& what)
    {
        if (!ok)
            throw CaseFailure(what);
    }

    void runChecked(Case const& c, std::string const& variant, Result& r, int32_t* enqueueStatus)
    {
        IPluginCreatorV3One* creator = mLib.creator(c.op);
        require(creator != nullptr, "no creator named " + c.op + " in the library");
        Fields fields;
        for (Attribute const& a : c.attributes)
        {
            if (a.isFloat)
                fields.x(a.name.c_str(), static_cast<float>(a.value));
            else
                fields.i(a.name.c_str(), static_cast<int32_t>(a.value));
        }
        std::unique_ptr<IPluginV3> plugin(creator->createPlugin(c.name.c_str(), fields.get(), TensorRTPhase::kBUILD));
        require(plugin != nullptr, "createPlugin(kBUILD) returned nullptr");
        IPluginV3OneBuild* b = build(plugin.get());
        require(b != nullptr && runtime(plugin.get()) != nullptr, "no BUILD / RUNTIME capability");

        auto const nIn = static_cast<int32_t>(c.inputs.size());
        auto const nOut = static_cast<int32_t>(c.outputs.size());
        require(b->getNbOutputs() == nOut, "getNbOutputs() = " + std::to_string(b->getNbOutputs()) + ", the case has "
                + std::to_string(nOut));

        std::vector<DataType> inTypes, outTypes(static_cast<size_t>(nOut), DataType::kBOOL);
        for (Tensor const& t : c.inputs)
            inTypes.push_back(t.type);
        require(b->getOutputDataTypes(outTypes.data(), nOut, inTypes.data(), nIn) == 0, "getOutputDataTypes failed");
        for (int32_t i = 0; i < nOut; ++i)
            require(outTypes[static_cast<size_t>(i)] == c.outputs[static_cast<size_t>(i)].type,
                "getOutputDataTypes: output " + std::to_string(i) + " is " + typeText(outTypes[static_cast<size_t>(i)])
                    + ", the reference " + typeText(c.outputs[static_cast<size_t>(i)].type));

        // Output shapes for the actual inputs (checked against the reference) and for the largest.
        ConstantExprBuilder eb;
        auto shapes = [&](bool largest) {
            std::vector<DimsExprs> in, out(static_cast<size_t>(nOut));
            for (Tensor const& t : c.inputs)
                in.push_back(eb.exprs(largest ? t.maxDims : t.dims));
            require(b->getOutputShapes(in.data(), nIn, nullptr, 0, out.data(), nOut, eb) == 0, "getOutputShapes failed");
            std::vector<std::vector<int64_t>> dims;
            for (DimsExprs const& e : out)
                dims.push_back(values(e));
            return dims;
        };
        std::vector<std::vector<int64_t>> const outDims = shapes(false);
        std::vector<std::vector<int64_t>> const outMax = shapes(true);
        for (int32_t i = 0; i < nOut; ++i)
            require(outDims[static_cast<size_t>(i)] == c.outputs[static_cast<size_t>(i)].dims,
                "getOutputShapes: output " + std::to_string(i) + " is " + dimsText(outDims[static_cast<size_t>(i)])
                    + ", the reference " + dimsText(c.outputs[static_cast<size_t>(i)].dims));

        std::vector<DynamicPluginTensorDesc> io;
        for (Tensor const& t : c.inputs)
            io.push_back(dynamicDesc(t.dims, t.type, t.maxDims));
        for (int32_t i = 0; i < nOut; ++i)
            io.push_back(dynamicDesc(outDims[static_cast<size_t>(i)], outTypes[static_cast<size_t>(i)],
                outMax[static_cast<size_t>(i)]));
        for (int32_t pos = 0; pos < nIn + nOut; ++pos)
            require(b->supportsFormatCombination(pos, io.data(), nIn, nOut),
                "supportsFormatCombination(" + std::to_string(pos) + ") refuses the case's LINEAR types");
        // At build time TensorRT gives -1 for the extents the profile leaves open: so do we.
        std::vector<DynamicPluginTensorDesc> profile = io;
        for (DynamicPluginTensorDesc& d : profile)
            for (int32_t k = 0; k < d.desc.dims.nbDims; ++k)
                if (d.min.d[k] != d.max.d[k])
                    d.desc.dims.d[k] = -1;
        require(b->configurePlugin(profile.data(), nIn, profile.data() + nIn, nOut) == 0, "configurePlugin failed");
        size_t const workspace = b->getWorkspaceSize(profile.data(), nIn, profile.data() + nIn, nOut);
        r.workspaceBytes = workspace;
        require(b->getTimingCacheID() != nullptr, "getTimingCacheID() is nullptr (timing caching disabled)");

        // Deserialisation: serialised fields -> createPlugin(kRUNTIME) -> attachToContext.
        PluginFieldCollection const* serial = runtime(plugin.get())->getFieldsToSerialize();
        require(serial != nullptr, "getFieldsToSerialize returned nullptr");
        std::unique_ptr<IPluginV3> deserialised(creator->createPlugin(c.name.c_str(), serial, TensorRTPhase::kRUNTIME));
        require(deserialised != nullptr, "createPlugin(kRUNTIME) from the serialised fields returned nullptr");
        std::unique_ptr<IPluginV3> attached(runtime(deserialised.get())->attachToContext(nullptr));
        require(attached != nullptr, "attachToContext returned nullptr");
        IPluginV3OneRuntime* rt = runtime(attached.get());

        // Device buffers: inputs uploaded; outputs and workspace poisoned, guarded.
        std::vector<std::unique_ptr<DeviceBuffer>> inputs, outputs;
        std::vector<void const*> inPtrs;
        std::vector<void*> outPtrs;
        for (Tensor const& t : c.inputs)
        {
            inputs.emplace_back(new DeviceBuffer(t.data.size()));
            inputs.back()->upload(t.data);
            inPtrs.push_back(inputs.back()->get());
        }
        for (int32_t i = 0; i < nOut; ++i)
        {
            Tensor const& t = c.outputs[static_cast<size_t>(i)];
            outputs.emplace_back(new DeviceBuffer(static_cast<size_t>(count(t.dims)) * elementSize(t.type)));
            outPtrs.push_back(outputs.back()->get());
        }
        DeviceBuffer ws(workspace);
        std::vector<PluginTensorDesc> inDesc, outDesc;
        for (int32_t i = 0; i < nIn + nOut; ++i)
            (i < nIn ? inDesc : outDesc).push_back(io[static_cast<size_t>(i)].desc);

        for (int pass = 0; pass < 2; ++pass) // the second onShapeChange is served from the memo
            require(rt->onShapeChange(inDesc.data(), nIn, outDesc.data(), nOut) == 0, "onShapeChange failed");

        if (!variant.empty())
            setenv(kVARIANT_ENV, variant.c_str(), 1);
        std::vector<std::vector<char>> first;
        for (int pass = 0; pass < 2; ++pass)
        {
            for (auto& o : outputs)
                o->poison();
            ws.poison();
            cuda(cudaDeviceSynchronize(), "before enqueue");
            int32_t const status
                = rt->enqueue(inDesc.data(), outDesc.data(), inPtrs.data(), outPtrs.data(), ws.get(), mStream);
            if (enqueueStatus != nullptr)
                *enqueueStatus = status;
            require(status == 0, "enqueue returned " + std::to_string(status));
            cuda(cudaStreamSynchronize(mStream), "kernels (cudaStreamSynchronize after enqueue)");
            cuda(cudaGetLastError(), "kernels (cudaGetLastError)");
            for (size_t i = 0; i < outputs.size(); ++i)
                require(outputs[i]->guardIntact(), "enqueue wrote past the end of output " + std::to_string(i));
            require(ws.guardIntact(), "enqueue wrote past the end of the workspace (" + std::to_string(workspace)
                    + " bytes from getWorkspaceSize)");
            std::vector<std::vector<char>> got;
            for (auto& o : outputs)
                got.push_back(o->download());
            if (pass == 0)
                first = std::move(got);
            else
                r.deterministic = got == first;
        }
        compare(c, first, r);
    }

    PluginLibrary const& mLib;
    CapturingLogger& mLogger;
    cudaStream_t mStream;
};

std::vector<std::string> splitList(std::string const& s)
{
    std::vector<std::string> parts;
    std::stringstream in(s);
    std::string part;
    while (std::getline(in, part, ','))
        if (!part.empty())
            parts.push_back(part);
    return parts;
}

void printResult(Result const& r)
{
    std::printf("CASE %-34s %-8s %-7s %-4s", r.caseName.c_str(), r.dtype.c_str(),
        r.variant.empty() ? "-" : r.variant.c_str(), r.status.c_str());
    if (r.mismatches >= 0 && std::isnan(r.psnr))
        std::printf(" exact=%s", r.mismatches == 0 ? "yes" : "no");
    if (!std::isnan(r.psnr))
        std::printf(" psnr=%.1fdB(floor %.0f) max_abs=%.3g", r.psnr, r.floorDb, r.maxAbs);
    std::printf(" workspace=%zu", r.workspaceBytes);
    if (!r.message.empty())
        std::printf(" : %s", r.message.c_str());
    std::printf("\n");
}

void printSummaryAndWrite(std::vector<Result> const& results, std::string const& json, std::string const& device,
    bool honoured, int& failed)
{
    int passed = 0, skipped = 0;
    failed = 0;
    for (Result const& r : results)
        (r.status == "PASS" ? passed : r.status == "SKIP" ? skipped : failed) += 1;
    std::printf("%s: %d passed, %d failed, %d skipped\n", failed ? "FAILED" : "PASSED", passed, failed, skipped);
    if (!json.empty())
        writeJson(json, device, results, honoured);
}

//! --replay DIR: compare outputs saved as DIR/<case>.<output>.out (raw, the plugin's dtype) instead of
//! enqueueing: the comparison and the report without a GPU (the CPU tests check them this way).
int replayOutputs(std::vector<Case> const& cases, std::string const& dir, std::string const& json)
{
    std::vector<Result> results;
    for (Case const& c : cases)
    {
        Result r = newResult(c, "replay");
        std::vector<std::vector<char>> got;
        for (Tensor const& t : c.outputs)
            got.push_back(readFile(dir + "/" + c.name + "." + t.name + ".out",
                static_cast<size_t>(count(t.dims)) * elementSize(t.type)));
        r.deterministic = true;
        compare(c, got, r);
        results.push_back(r);
        printResult(r);
    }
    int failed = 0;
    printSummaryAndWrite(results, json, "replay (no device)", false, failed);
    return failed ? 1 : 0;
}

int run(int argc, char** argv)
{
    std::string library, casesDir, json, replay, variantList = "gather,chunk";
    for (int i = 1; i < argc; ++i)
    {
        std::string const a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                throw UsageError(a + " needs a value");
            return argv[++i];
        };
        if (a == "--library")
            library = value();
        else if (a == "--cases")
            casesDir = value();
        else if (a == "--json")
            json = value();
        else if (a == "--variants")
            variantList = value();
        else if (a == "--replay")
            replay = value();
        else
            throw UsageError("unknown argument " + a);
    }
    if (library.empty() || casesDir.empty())
        throw UsageError("usage: srdeploy_trt_enqueue_harness --library LIB --cases DIR [--variants gather,chunk] "
                         "[--json FILE] [--replay OUTPUTS_DIR]");
    std::vector<std::string> const variants = splitList(variantList);
    if (variants.empty())
        throw UsageError("--variants needs at least one name (gather, chunk)");

    // Everything that can be checked without a GPU first.
    std::vector<Case> const cases = readCases(casesDir);
    PluginLibrary lib(library);
    for (Case const& c : cases)
        if (lib.creator(c.op) == nullptr)
            throw UsageError("case " + c.name + ": the library has no creator named " + c.op);
    if (!replay.empty())
        return replayOutputs(cases, replay, json);
    int devices = 0;
    cudaError_t const err = cudaGetDeviceCount(&devices);
    if (err != cudaSuccess || devices == 0)
    {
        std::fprintf(stderr,
            "error: no CUDA device (cudaGetDeviceCount: %s): the enqueue harness runs the plugins on a GPU; "
            "run it on a machine with one (scripts/gpu_check.sh)\n",
            err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
        return 3;
    }
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    std::printf("device 0: %s (sm_%d%d), %zu cases, variants %s\n", prop.name, prop.major, prop.minor, cases.size(),
        variantList.c_str());

    CapturingLogger logger;
    LoggerFinder finder(&logger);
    lib.setLoggerFinder(&finder);
    cudaStream_t stream{};
    cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    CaseRunner runner(lib, logger, stream);

    // Does the library honour SRDEPLOY_BUCKET_ATTENTION? It must refuse a value it does not know.
    bool honoured = true;
    for (Case const& c : cases)
    {
        if (c.op == "BucketAttention")
        {
            int32_t status = kNOT_RUN;
            runner.run(c, "srdeploy-harness-unknown-variant", &status);
            honoured = status != 0;
            std::printf("variant probe: an unknown %s value was %s\n", kVARIANT_ENV,
                status == kNOT_RUN ? "not tried (the case failed before enqueue)"
                    : honoured     ? "refused (the library selects variants)"
                                   : "accepted (this library ignores the variable)");
            break;
        }
    }

    std::vector<Result> results;
    for (Case const& c : cases)
    {
        if (c.op != "BucketAttention")
        {
            results.push_back(runner.run(c, ""));
            printResult(results.back());
            continue;
        }
        for (std::string const& v : variants)
        {
            if (!honoured && v != "gather")
            {
                Result r = newResult(c, v);
                r.status = "SKIP";
                r.message = std::string("this plugin library ignores ") + kVARIANT_ENV + ": variant " + v
                    + " is not in this build";
                results.push_back(r);
            }
            else
            {
                results.push_back(runner.run(c, v));
            }
            printResult(results.back());
        }
    }
    cudaStreamDestroy(stream);
    int failed = 0;
    printSummaryAndWrite(results, json,
        std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")", honoured,
        failed);
    return failed ? 1 : 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(argc, argv);
    }
    catch (UsageError const& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 2;
    }
    catch (std::exception const& e)
    {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 2;
    }
}
