/*
 * srdeploy_trt_interface_driver LIBRARY: calls, through the TensorRT interfaces only, what TensorRT
 * calls before any GPU work: getCreators, the creators' names/versions/namespaces/fields,
 * createPlugin with ONNX-parser-style fields, attribute validation, getCapabilityInterface,
 * getNbOutputs, getOutputDataTypes, supportsFormatCombination, getOutputShapes, configurePlugin /
 * getWorkspaceSize (BucketAttention, CrossScaleFold: arithmetic), getTimingCacheID,
 * getFieldsToSerialize -> createPlugin(kRUNTIME) (engine deserialisation), clone, attachToContext.
 * Runs on any machine (no GPU). Prints "OK ..." lines and "PASSED 0 failures"; exit 1 on a failure.
 * tests/test_trt_plugins_build.py runs it.
 */
#include "trtHarnessSupport.h"

#include <cstdio>
#include <exception>

#ifndef SRD_KERNELS_LIB_FILE // CMake passes the name from plugins/build.py
#define SRD_KERNELS_LIB_FILE "libsrdeploy_kernels.so"
#endif

using namespace srdeploy::harness;

namespace
{
int gFailures = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #cond);                                                 \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

using Shape = std::vector<int64_t>;

// The kernel library's own size query (SRD_KERNELS_LIB_FILE, set by CMake: built beside the plugin library):
// the plugin must ask TensorRT for exactly what the kernels need, whichever BucketAttention variant
// runs (the query covers both).
using AttentionWorkspaceQuery = int (*)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, size_t*);
AttentionWorkspaceQuery gAttentionWorkspace = nullptr;

size_t attentionWorkspace(int64_t n, int64_t length, int64_t c, int64_t channels, int64_t chunkSize,
    int64_t nHashes, DataType type)
{
    size_t bytes = 0;
    int const dtype = type == DataType::kHALF ? 1 : 0;
    if (gAttentionWorkspace == nullptr || gAttentionWorkspace(n, length, c, channels, chunkSize, nHashes, dtype, &bytes) != 0)
    {
        return 0;
    }
    return bytes;
}

// What engine deserialisation does: the serialised fields go back through createPlugin(kRUNTIME).
void roundTrip(IPluginCreatorV3One* c, IPluginV3* p)
{
    PluginFieldCollection const* fc = runtime(p)->getFieldsToSerialize();
    CHECK(fc != nullptr && fc->nbFields > 0);
    std::unique_ptr<IPluginV3> again(c->createPlugin("again", fc, TensorRTPhase::kRUNTIME));
    CHECK(again != nullptr);
    if (again)
    {
        CHECK(std::strcmp(build(again.get())->getMetadataString(), build(p)->getMetadataString()) == 0);
    }
    std::unique_ptr<IPluginV3> cloned(p->clone());
    CHECK(cloned && std::strcmp(build(cloned.get())->getMetadataString(), build(p)->getMetadataString()) == 0);
    std::unique_ptr<IPluginV3> attached(runtime(p)->attachToContext(nullptr));
    CHECK(attached != nullptr);
    // Non-null timing cache ID (nullptr would disable timing caching), naming the op and its attributes.
    char const* id = build(p)->getTimingCacheID();
    CHECK(id != nullptr && std::strstr(id, core(p)->getPluginName()) != nullptr
        && std::strstr(id, build(p)->getMetadataString()) != nullptr);
    std::printf("OK roundtrip %s %s timing-cache-id '%s'\n", core(p)->getPluginName(), build(p)->getMetadataString(),
        id != nullptr ? id : "(null)");
}

