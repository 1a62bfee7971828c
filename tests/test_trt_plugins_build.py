"""The TensorRT plugin library, built and exercised on the CPU against TensorRT *headers*.

Set SRDEPLOY_TRT_HEADERS to a TensorRT install or to a folder holding NvInfer.h (TensorRT itself
need not be installed: the plugins link no TensorRT library). Without it these tests skip; CI has
no TensorRT headers, so they skip there. What runs:

- the CMake build of libsrdeploy_trt_plugins.so with warnings as errors (-Wsuggest-override etc.);
- its dynamic symbols are exactly getCreators and setLoggerFinder, and it needs no libnvinfer;
- a small C++ driver (compiled here against the same headers) dlopens it and calls, through the
  TensorRT interfaces only, what TensorRT calls before any GPU work: getCreators, the creators'
  names/versions/namespaces/fields, createPlugin with ONNX-parser-style fields, attribute
  validation, getCapabilityInterface, getNbOutputs, getOutputDataTypes, supportsFormatCombination,
  getOutputShapes with an IExprBuilder that evaluates constants, configurePlugin/getWorkspaceSize
  (BucketAttention, CrossScaleFold: arithmetic), getFieldsToSerialize -> createPlugin(kRUNTIME)
  (what engine deserialisation does), clone and attachToContext.
enqueue (the kernels on a GPU) is not run here.
"""
import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from plugins import build as plugin_build

HEADERS_ENV = "SRDEPLOY_TRT_HEADERS"


def trt_root() -> Path:
    value = os.environ.get(HEADERS_ENV)
    if not value:
        pytest.skip(f"{HEADERS_ENV} not set: no TensorRT headers to compile the plugins against (CI has none)")
    path = Path(value)
    if (path / "NvInfer.h").is_file():
        path = path.parent if path.name == "include" else path
    if not (path / "include" / "NvInfer.h").is_file():
        pytest.skip(f"{HEADERS_ENV}={value} holds no NvInfer.h or include/NvInfer.h")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = trt_root()
    if plugin_build.find_nvcc() is None:
        pytest.skip("nvcc not found: the kernels the plugins wrap cannot be compiled")
    build_dir = tmp_path_factory.mktemp("srd_trt_build")
    try:
        plugin_build.build(build_dir, jobs=2, quiet=True, tensorrt_root=root)
    except plugin_build.BuildError as e:
        pytest.fail(f"the TensorRT plugin library does not build:\n{e}")
    return root, build_dir / plugin_build.TRT_LIB_NAME


def test_builds_and_exports_only_the_loader_entry_points(built):
    _, lib = built
    nm = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    symbols = sorted(line.split()[-1] for line in nm.stdout.splitlines() if line.strip())
    assert symbols == ["getCreators", "setLoggerFinder"]
    needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "libnvinfer" not in needed and "libcudart.so" not in needed  # headers only; static cudart


def test_get_creators_from_python(built):
    _, lib = built
    handle = ctypes.CDLL(str(lib))
    n = ctypes.c_int32(-1)
    handle.getCreators.restype = ctypes.c_void_p
    handle.getCreators.argtypes = [ctypes.POINTER(ctypes.c_int32)]  # int32_t& is a pointer in the ABI
    assert handle.getCreators(ctypes.byref(n)) and n.value == 3


def cuda_include_dir(build_dir: Path) -> Path:
    """The folder holding cuda_runtime_api.h (the TensorRT headers include it): CMake's answer first."""
    cache = build_dir / "CMakeCache.txt"
    candidates = []
    if cache.is_file():
        for line in cache.read_text().splitlines():
            if line.startswith("CUDAToolkit_INCLUDE_DIR:"):
                candidates.append(Path(line.split("=", 1)[1]))
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates.append(Path(root) / "include")
    candidates.append(Path(plugin_build.find_nvcc()).resolve().parents[1] / "include")
    for c in candidates:
        if (c / "cuda_runtime_api.h").is_file():
            return c
    pytest.skip("cuda_runtime_api.h not found")


