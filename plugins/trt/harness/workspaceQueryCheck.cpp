/*
 * workspaceQueryCheck.cpp: the BucketSort plugin compiled against a counting stand-in for the kernel
 * library's C ABI (defined below), to show on a CPU what TensorRT cannot show without a GPU (the
 * real size query asks CUB, which needs one): onShapeChange queries the workspace once per new
 * shape, not once per call; configurePlugin queries nothing; a failed query is not remembered.
 * CMake builds it with srdPluginCommon.cpp and bucketSort/bucketSortPlugin.cpp; tests/test_trt_plugins_build.py runs it.
 * Prints "PASSED" and exits 0, or prints what failed and exits 1.
 */
#include "../../bucketSort/bucketSortPlugin.h"

#include <cstdio>

namespace
{
int gQueries = 0;
bool gFailQuery = false;
} // namespace

extern "C"
{
    int srd_bucket_sort_workspace_size(int64_t, int64_t length, int64_t, size_t* bytes)
    {
        ++gQueries;
        if (gFailQuery)
            return SRD_ERR_CUDA;
        *bytes = static_cast<size_t>(length) * 8;
        return SRD_SUCCESS;
    }
    int srd_bucket_sort(int32_t const*, int32_t*, int32_t*, int64_t, int64_t, int64_t, void*, size_t, void*)
    {
        return SRD_SUCCESS;
    }
    char const* srd_status_string(int)
    {
        return "SRD_ERR_CUDA";
    }
    char const* srd_last_error_message(void)
    {
        return "no GPU (stand-in)";
    }
}

namespace
{
using namespace srdeploy::trt;

int gFailures = 0;

void expect(bool ok, char const* what)
{
    if (!ok)
    {
        std::printf("FAIL %s (queries so far: %d)\n", what, gQueries);
        ++gFailures;
    }
}

PluginTensorDesc codes(int64_t batch, int64_t length)
{
    PluginTensorDesc d{};
    d.type = DataType::kINT32;
    d.format = TensorFormat::kLINEAR;
    d.dims.nbDims = 2;
    d.dims.d[0] = batch;
    d.dims.d[1] = length;
    return d;
}
} // namespace

int main()
{
    int32_t buckets = 8;
    PluginField field("num_buckets", &buckets, PluginFieldType::kINT32, 1);
    PluginFieldCollection fc{1, &field};
    BucketSortPlugin plugin;
    plugin.readAttributes(FieldReader(&fc));
    nvinfer1::IPluginV3OneRuntime& rt = plugin;
    nvinfer1::IPluginV3OneBuild& build = plugin;

    PluginTensorDesc in[1] = {codes(2, 300)};
    PluginTensorDesc out[2] = {codes(2, 300), codes(2, 300)};
    DynamicPluginTensorDesc profile[3]{};
    for (int i = 0; i < 3; ++i)
    {
        profile[i].desc = in[0];
        profile[i].min = profile[i].opt = in[0].dims;
        profile[i].max = codes(2, 600).dims;
    }
    expect(build.configurePlugin(profile, 1, profile + 1, 2) == 0 && gQueries == 0, "configurePlugin queries nothing");
    expect(build.getWorkspaceSize(profile, 1, profile + 1, 2) == 600 * 8 && gQueries == 1,
        "getWorkspaceSize queries the profile's largest shape");

    for (int call = 0; call < 5; ++call)
        expect(rt.onShapeChange(in, 1, out, 2) == 0, "onShapeChange");
    expect(gQueries == 2, "five onShapeChange calls with one shape: one query");
    in[0] = out[0] = out[1] = codes(2, 200);
    expect(rt.onShapeChange(in, 1, out, 2) == 0 && gQueries == 3, "a new shape: a new query");
    expect(rt.onShapeChange(in, 1, out, 2) == 0 && gQueries == 3, "the same again: no query");
    in[0].type = DataType::kFLOAT;
    expect(rt.onShapeChange(in, 1, out, 2) == 0 && gQueries == 4, "another type: a new query");
    in[0].type = DataType::kINT32;

    gFailQuery = true;
    in[0] = codes(3, 200);
    expect(rt.onShapeChange(in, 1, out, 2) != 0 && gQueries == 5, "a failed query fails onShapeChange");
    expect(rt.onShapeChange(in, 1, out, 2) != 0 && gQueries == 6, "a failed query is not remembered");
    gFailQuery = false;
    expect(rt.onShapeChange(in, 1, out, 2) == 0 && gQueries == 7, "then it succeeds");

    // A clone (attachToContext: one per execution context) starts from its original's memo.
    std::unique_ptr<nvinfer1::IPluginV3> clone(rt.attachToContext(nullptr));
    auto* cloneRt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        clone->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    expect(cloneRt->onShapeChange(in, 1, out, 2) == 0 && gQueries == 7, "the clone keeps the memo");
    std::printf("%s (%d workspace queries)\n", gFailures ? "FAILED" : "PASSED", gQueries);
    return gFailures ? 1 : 0;
}