void bucketSort(IPluginCreatorV3One* c, ConstantExprBuilder& eb)
{
    Fields f;
    f.i("num_buckets", 8);
    std::unique_ptr<IPluginV3> p(c->createPlugin("bs", f.get(), TensorRTPhase::kBUILD));
    CHECK(p != nullptr);
    if (!p)
    {
        return;
    }
    auto* b = build(p.get());
    CHECK(std::strcmp(core(p.get())->getPluginName(), "BucketSort") == 0);
    CHECK(std::strcmp(core(p.get())->getPluginNamespace(), "srdeploy") == 0);
    CHECK(b->getNbOutputs() == 2);
    DataType in[1] = {DataType::kINT32};
    DataType out[2] = {DataType::kFLOAT, DataType::kFLOAT};
    CHECK(b->getOutputDataTypes(out, 2, in, 1) == 0 && out[0] == DataType::kINT32 && out[1] == DataType::kINT32);
    DataType bad[1] = {DataType::kFLOAT};
    CHECK(b->getOutputDataTypes(out, 2, bad, 1) != 0);
    CHECK(b->getOutputDataTypes(out, 1, in, 1) != 0); // wrong output count
    DimsExprs i0 = eb.exprs({2, 300});
    DimsExprs o[2];
    CHECK(b->getOutputShapes(&i0, 1, nullptr, 0, o, 2, eb) == 0);
    CHECK(values(o[0]) == Shape({2, 300}) && values(o[1]) == Shape({2, 300}));
    DynamicPluginTensorDesc io[3] = {dynamicDesc({2, 300}, DataType::kINT32), dynamicDesc({2, 300}, DataType::kINT32),
        dynamicDesc({2, 300}, DataType::kINT32)};
    CHECK(b->supportsFormatCombination(0, io, 1, 2) && b->supportsFormatCombination(2, io, 1, 2));
    io[1].desc.type = DataType::kINT64;
    CHECK(!b->supportsFormatCombination(1, io, 1, 2));
    io[0].desc.format = TensorFormat::kCHW32;
    CHECK(!b->supportsFormatCombination(0, io, 1, 2));
    roundTrip(c, p.get());
    Fields z;
    z.i("num_buckets", 0);
    CHECK(c->createPlugin("bad", z.get(), TensorRTPhase::kBUILD) == nullptr);
    Fields none;
    CHECK(c->createPlugin("bad", none.get(), TensorRTPhase::kBUILD) == nullptr);
    std::printf("OK BucketSort\n");
}