DRIVER = r"""
#include "NvInferRuntime.h"
#include <dlfcn.h>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;
static int gFailures = 0;
#define CHECK(cond) do { if (!(cond)) { std::printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #cond); ++gFailures; } } while (0)

// IExprBuilder / IDimensionExpr that compute constants (TensorRT's own are behind mImpl too).
struct Expr : IDimensionExpr {
    struct Impl : apiv::VDimensionExpr {
        int64_t v{};
        bool isConstant() const override { return true; }
        int64_t getConstantValue() const override { return v; }
        bool isSizeTensor() const override { return false; }
    } impl;
    explicit Expr(int64_t v) { impl.v = v; mImpl = &impl; }
};
struct Builder : IExprBuilder {
    struct Impl : apiv::VExprBuilder {
        std::deque<std::unique_ptr<Expr>> pool;
        IDimensionExpr const* constant(int64_t v) override { pool.emplace_back(new Expr(v)); return pool.back().get(); }
        IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override {
            int64_t x = a.getConstantValue(), y = b.getConstantValue(), r = 0;
            switch (op) {
            case DimensionOperation::kSUM: r = x + y; break;
            case DimensionOperation::kPROD: r = x * y; break;
            case DimensionOperation::kSUB: r = x - y; break;
            case DimensionOperation::kMAX: r = x > y ? x : y; break;
            case DimensionOperation::kMIN: r = x < y ? x : y; break;
            default: return nullptr;
            }
            return constant(r);
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override { return nullptr; }
    } impl;
    Builder() { mImpl = &impl; }
};

static DimsExprs exprs(Builder& b, std::vector<int64_t> d) {
    DimsExprs e{}; e.nbDims = (int32_t) d.size();
    for (size_t i = 0; i < d.size(); ++i) e.d[i] = b.constant(d[i]);
    return e;
}
static std::vector<int64_t> values(DimsExprs const& e) {
    std::vector<int64_t> v; for (int i = 0; i < e.nbDims; ++i) v.push_back(e.d[i] ? e.d[i]->getConstantValue() : -999); return v;
}
static DynamicPluginTensorDesc desc(std::vector<int64_t> d, DataType t) {
    DynamicPluginTensorDesc x{}; x.desc.type = t; x.desc.format = TensorFormat::kLINEAR;
    x.desc.dims.nbDims = (int32_t) d.size(); x.min = x.opt = x.max = x.desc.dims;
    for (size_t i = 0; i < d.size(); ++i) x.desc.dims.d[i] = x.min.d[i] = x.opt.d[i] = x.max.d[i] = d[i];
    return x;
}

// ONNX parser style: INT -> kINT32, FLOAT -> kFLOAT32.
struct Fields {
    std::deque<int32_t> ints; std::deque<float> floats; std::vector<PluginField> f; PluginFieldCollection fc{};
    Fields& i(char const* n, int32_t v) { ints.push_back(v); f.emplace_back(n, &ints.back(), PluginFieldType::kINT32, 1); return *this; }
    Fields& x(char const* n, float v) { floats.push_back(v); f.emplace_back(n, &floats.back(), PluginFieldType::kFLOAT32, 1); return *this; }
    PluginFieldCollection const* get() { fc.nbFields = (int32_t) f.size(); fc.fields = f.data(); return &fc; }
};

static IPluginV3OneBuild* build(IPluginV3* p) { return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD)); }
static IPluginV3OneRuntime* runtime(IPluginV3* p) { return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME)); }
static IPluginV3OneCore* core(IPluginV3* p) { return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE)); }

// What engine deserialisation does: the serialised fields go back through createPlugin(kRUNTIME).
static void roundTrip(IPluginCreatorV3One* c, IPluginV3* p) {
    PluginFieldCollection const* fc = runtime(p)->getFieldsToSerialize();
    CHECK(fc != nullptr && fc->nbFields > 0);
    std::unique_ptr<IPluginV3> again(c->createPlugin("again", fc, TensorRTPhase::kRUNTIME));
    CHECK(again != nullptr);
    if (again) CHECK(std::strcmp(build(again.get())->getMetadataString(), build(p)->getMetadataString()) == 0);
    std::unique_ptr<IPluginV3> cloned(p->clone());
    CHECK(cloned && std::strcmp(build(cloned.get())->getMetadataString(), build(p)->getMetadataString()) == 0);
    std::unique_ptr<IPluginV3> attached(runtime(p)->attachToContext(nullptr));
    CHECK(attached != nullptr);
    std::printf("OK roundtrip %s %s\n", core(p)->getPluginName(), build(p)->getMetadataString());
}

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { std::printf("FAIL dlopen %s\n", dlerror()); return 1; }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(h, "getCreators"));
    CHECK(getCreators != nullptr && dlsym(h, "setLoggerFinder") != nullptr);
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    CHECK(n == 3);
    std::map<std::string, IPluginCreatorV3One*> byName;
    for (int32_t k = 0; k < n; ++k) {
        CHECK(std::strcmp(creators[k]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
        auto* c = static_cast<IPluginCreatorV3One*>(creators[k]);
        CHECK(std::strcmp(c->getPluginVersion(), "1") == 0);
        CHECK(std::strcmp(c->getPluginNamespace(), "srdeploy") == 0);
        byName[c->getPluginName()] = c;
        PluginFieldCollection const* names = c->getFieldNames();
        std::printf("OK creator %s v%s ns=%s fields:", c->getPluginName(), c->getPluginVersion(), c->getPluginNamespace());
        for (int i = 0; i < names->nbFields; ++i) std::printf(" %s(%d)", names->fields[i].name, (int) names->fields[i].type);
        std::printf("\n");
    }
    Builder eb;

    { // BucketSort
        auto* c = byName.at("BucketSort");
        Fields f; f.i("num_buckets", 8);
        std::unique_ptr<IPluginV3> p(c->createPlugin("bs", f.get(), TensorRTPhase::kBUILD));
        CHECK(p != nullptr);
        auto* b = build(p.get());
        CHECK(std::strcmp(core(p.get())->getPluginName(), "BucketSort") == 0);
        CHECK(std::strcmp(core(p.get())->getPluginNamespace(), "srdeploy") == 0);
        CHECK(b->getNbOutputs() == 2);
        DataType in[1] = {DataType::kINT32}, out[2] = {DataType::kFLOAT, DataType::kFLOAT};
        CHECK(b->getOutputDataTypes(out, 2, in, 1) == 0 && out[0] == DataType::kINT32 && out[1] == DataType::kINT32);
        DataType bad[1] = {DataType::kFLOAT};
        CHECK(b->getOutputDataTypes(out, 2, bad, 1) != 0);
        DimsExprs i0 = exprs(eb, {2, 300}), o[2];
        CHECK(b->getOutputShapes(&i0, 1, nullptr, 0, o, 2, eb) == 0);
        CHECK(values(o[0]) == std::vector<int64_t>({2, 300}) && values(o[1]) == std::vector<int64_t>({2, 300}));
        DynamicPluginTensorDesc io[3] = {desc({2, 300}, DataType::kINT32), desc({2, 300}, DataType::kINT32), desc({2, 300}, DataType::kINT32)};
        CHECK(b->supportsFormatCombination(0, io, 1, 2) && b->supportsFormatCombination(2, io, 1, 2));
        io[1].desc.type = DataType::kINT64; CHECK(!b->supportsFormatCombination(1, io, 1, 2));
        io[0].desc.format = TensorFormat::kCHW32; CHECK(!b->supportsFormatCombination(0, io, 1, 2));
        roundTrip(c, p.get());
        Fields z; z.i("num_buckets", 0);
        CHECK(c->createPlugin("bad", z.get(), TensorRTPhase::kBUILD) == nullptr);
        Fields none;
        CHECK(c->createPlugin("bad", none.get(), TensorRTPhase::kBUILD) == nullptr);
        std::printf("OK BucketSort\n");
    }
    { // BucketAttention
        auto* c = byName.at("BucketAttention");
        Fields f; f.i("chunk_size", 144).i("n_hashes", 4).x("eps", 5e-5f);
        std::unique_ptr<IPluginV3> p(c->createPlugin("ba", f.get(), TensorRTPhase::kBUILD));
        CHECK(p != nullptr);
        auto* b = build(p.get());
        CHECK(b->getNbOutputs() == 1);
        for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
            DataType in[4] = {t, t, DataType::kINT32, DataType::kINT32}, out[1] = {DataType::kINT32};
            CHECK(b->getOutputDataTypes(out, 1, in, 4) == 0 && out[0] == t);
        }
        DataType mixed[4] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT32, DataType::kINT32}, out[1];
        CHECK(b->getOutputDataTypes(out, 1, mixed, 4) != 0);
        DimsExprs i[4] = {exprs(eb, {1, 1024, 16}), exprs(eb, {1, 1024, 64}), exprs(eb, {1, 4096}), exprs(eb, {1, 4096})}, o[1];
        CHECK(b->getOutputShapes(i, 4, nullptr, 0, o, 1, eb) == 0 && values(o[0]) == std::vector<int64_t>({1, 1024, 64}));
        for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
            DynamicPluginTensorDesc io[5] = {desc({1, 1024, 16}, t), desc({1, 1024, 64}, t), desc({1, 4096}, DataType::kINT32),
                                             desc({1, 4096}, DataType::kINT32), desc({1, 1024, 64}, t)};
            for (int pos = 0; pos < 5; ++pos) CHECK(b->supportsFormatCombination(pos, io, 4, 1));
            io[1].desc.type = t == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
            CHECK(!b->supportsFormatCombination(1, io, 4, 1));
            io[1].desc.type = t;
            CHECK(b->configurePlugin(io, 4, io + 4, 1) == 0);
            size_t ws = b->getWorkspaceSize(io, 4, io + 4, 1);
            auto up = [](size_t x) { return (x + 255) / 256 * 256; };
            CHECK(ws == up(4 * 1024) + up(4 * 4 * 1024 * 64) + up(4 * 4 * 1024)); // the kernel library's query
            std::printf("OK BucketAttention workspace %zu\n", ws);
            DynamicPluginTensorDesc wrong[5] = {io[0], io[1], desc({1, 4000}, DataType::kINT32), io[3], io[4]};
            CHECK(b->configurePlugin(wrong, 4, wrong + 4, 1) != 0);   // order is not [N, R*L]
        }
        DynamicPluginTensorDesc small[5] = {desc({1, 100, 16}, DataType::kFLOAT), desc({1, 100, 64}, DataType::kFLOAT),
            desc({1, 400}, DataType::kINT32), desc({1, 400}, DataType::kINT32), desc({1, 100, 64}, DataType::kFLOAT)};
        CHECK(b->configurePlugin(small, 4, small + 4, 1) != 0);       // L < chunk_size
        roundTrip(c, p.get());
        Fields z; z.i("chunk_size", 144).i("n_hashes", 4).x("eps", -1.f);
        CHECK(c->createPlugin("bad", z.get(), TensorRTPhase::kBUILD) == nullptr);
        Fields w; w.i("chunk_size", 144).x("n_hashes", 4.f).x("eps", 5e-5f);   // FLOAT where INT is due
        CHECK(c->createPlugin("bad", w.get(), TensorRTPhase::kBUILD) == nullptr);
        std::printf("OK BucketAttention\n");
    }
    { // CrossScaleFold
        auto* c = byName.at("CrossScaleFold");
        Fields f; f.i("stride", 2).i("padding", 2);
        std::unique_ptr<IPluginV3> p(c->createPlugin("csf", f.get(), TensorRTPhase::kBUILD));
        CHECK(p != nullptr);
        auto* b = build(p.get());
        DimsExprs i[2] = {exprs(eb, {2, 576, 24, 20}), exprs(eb, {2, 576, 64, 6, 6})}, o[1];
        CHECK(b->getOutputShapes(i, 2, nullptr, 0, o, 1, eb) == 0);
        // (H-1)*stride - 2*padding + k = 23*2 - 4 + 6 = 48, (20-1)*2 - 4 + 6 = 40
        CHECK(values(o[0]) == std::vector<int64_t>({2, 64, 48, 40}));
        std::printf("OK CrossScaleFold shape %lld %lld %lld %lld\n", (long long) values(o[0])[0], (long long) values(o[0])[1],
                    (long long) values(o[0])[2], (long long) values(o[0])[3]);
        DataType in[2] = {DataType::kHALF, DataType::kHALF}, out[1];
        CHECK(b->getOutputDataTypes(out, 1, in, 2) == 0 && out[0] == DataType::kHALF);
        DynamicPluginTensorDesc io[3] = {desc({2, 576, 24, 20}, DataType::kHALF), desc({2, 576, 64, 6, 6}, DataType::kHALF),
                                         desc({2, 64, 48, 40}, DataType::kHALF)};
        for (int pos = 0; pos < 3; ++pos) CHECK(b->supportsFormatCombination(pos, io, 2, 1));
        io[0].desc.type = DataType::kBF16; CHECK(!b->supportsFormatCombination(0, io, 2, 1));
        io[0].desc.type = DataType::kHALF;
        CHECK(b->configurePlugin(io, 2, io + 2, 1) == 0);
        size_t ws = b->getWorkspaceSize(io, 2, io + 2, 1);
        CHECK(ws == (4ull * 2 * 64 * 6 * 6 * 24 * 20 + 255) / 256 * 256);
        std::printf("OK CrossScaleFold workspace %zu\n", ws);
        roundTrip(c, p.get());
        Fields z; z.i("stride", 0).i("padding", 0);
        CHECK(c->createPlugin("bad", z.get(), TensorRTPhase::kBUILD) == nullptr);
        std::printf("OK CrossScaleFold\n");
    }
    std::printf("%s %d failures\n", gFailures ? "FAILED" : "PASSED", gFailures);
    return gFailures ? 1 : 0;
}
"""