void bucketAttention(IPluginCreatorV3One* c, ConstantExprBuilder& eb)
{
    Fields f;
    f.i("chunk_size", 144).i("n_hashes", 4).x("eps", 5e-5F);
    std::unique_ptr<IPluginV3> p(c->createPlugin("ba", f.get(), TensorRTPhase::kBUILD));
    CHECK(p != nullptr);
    if (!p)
    {
        return;
    }
    auto* b = build(p.get());
    CHECK(b->getNbOutputs() == 1);
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        DataType in[4] = {t, t, DataType::kINT32, DataType::kINT32};
        DataType out[1] = {DataType::kINT32};
        CHECK(b->getOutputDataTypes(out, 1, in, 4) == 0 && out[0] == t);
    }
    DataType mixed[4] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT32, DataType::kINT32};
    DataType out[1];
    CHECK(b->getOutputDataTypes(out, 1, mixed, 4) != 0);
    DimsExprs i[4] = {eb.exprs({1, 1024, 16}), eb.exprs({1, 1024, 64}), eb.exprs({1, 4096}), eb.exprs({1, 4096})};
    DimsExprs o[1];
    CHECK(b->getOutputShapes(i, 4, nullptr, 0, o, 1, eb) == 0 && values(o[0]) == Shape({1, 1024, 64}));
    auto up = [](size_t x) { return (x + 255) / 256 * 256; };
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        DynamicPluginTensorDesc io[5] = {dynamicDesc({1, 1024, 16}, t), dynamicDesc({1, 1024, 64}, t),
            dynamicDesc({1, 4096}, DataType::kINT32), dynamicDesc({1, 4096}, DataType::kINT32),
            dynamicDesc({1, 1024, 64}, t)};
        for (int32_t pos = 0; pos < 5; ++pos)
        {
            CHECK(b->supportsFormatCombination(pos, io, 4, 1));
        }
        io[1].desc.type = t == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
        CHECK(!b->supportsFormatCombination(1, io, 4, 1));
        io[1].desc.type = t;
        CHECK(b->configurePlugin(io, 4, io + 4, 1) == 0);
        size_t ws = b->getWorkspaceSize(io, 4, io + 4, 1);
        CHECK(ws == attentionWorkspace(1, 1024, 16, 64, 144, 4, t)); // the kernel library's query
        CHECK(ws >= up(4 * 1024) + up(4 * 4 * 1024 * 64) + up(4 * 4 * 1024)); // at least the gather variant's
        std::printf("OK BucketAttention workspace %zu\n", ws);
        DynamicPluginTensorDesc wrong[5] = {io[0], io[1], dynamicDesc({1, 4000}, DataType::kINT32), io[3], io[4]};
        CHECK(b->configurePlugin(wrong, 4, wrong + 4, 1) != 0); // a fixed profile: order is not [N, R*L]
    }
    // A dynamic profile: configurePlugin checks ranks and types, not the extents of the maxima (R*L of
    // the profile's largest q need not be the largest order TensorRT derives); onShapeChange does.
    DynamicPluginTensorDesc dyn[5] = {dynamicDesc({1, 1024, 16}, DataType::kFLOAT, {1, 2048, 16}),
        dynamicDesc({1, 1024, 64}, DataType::kFLOAT, {1, 2048, 64}),
        dynamicDesc({1, 4096}, DataType::kINT32, {1, 8000}), dynamicDesc({1, 4096}, DataType::kINT32, {1, 8000}),
        dynamicDesc({1, 1024, 64}, DataType::kFLOAT, {1, 2048, 64})};
    CHECK(b->configurePlugin(dyn, 4, dyn + 4, 1) == 0);
    CHECK(b->getWorkspaceSize(dyn, 4, dyn + 4, 1) == attentionWorkspace(1, 2048, 16, 64, 144, 4, DataType::kFLOAT));
    DynamicPluginTensorDesc rank2[5] = {dyn[0], dyn[1], dynamicDesc({1, 4096, 1}, DataType::kINT32), dyn[3], dyn[4]};
    CHECK(b->configurePlugin(rank2, 4, rank2 + 4, 1) != 0); // order of rank 3
    DynamicPluginTensorDesc small[5] = {dynamicDesc({1, 100, 16}, DataType::kFLOAT),
        dynamicDesc({1, 100, 64}, DataType::kFLOAT), dynamicDesc({1, 400}, DataType::kINT32),
        dynamicDesc({1, 400}, DataType::kINT32), dynamicDesc({1, 100, 64}, DataType::kFLOAT)};
    CHECK(b->configurePlugin(small, 4, small + 4, 1) != 0); // L < chunk_size
    // Exact extents at run time: onShapeChange refuses shapes that disagree.
    std::unique_ptr<IPluginV3> r(runtime(p.get())->attachToContext(nullptr));
    if (r)
    {
        PluginTensorDesc actual[5] = {dyn[0].desc, dyn[1].desc, dyn[2].desc, dyn[3].desc, dyn[4].desc};
        CHECK(runtime(r.get())->onShapeChange(actual, 4, actual + 4, 1) == 0);
        CHECK(runtime(r.get())->onShapeChange(actual, 4, actual + 4, 1) == 0); // the same shapes again
        actual[2].dims.d[1] = 4000;
        CHECK(runtime(r.get())->onShapeChange(actual, 4, actual + 4, 1) != 0);
    }
    roundTrip(c, p.get());
    Fields z;
    z.i("chunk_size", 144).i("n_hashes", 4).x("eps", -1.F);
    CHECK(c->createPlugin("bad", z.get(), TensorRTPhase::kBUILD) == nullptr);
    Fields w;
    w.i("chunk_size", 144).x("n_hashes", 4.F).x("eps", 5e-5F); // FLOAT where INT is due
    CHECK(c->createPlugin("bad", w.get(), TensorRTPhase::kBUILD) == nullptr);
    std::printf("OK BucketAttention\n");
}

void crossScaleFold(IPluginCreatorV3One* c, ConstantExprBuilder& eb)
{
    Fields f;
    f.i("stride", 2).i("padding", 2);
    std::unique_ptr<IPluginV3> p(c->createPlugin("csf", f.get(), TensorRTPhase::kBUILD));
    CHECK(p != nullptr);
    if (!p)
    {
        return;
    }
    auto* b = build(p.get());
    DimsExprs i[2] = {eb.exprs({2, 576, 24, 20}), eb.exprs({2, 576, 64, 6, 6})};
    DimsExprs o[1];
    CHECK(b->getOutputShapes(i, 2, nullptr, 0, o, 1, eb) == 0);
    // (H-1)*stride - 2*padding + k = 23*2 - 4 + 6 = 48, (20-1)*2 - 4 + 6 = 40
    Shape const shape = values(o[0]);
    CHECK(shape == Shape({2, 64, 48, 40}));
    std::printf("OK CrossScaleFold shape %lld %lld %lld %lld\n", static_cast<long long>(shape.at(0)),
        static_cast<long long>(shape.at(1)), static_cast<long long>(shape.at(2)), static_cast<long long>(shape.at(3)));
    DataType in[2] = {DataType::kHALF, DataType::kHALF};
    DataType out[1];
    CHECK(b->getOutputDataTypes(out, 1, in, 2) == 0 && out[0] == DataType::kHALF);
    DynamicPluginTensorDesc io[3] = {dynamicDesc({2, 576, 24, 20}, DataType::kHALF),
        dynamicDesc({2, 576, 64, 6, 6}, DataType::kHALF), dynamicDesc({2, 64, 48, 40}, DataType::kHALF)};
    for (int32_t pos = 0; pos < 3; ++pos)
    {
        CHECK(b->supportsFormatCombination(pos, io, 2, 1));
    }
    io[0].desc.type = DataType::kBF16;
    CHECK(!b->supportsFormatCombination(0, io, 2, 1));
    io[0].desc.type = DataType::kHALF;
    CHECK(b->configurePlugin(io, 2, io + 2, 1) == 0);
    size_t ws = b->getWorkspaceSize(io, 2, io + 2, 1);
    CHECK(ws == (4ULL * 2 * 64 * 6 * 6 * 24 * 20 + 255) / 256 * 256);
    std::printf("OK CrossScaleFold workspace %zu\n", ws);
    DynamicPluginTensorDesc wrong[3] = {io[0], dynamicDesc({2, 575, 64, 6, 6}, DataType::kHALF), io[2]};
    CHECK(b->configurePlugin(wrong, 2, wrong + 2, 1) != 0); // a fixed profile: K disagrees
    roundTrip(c, p.get());
    Fields z;
    z.i("stride", 0).i("padding", 0);
    CHECK(c->createPlugin("bad", z.get(), TensorRTPhase::kBUILD) == nullptr);
    std::printf("OK CrossScaleFold\n");
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s LIBRARY (libsrdeploy_trt_plugins.so)\n", argv[0]);
        return 2;
    }
    try
    {
        PluginLibrary lib(argv[1]);
        std::string const libraryPath(argv[1]);
        std::string const folder = libraryPath.substr(0, libraryPath.find_last_of('/') + 1);
        void* kernels = dlopen((folder + SRD_KERNELS_LIB_FILE).c_str(), RTLD_NOW | RTLD_LOCAL);
        if (kernels != nullptr)
        {
            gAttentionWorkspace
                = reinterpret_cast<AttentionWorkspaceQuery>(dlsym(kernels, "srd_bucket_attention_workspace_size"));
        }
        CHECK(gAttentionWorkspace != nullptr);
        CHECK(lib.all().size() == 3);
        for (IPluginCreatorInterface* any : lib.all())
        {
            CHECK(std::strcmp(any->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
            auto* c = static_cast<IPluginCreatorV3One*>(any);
            CHECK(std::strcmp(c->getPluginVersion(), "1") == 0);
            CHECK(std::strcmp(c->getPluginNamespace(), "srdeploy") == 0);
            PluginFieldCollection const* names = c->getFieldNames();
            std::printf("OK creator %s v%s ns=%s fields:", c->getPluginName(), c->getPluginVersion(),
                c->getPluginNamespace());
            for (int32_t i = 0; i < names->nbFields; ++i)
            {
                std::printf(" %s(%d)", names->fields[i].name, static_cast<int>(names->fields[i].type));
            }
            std::printf("\n");
        }
        ConstantExprBuilder eb;
        for (char const* op : {"BucketSort", "BucketAttention", "CrossScaleFold"})
        {
            IPluginCreatorV3One* c = lib.creator(op);
            CHECK(c != nullptr);
            if (c == nullptr)
            {
                continue;
            }
            std::string const name(op);
            if (name == "BucketSort")
            {
                bucketSort(c, eb);
            }
            else if (name == "BucketAttention")
            {
                bucketAttention(c, eb);
            }
            else
            {
                crossScaleFold(c, eb);
            }
        }
    }
    catch (std::exception const& e)
    {
        std::printf("FAIL %s\n", e.what());
        return 1;
    }
    std::printf("%s %d failures\n", gFailures ? "FAILED" : "PASSED", gFailures);
    return gFailures ? 1 : 0;
}