def test_plugins_through_the_tensorrt_interfaces(built, tmp_path):
    root, lib = built
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "driver.cpp"
    src.write_text(DRIVER)
    exe = tmp_path / "driver"
    cuda_include = cuda_include_dir(lib.parent)
    compile_ = subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-isystem", str(root / "include"),
                               "-isystem", str(cuda_include), str(src), "-o", str(exe), "-ldl"],
                              capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stderr[-4000:]
    run = subprocess.run([str(exe), str(lib)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "PASSED 0 failures" in run.stdout, run.stdout + run.stderr
    for op in ("BucketSort", "BucketAttention", "CrossScaleFold"):
        assert f"OK creator {op} v1 ns=srdeploy" in run.stdout and f"OK roundtrip {op}" in run.stdout
    # Bad attributes are refused with a message naming the op (stderr: no TensorRT logger here).
    assert "[srdeploy] BucketSort: num_buckets must be > 0" in run.stderr
    assert "[srdeploy] BucketAttention: attribute n_hashes must be an integer" in run.stderr
    assert "L = 100 < chunk_size = 144" in run.stderr


def test_plugin_library_loads_in_tensorrt(built):
    """Where TensorRT is installed: IPluginRegistry::loadLibrary finds the three creators."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be installed on CI machines)")
    _, lib = built
    registry = trt.get_plugin_registry()
    assert registry.load_library(str(lib))
    for op in ("BucketSort", "BucketAttention", "CrossScaleFold"):
        assert registry.get_creator(op, "1", "srdeploy") is not None
